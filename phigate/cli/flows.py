"""`phigate flows export` and `phigate replay`: audit records as mitmproxy flows, and re-running
recorded requests through the current pipeline.

    phigate flows export --out review.mitm --subject dr.lee --since 24h   # open in mitmweb
    phigate replay 4f2c9e... 7a01b3... --json                             # still same outcome?
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from mitmproxy import connection, exceptions, hooks, http, io
from mitmproxy.flow import Error
from mitmproxy.options import Options
from mitmproxy.tools.dump import DumpMaster

from phigate.audit import open_store
from phigate.audit.flows import (
    OPENAI_URL,
    Exchange,
    ReplayResult,
    compare,
    content_encoding,
    decisions,
    endpoint_parts,
    exchange,
    selected_entries,
)
from phigate.audit.store import AuditError, AuditStore
from phigate.cli.audit import _open_store, _parse_time, location_options
from phigate.home import Home
from phigate.addons.identity import REPLAY_OF, authorize_replay
from phigate.addons.recorder import RECORDED
from phigate.identity import Identity

OPENAI_HOST = "api.openai.com"
REDACTED = "[redacted]"


@click.group(name="flows")
def flows_group() -> None:
    """Audit records as mitmproxy flow files, for mitmweb, mitmdump or a colleague."""


@flows_group.command(name="export")
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Flow file to write (open it with `mitmweb -r FILE`)")
@click.option("--as", "body", type=click.Choice(["forwarded", "received"]), default="forwarded",
              show_default=True,
              help="Request bodies as forwarded to OpenAI (masked; none if never forwarded) "
                   "or as the caller sent them (may hold PHI)")
@click.option("--subject", help="Caller subject (the JWT sub)")
@click.option("--group", help="Caller group")
@click.option("--since", help="From this time: ISO 8601 (UTC if no zone) or an age like 24h, 7d")
@click.option("--until", help="Before this time (same forms as --since)")
@click.option("--endpoint", help='Normalised endpoint, e.g. "POST /v1/chat/completions"')
@click.option("--decision",
              help="Final decision: allow, refuse, hold, approve, deny, timeout, error")
@click.option("--status", type=int, help="HTTP status returned to the caller")
@click.option("--id", "ids", multiple=True, help="Only this record id (repeatable)")
@location_options
def export_command(home: Home, db_path: str | None, out: str, body: str, since: str | None,
                   until: str | None, ids: tuple[str, ...], **filters: Any) -> None:
    """Write matching audit records as mitmproxy flows, bodies decrypted.

    Each flow is the request (https://api.openai.com + path, minimal headers, authorization
    always `[redacted]`) and the answer the caller got; `metadata["phigate"]` holds the
    PHI-free audit record. CONNECT records have no request to show and are skipped.

    \b
    Example:
        phigate flows export --out denied.mitm --decision refuse --since 7d
    """
    store = _open_store(home, db_path)
    written = skipped = 0
    # Created private: even masked bodies are the organisation's data.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            writer = io.FlowWriter(file)
            for entry in selected_entries(store, ids, since=_parse_time(since),
                                          until=_parse_time(until), **filters):
                found = exchange(entry, store.read_bodies(entry["seq"]), body)
                if found is None:
                    skipped += 1
                    continue
                writer.add(to_flow(found, body))
                written += 1
    except AuditError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"{written} flows written to {out}" + (f", {skipped} skipped" if skipped else ""),
               err=True)


def _peer(client: Any) -> tuple[str, int]:
    host, _, port = str(client or "").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else ("0.0.0.0", 0)


def to_flow(found: Exchange, body: str) -> http.HTTPFlow:
    """A mitmproxy flow of a recorded exchange; no credential of any kind is in it."""
    flow = http.HTTPFlow(
        connection.Client(peername=_peer(found.record.get("client")),
                          sockname=("127.0.0.1", 0), timestamp_start=found.started),
        connection.Server(address=(OPENAI_HOST, 443)),
    )
    flow.request = http.Request.make(found.method, OPENAI_URL + found.path, b"", {
        "host": OPENAI_HOST, "authorization": REDACTED})
    _set_body(flow.request, found.request_body)
    flow.request.timestamp_start = flow.request.timestamp_end = found.started
    request_id = {"x-phigate-request-id": found.record_id}
    if found.status is not None:
        flow.response = http.Response.make(found.status, b"", request_id)
        _set_body(flow.response, found.response_body)
        flow.response.timestamp_start = flow.response.timestamp_end = found.finished
    else:
        error = found.record.get("error") or {}
        flow.error = Error(f"no response: {error.get('stage')}:{error.get('kind')}",
                           found.finished)
    flow.metadata["phigate"] = found.record
    flow.metadata["phigate.request_body"] = body
    return flow


def _set_body(message: http.Message, body: bytes) -> None:
    if body:
        text = body.lstrip()[:6]
        message.headers["content-type"] = ("text/event-stream" if text.startswith(b"event:")
                                           or text.startswith(b"data:") else "application/json")
        if encoding := content_encoding(body):
            message.headers["content-encoding"] = encoding
    message.raw_content = body
    message.headers["content-length"] = str(len(body))


# --- replay -----------------------------------------------------------------------------------


class NoUpstream:
    """The replay engine's safety net: nothing it runs may open a connection to a server."""

    def server_connect(self, data) -> None:
        data.server.error = "phigate replay never connects upstream"


