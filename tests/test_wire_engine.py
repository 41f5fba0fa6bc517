"""The masking engine on whole bodies: requests, non-streamed responses, detector faults."""

from __future__ import annotations

import copy
import json

import pytest

from phigate.wire.types import DetectionError, UnsupportedContent
from phigate.wire.vault import Vault
from tests.test_wire_fields import CHAT, CHAT_BODY, RESPONSES, RESPONSES_BODY
from tests.test_wire_support import Hit, RegexDetector, leaked, make_masker


def test_chat_request_is_masked_everywhere():
    masker = make_masker()
    body = copy.deepcopy(CHAT_BODY)
    masked, actions = masker.mask_request(CHAT, body)
    assert body == CHAT_BODY
    assert leaked(json.dumps(masked)) == []
    messages = masked["messages"]
    assert messages[1]["content"] == "Look up <PERSON_1>, MRN <MEDICAL_RECORD_NUMBER_1>."
    assert json.loads(messages[2]["tool_calls"][0]["function"]["arguments"]) == {
        "patientName": "<PERSON_1>", "mrn": "<MEDICAL_RECORD_NUMBER_1>"}
    assert json.loads(messages[3]["content"]) == {"patient": {
        "birthDate": "<DATE_1>", "ssn": "<US_SSN_1>", "age": 54}}
    assert messages[0] is body["messages"][0]  # no PHI, not copied
    assert masked["metadata"] == {"ticket": "<PERSON_2>"}
    assert masked["messages"][4]["name"] == "dr_jones"
    paths = {(a.path, a.entity) for a in actions}
    assert ("messages[3].content{json}.patient.birthDate", "DATE") in paths
    assert all("John" not in repr(a) for a in actions)


def test_responses_request_is_masked_everywhere():
    masked, _ = make_masker().mask_request(RESPONSES, copy.deepcopy(RESPONSES_BODY))
    assert leaked(json.dumps(masked)) == []
    assert masked["input"][1]["summary"][0]["text"] == "Need the chart of <PERSON_1>."
    assert json.loads(masked["input"][3]["output"]) == {
        "mrn": "<MEDICAL_RECORD_NUMBER_1>", "notes": ["seen <DATE_1>"]}


def test_response_reidentifies_scope_tokens_but_masks_new_phi():
    masker = make_masker()
    masker.mask_request(CHAT, copy.deepcopy(CHAT_BODY))  # mints <PERSON_1> = John Smith
    reply = {"choices": [{"index": 0, "logprobs": None, "message": {
        "role": "assistant",
        "content": "<PERSON_1> (<US_SSN_1>) was referred by Maria Garcia. <PERSON_9> unknown.",
        "tool_calls": [{"id": "t", "type": "function", "function": {
            "name": "send", "arguments": '{"to": "<EMAIL_ADDRESS_1>"}'}}]}}]}
    restored, actions = masker.mask_response(CHAT, reply)
    message = restored["choices"][0]["message"]
    assert message["content"] == \
        "John Smith (123-45-6789) was referred by <PERSON_3>. <PERSON_9> unknown."
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {
        "to": "jane.doe@example.com"}
    assert {(a.entity, a.operator) for a in actions} >= {("PERSON", "pseudonym"),
                                                         ("TOKEN", "reidentify")}
    # Masking only: tokens stay tokens.
    kept, _ = masker.mask_response(CHAT, reply, reidentify=False)
    assert kept["choices"][0]["message"]["content"].startswith("<PERSON_1> (<US_SSN_1>)")


def test_encrypted_tokens_reidentify_only_in_their_scope():
    vault = Vault()
    alice = make_masker(default="encrypt", vault=vault)
    masked, _ = alice.mask_request(RESPONSES, {"model": "m", "input": "Call John Smith"})
    token = masked["input"].removeprefix("Call ")
    reply = {"output": [{"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": f"Calling {token}", "annotations": []}]}]}
    assert alice.mask_response(RESPONSES, reply)[0]["output"][0]["content"][0]["text"] == \
        "Calling John Smith"
    bob = make_masker(default="encrypt", vault=vault, subject="bob")
    assert bob.mask_response(RESPONSES, reply)[0]["output"][0]["content"][0]["text"] == \
        f"Calling {token}"


def test_a_lookalike_token_does_not_shield_phi():
    masker = make_masker()
    detect = RegexDetector()
    body = {"model": "m", "input": "<PERSON_123456789> and <NAME: John Smith>"}

    def sneaky(fields):
        found = detect(fields)
        return [hits + [Hit(1, 17, "US_SSN", 1.0)] for hits in found]

    masker = make_masker(detect=sneaky)
    masked, _ = masker.mask_request(RESPONSES, body)
    # <PERSON_123456789> was never minted in this scope: the finding inside it applies.
    assert "123456789" not in masked["input"] and "John Smith" not in masked["input"]


def test_a_masked_participant_name_stays_a_valid_name():
    body = {"model": "m", "messages": [{"role": "user", "name": "Jane Doe", "content": "hi"}]}
    masked, actions = make_masker().mask_request(CHAT, body)
    assert masked["messages"][0]["name"] == "PERSON_1"
    assert [(a.path, a.entity) for a in actions] == [("messages[0].name", "PERSON")]


def test_phi_in_a_json_key_is_refused():
    body = {"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "t", "content": '{"John Smith": {"mrn": "1"}}'}]}
    with pytest.raises(UnsupportedContent) as caught:
        make_masker().mask_request(CHAT, body)
    assert caught.value.kind == "identifier_in_key" and "John" not in str(caught.value)


@pytest.mark.parametrize("broken, error", [
    (lambda fields: (_ for _ in ()).throw(RuntimeError("model not loaded")), RuntimeError),
    (lambda fields: [], DetectionError),
    (lambda fields: None, DetectionError),
    (lambda fields: [[Hit(0, 10_000, "PERSON", 1.0)] for _ in fields], DetectionError),
    (lambda fields: [[Hit(0, 1, "person", 1.0)] for _ in fields], DetectionError),
])
def test_a_detector_fault_raises_and_nothing_passes(broken, error):
    masker = make_masker(detect=broken)
    with pytest.raises(error):
        masker.mask_request(CHAT, copy.deepcopy(CHAT_BODY))
    with pytest.raises(error):
        masker.mask_response(CHAT, {"choices": [{"index": 0, "message": {
            "role": "assistant", "content": "John Smith"}}]})
