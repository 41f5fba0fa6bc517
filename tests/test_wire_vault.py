"""The pseudonym vault: scoping, expiry, bounds, and how a conversation is identified."""

from __future__ import annotations

import pytest

from phigate.wire.vault import Vault, VaultFull
from tests.test_wire_support import make_masker

ISS = "https://idp.example"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pseudonyms_resolve_only_in_the_scope_that_minted_them():
    vault = Vault()
    alice = vault.scope(ISS, "alice", "c1")
    token = vault.pseudonym(alice, "PERSON", "John Smith")
    assert token == "<PERSON_1>"
    assert vault.reidentify(f"Dear {token}.", alice) == "Dear John Smith."
    for other in (vault.scope(ISS, "alice", "c2"), vault.scope(ISS, "bob", "c1"),
                  vault.scope("https://other-idp", "alice", "c1")):
        assert vault.reidentify(f"Dear {token}.", other) == "Dear <PERSON_1>."
        assert vault.pseudonym(other, "PERSON", "Jane Doe") == "<PERSON_1>"  # own numbering
    unknown = "<PERSON_2> <US_SSN_1> <PERSON>"
    assert vault.reidentify(unknown, alice) == unknown


def test_values_never_appear_in_reprs():
    vault = Vault()
    scope = vault.scope(ISS, "alice", "Patient John Smith asks")
    vault.pseudonym(scope, "PERSON", "John Smith")
    shown = repr(vault) + repr(scope) + repr(vault.bind(scope)) + str(scope)
    assert "John" not in shown and "alice" not in shown


def test_scopes_expire_after_the_ttl_since_last_use():
    clock = Clock()
    vault = Vault(ttl_seconds=60, clock=clock)
    scope = vault.scope(ISS, "alice", "c1")
    vault.pseudonym(scope, "PERSON", "John Smith")
    clock.now += 50
    assert vault.resolve(scope, "PERSON", 1) == "John Smith"  # use refreshes
    clock.now += 50
    assert vault.resolve(scope, "PERSON", 1) == "John Smith"
    clock.now += 61
    assert vault.resolve(scope, "PERSON", 1) is None
    assert vault.reidentify("<PERSON_1>", scope) == "<PERSON_1>"


def test_least_recently_used_scopes_are_evicted_beyond_the_bound():
    vault = Vault(max_scopes=2)
    scopes = [vault.scope(ISS, "alice", f"c{n}") for n in range(3)]
    vault.pseudonym(scopes[0], "PERSON", "A")
    vault.pseudonym(scopes[1], "PERSON", "B")
    vault.resolve(scopes[0], "PERSON", 1)  # c0 is now more recent than c1
    vault.pseudonym(scopes[2], "PERSON", "C")
    assert [vault.resolve(s, "PERSON", 1) for s in scopes] == ["A", None, "C"]


def test_a_full_scope_refuses_instead_of_renumbering():
    vault = Vault(max_values=2)
    scope = vault.scope(ISS, "alice", "c1")
    vault.pseudonym(scope, "PERSON", "A")
    vault.pseudonym(scope, "PERSON", "B")
    assert vault.pseudonym(scope, "PERSON", "a") == "<PERSON_1>"  # known values still map
    with pytest.raises(VaultFull):
        vault.pseudonym(scope, "PERSON", "C")


def test_scope_rules_header_conversation_previous_response():
    vault = Vault()
    body = {"model": "m", "input": "Hello"}
    base = vault.scope_for("POST /v1/responses", body, issuer=ISS, subject="alice")
    header = vault.scope_for("POST /v1/responses", body, issuer=ISS, subject="alice",
                             header="conv-42")
    assert header != base
    assert header == vault.scope_for("POST /v1/chat/completions", {"messages": []}, issuer=ISS,
                                     subject="alice", header="conv-42")
    conv = {"model": "m", "input": "Hi", "conversation": {"id": "conv_1"}}
    assert vault.scope_for("POST /v1/responses", conv, issuer=ISS, subject="alice") == \
        vault.scope_for("POST /v1/responses", {**conv, "conversation": "conv_1", "input": "x"},
                        issuer=ISS, subject="alice")
    # previous_response_id continues the scope of the response the gateway saw.
    vault.remember_response(base, "resp_1")
    follow = {"model": "m", "input": "And then?", "previous_response_id": "resp_1"}
    assert vault.scope_for("POST /v1/responses", follow, issuer=ISS, subject="alice") == base
    assert vault.scope_for("POST /v1/responses", follow, issuer=ISS, subject="bob") != base


def test_agents_sdk_turns_share_a_scope():
    vault = Vault()
    turn1 = {"model": "m", "input": "Look up John Smith"}
    turn2 = {"model": "m", "input": [
        {"content": "Look up John Smith", "role": "user"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}]}
    scope = vault.scope_for("POST /v1/responses", turn1, issuer=ISS, subject="alice")
    assert scope == vault.scope_for("POST /v1/responses", turn2, issuer=ISS, subject="alice")
    chat1 = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]}
    chat2 = {"messages": [*chat1["messages"], {"role": "assistant", "content": "A"},
                          {"role": "user", "content": [{"type": "text", "text": "Q2"}]}]}
    first = vault.scope_for("POST /v1/chat/completions", chat1, issuer=ISS, subject="alice")
    assert first == vault.scope_for("POST /v1/chat/completions", chat2, issuer=ISS,
                                    subject="alice")
    assert first != vault.scope_for("POST /v1/chat/completions", chat1, issuer=ISS,
                                    subject="bob")


def test_turn_two_maps_the_same_values_to_the_same_pseudonyms():
    vault = Vault()
    turn1 = {"model": "m", "input": "Look up John Smith and Jane Doe"}
    turn2 = {"model": "m", "input": [
        {"content": "Look up John Smith and Jane Doe", "role": "user"},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Jane Doe is listed; John Smith is not."}]},
        {"content": "And Maria Garcia?", "role": "user"}]}
    masked = []
    for body in (turn1, turn2):
        scope = vault.scope_for("POST /v1/responses", body, issuer=ISS, subject="alice")
        masker = make_masker(vault=vault, scope=scope)
        masked.append(masker.mask_request("POST /v1/responses", body)[0])
    assert masked[0]["input"] == "Look up <PERSON_1> and <PERSON_2>"
    assert masked[1]["input"][0]["content"] == "Look up <PERSON_1> and <PERSON_2>"
    assert masked[1]["input"][1]["content"][0]["text"] == "<PERSON_2> is listed; <PERSON_1> is not."
    assert masked[1]["input"][2]["content"] == "And <PERSON_3>?"