def replay_flow(entry: dict, bodies: dict[str, bytes]) -> http.HTTPFlow:
    """The recorded original request, as the caller sent it, ready for `replay.client`."""
    record = entry["record"]
    method, path = endpoint_parts(record)
    sent = bodies.get("client_request", b"")
    flow = http.HTTPFlow(
        connection.Client(peername=("127.0.0.1", 0), sockname=("127.0.0.1", 0),
                          timestamp_start=time.time()),
        connection.Server(address=(OPENAI_HOST, 443)),
    )
    flow.request = http.Request.make(method, OPENAI_URL + path, b"", {"host": OPENAI_HOST})
    _set_body(flow.request, sent)
    caller = record.get("identity") or {}
    if caller.get("iss") and caller.get("sub"):
        authorize_replay(flow, Identity(
            iss=caller["iss"], sub=caller["sub"], groups=tuple(caller.get("groups") or ()),
            jti=caller.get("jti"), exp=int(caller.get("exp") or 0), iat=caller.get("iat"),
            source="replay"), entry["id"])
    else:  # the original had no verified caller: the replay has none either
        flow.metadata[REPLAY_OF] = entry["id"]
    return flow


def not_replayable(entry: dict, bodies: dict[str, bytes]) -> str | None:
    record = entry["record"]
    if endpoint_parts(record) is None:
        return "not replayable: no HTTP request was recorded"
    if (record.get("request") or {}).get("body_bytes") and "client_request" not in bodies:
        return "not replayable: the request body was not kept"
    if record.get("approval"):  # a replay would open a real approval request for humans
        return "not replayable: it was held for approval, and approvals are not replayed"
    return None


async def run_replays(home: Home, db_path: Path, policies: str | None,
                      originals: list[tuple[dict, dict[str, bytes]]],
                      timeout: float) -> list[str | None]:
    """Run each original request through a fresh, listener-less copy of the pipeline (same
    home, the given policies); the record id of each replay, None if it was not recorded."""
    from phigate.addons.gateway import pipeline
    from phigate.addons.settings import REQUIRED_OPTIONS, SHIPPED_POLICIES
    from phigate.ca import ensure_ca

    ensure_ca(home)  # mitmproxy would otherwise make a CA of its own in the home folder
    opts = Options(confdir=str(home.ca_dir))
    master = DumpMaster(opts, with_termlog=False, with_dumper=False)
    addons = [*pipeline(), NoUpstream()]
    master.addons.add(*addons)
    opts.update(**{k: v for k, v in dict(
        REQUIRED_OPTIONS, server=False, phigate_home=str(home.root), audit_db=str(db_path),
        policies=policies or str(SHIPPED_POLICIES), admin_listen="", policy_reload_interval=0,
        log_json=False,  # an audit tool, not a running gateway: no operational log lines
    ).items() if k in opts})
    for addon in addons:  # as mitmproxy's script loader does: every option seen once
        master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(opts.keys())))
    running = asyncio.create_task(master.run())
    reader = open_store(home, db_path)
    try:
        flows = [replay_flow(entry, bodies) for entry, bodies in originals]
        master.commands.call("replay.client", flows)
        return [await _recorded(reader, flow, timeout) for flow in flows]
    finally:
        reader.close()
        master.shutdown()
        await running


