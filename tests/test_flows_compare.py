"""The pure parts of export and replay: exchanges from log entries, and replay comparison."""

from __future__ import annotations

import gzip
import json

from phigate.audit.flows import compare, differing_paths, exchange
from phigate.cli.flows import not_replayable

ALLOW = [{"stage": "identity", "decision": "allow", "rule": "clinicians", "detail": ""},
         {"stage": "masking", "decision": "allow", "rule": "", "detail": "2 masked"}]


def entry(record: dict) -> dict:
    return {"id": "r1", "seq": 0, "logged": 100.0, "record": record}


def body(doc: dict) -> bytes:
    return json.dumps(doc).encode()


def test_same_json_in_another_spelling_matches_and_details_do_not_count():
    sent = {"input": [{"content": "<PERSON> has a cough"}], "model": "m"}
    replayed = [dict(d, detail="") for d in ALLOW]
    assert compare({"decisions": ALLOW}, {"upstream_request": gzip.compress(body(sent))},
                   {"decisions": replayed},
                   {"upstream_request": json.dumps(sent, indent=1).encode()}) == []


def test_differences_name_paths_and_decisions_never_values():
    before = {"input": [{"content": "<PERSON> has a cough"}, {"output": "<DATE_TIME>"}]}
    after = {"input": [{"content": "[REDACTED] has a cough"}, {"output": "<DATE_TIME>"}]}
    refused = ALLOW[:1] + [{"stage": "masking", "decision": "refuse", "rule": "forbidden_entity"}]
    differences = compare({"decisions": ALLOW}, {"upstream_request": body(before)},
                          {"decisions": refused}, {"upstream_request": body(after)})
    assert differences == ["decisions", "upstream_request: .input[0].content"]
    assert not any("REDACTED" in d or "PERSON" in d for d in differences)


def test_forwarded_on_one_side_only_is_a_difference():
    assert compare({"decisions": ALLOW}, {"upstream_request": b"{}"},
                   {"decisions": ALLOW}, {}) == ["upstream_request: not forwarded by the replay"]
    assert differing_paths([1, 2], [1]) == ["$"]


def test_exchange_picks_the_body_the_caller_asked_for():
    record = {"endpoint": "POST /v1/responses", "started": 5.0, "status": 200}
    bodies = {"client_request": b"original", "upstream_request": b"masked",
              "client_response": b"answer"}
    forwarded = exchange(entry(record), bodies)
    assert (forwarded.method, forwarded.path, forwarded.request_body) == (
        "POST", "/v1/responses", b"masked")
    assert exchange(entry(record), bodies, "received").request_body == b"original"
    refused = exchange(entry(dict(record, status=403)), {"client_request": b"original"})
    assert refused.request_body == b""  # never forwarded: nothing to share
    assert exchange(entry({"endpoint": "CONNECT example.com:443"}), {}) is None


def test_what_cannot_be_replayed_says_why():
    assert not_replayable(entry({"endpoint": "CONNECT example.com:443"}), {}).endswith(
        "no HTTP request was recorded")
    posted = {"endpoint": "POST /v1/responses", "request": {"body_bytes": 10}}
    assert "body was not kept" in not_replayable(entry(posted), {})
    held = dict(posted, approval={"state": "approved"})
    assert "approval" in not_replayable(entry(held), {"client_request": b"{}"})
    assert not_replayable(entry(posted), {"client_request": b"{}"}) is None