async def _recorded(reader: AuditStore, flow: http.HTTPFlow, timeout: float) -> str | None:
    """Wait until the recorder committed the replay's record; its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = flow.metadata.get("phigate") or {}
        if record.get("request_id") and flow.metadata.get(RECORDED):
            seq = reader.lookup(record["request_id"])
            if seq is not None:
                return record["request_id"]
        await asyncio.sleep(0.02)
    return None


def replay(home: Home, db_path: Path, ids: tuple[str, ...], policies: str | None,
           timeout: float) -> list[ReplayResult]:
    """Replay the records `ids` and compare each replay's record with the original's."""
    from phigate.addons.embedded import RunningGateway

    if RunningGateway._live is not None:  # mitmproxy's ctx is process-global
        raise click.ClickException("a gateway runs in this process; replay needs its own")
    store = open_store(home, db_path)
    try:
        loaded = []
        for record_id in ids:
            seq = store.lookup(record_id)
            if seq is None:
                raise click.ClickException(f"no record {record_id}")
            loaded.append((store.get(seq), store.read_bodies(seq)))
        results = {entry["id"]: ReplayResult(entry["id"], None, decisions(entry["record"]), [],
                                             [reason])
                   for entry, bodies in loaded if (reason := not_replayable(entry, bodies))}
        runnable = [(e, b) for e, b in loaded if e["id"] not in results]
        try:
            replay_ids = asyncio.run(run_replays(home, db_path, policies, runnable, timeout))
        except exceptions.OptionsError as exc:  # e.g. an invalid policy folder
            raise click.ClickException(str(exc)) from None
        for (entry, bodies), replay_id in zip(runnable, replay_ids):
            result = ReplayResult(entry["id"], replay_id, decisions(entry["record"]), [])
            if replay_id is None:
                result.differences.append(f"the replay did not complete in {timeout:g} s")
            else:
                seq = store.lookup(replay_id)
                replayed = store.get(seq)["record"]
                result.replayed_decisions = decisions(replayed)
                result.differences = compare(entry["record"], bodies, replayed,
                                             store.read_bodies(seq))
            results[entry["id"]] = result
    finally:
        store.close()
    return [results[record_id] for record_id in ids]


@click.command(name="replay")
@click.argument("ids", nargs=-1, required=True)
@click.option("--policies", type=click.Path(exists=True, file_okay=False),
              help="Policy folder to replay under [default: the shipped policies/]")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for each replay")
@click.option("--json", "as_json", is_flag=True, help="Output a JSON array")
@location_options
def replay_command(home: Home, db_path: str | None, ids: tuple[str, ...], policies: str | None,
                   timeout: float, as_json: bool) -> None:
    """Re-run recorded requests through the current pipeline and report whether the outcome
    still matches: the same decisions (stage, allow/refuse, rule) and the same masked body
    for OpenAI.

    Each replay runs in-process as the recorded caller (no token needed), never reaches
    OpenAI, and is written to the audit log marked `replay: true, replay_of: ID`. Requests
    that were held for approval are not replayed. Exits 1 on any mismatch.

    \b
    Example:
        phigate replay 4f2c9e... --policies ./policies-next --json
    """
    db = Path(db_path) if db_path else home.audit_db
    if not db.exists():
        raise click.ClickException(f"no audit database at {db}")
    results = replay(Home.open(home.root), db, ids, policies, timeout)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            click.echo(f"{'MATCH' if r.match else 'MISMATCH':8} {r.record_id}"
                       + (f" (replay {r.replay_id})" if r.replay_id else ""))
            for difference in r.differences:
                click.echo(f"         {difference}")
    if not all(r.match for r in results):
        sys.exit(1)
