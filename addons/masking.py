"""Masking: PHI never leaves unmasked, and comes back masked or re-identified per policy.

Requests: every text field of the body (phigate.wire) goes through the detector
(phigate.detect) off the event loop; the policy's PHI rules (forbidden types, volume) are
checked on what was found, then each finding is replaced by its policy operator. Responses:
JSON bodies are masked whole; SSE streams are masked event by event with a hold-back of the
shortest tail that could still be part of an entity, so nothing is buffered whole.

Anything the wire layer cannot examine is refused, and any failure ends the flow: a request
with an error, a stream with a terminal error event (later upstream bytes are dropped).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging

from mitmproxy import ctx, exceptions, http

from phigate import context
from phigate.detect import Detector
from phigate.detect.detector import DetectorBusy
from phigate.errors import Refusal
from phigate.home import write_private
from phigate.policy import evaluate_phi
from phigate.wire import fields as wire_fields
from phigate.wire.engine import Masker
from phigate.wire.operators import Cipher, Operators, normalise
from phigate.wire.sse import StreamMasker, error_event
from phigate.wire.types import TextField, UnsupportedContent
from phigate.wire.vault import CONVERSATION_HEADER, Vault, VaultFull

from . import flowstate
from .failclosed import guard, record_of, settled
from .settings import home

log = logging.getLogger("phigate")
STAGE = "masking"
EXCERPT_CHARS = 280
STREAMABLE = ("chat", "responses")  # the stream kinds phigate.wire.sse can mask
# Up to this many characters of already-analysed text are masked on the event loop: applying
# operators and re-serialising is cheaper than the hop to a worker thread.
INLINE_CHARS = 16_000
# New text up to this size is analysed on the event loop when the detector is idle (at most a
# few ms of NER, which holds the GIL anyway): the hop to a worker thread and back costs about
# 0.4 ms per call, twice per request. Longer texts, or a busy detector, go to a worker thread.
INLINE_NLP_CHARS = 600


@functools.lru_cache(maxsize=4)
def load_detector(config: str) -> Detector:
    """One detector per configuration per process (loading the NLP model takes seconds)."""
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)  # one line per recognizer
    return Detector.from_config(config or None)


class Masking:
    def __init__(self) -> None:
        self.detector: Detector | None = None
        self.vault = Vault()
        self.keys: tuple[bytes, Cipher] | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "detect_config", str, "",
            "Detector configuration (YAML: Presidio NLP-engine and recognizer-registry "
            "formats, see phigate/detect/detect.example.yaml). Empty: the bundled HIPAA pack "
            "with en_core_web_sm.",
        )
        loader.add_option(
            "masking_timeout", int, 30,
            "Seconds the detector may take for one request before it is refused (fail closed). "
            f"Requests with at most {INLINE_NLP_CHARS} characters of new text are analysed at "
            "once on the event loop when the detector is idle (a few ms) and are not timed.",
        )

    def configure(self, updated: set[str]) -> None:
        if "detect_config" in updated:
            try:
                self.detector = load_detector(ctx.options.detect_config)
            except Exception as e:
                raise exceptions.OptionsError(f"detect_config: {type(e).__name__}: {e}") from None
        if "masking_timeout" in updated and ctx.options.masking_timeout <= 0:
            raise exceptions.OptionsError("masking_timeout must be > 0")
        if "phigate_home" in updated:
            self.keys = masking_keys(home().keys_dir / "masking.key")

    def _masker(self, direction, flow: http.HTTPFlow, state) -> Masker:
        hash_key, cipher = self.keys
        operators = Operators(direction.entities, default=direction.default,
                              hash_key=hash_key, cipher=cipher)
        return Masker(self.detector.analyze, operators, vault=self.vault.bind(state.scope))

    @guard(STAGE)
    async def request(self, flow: http.HTTPFlow) -> None:
        if settled(flow):
            return
        state = flowstate.of(flow)
        record = record_of(flow)
        if state.unsupported is not None:
            kind = state.unsupported.kind
            raise Refusal(403, "content_not_examinable",
                          f"The gateway cannot examine this content ({kind}); it was not sent.")
        endpoint = record["endpoint"]
        try:
            kind = wire_fields.endpoint_kind(endpoint)
        except UnsupportedContent:
            if state.body is not None:
                raise Refusal(403, "content_not_examinable",
                              "The gateway cannot examine requests to this endpoint.") from None
            return  # e.g. GET /v1/models: nothing to mask either way
        if state.view.stream and kind not in STREAMABLE:
            raise Refusal(400, "stream_not_supported",
                          "Streaming is not supported for this endpoint through the gateway; "
                          "send the request with stream=false.")
        identity = state.identity
        state.scope = self.vault.scope_for(
            endpoint, state.body, issuer=identity.iss, subject=identity.sub,
            header=flow.request.headers.get(CONVERSATION_HEADER))
        policy = state.policy
        state.response_masker = self._masker(policy.masking.response, flow, state)
        if state.body is None:
            return
        masker = self._masker(policy.masking.request, flow, state)
        try:
            masked, actions, summary, excerpt = await self._off_loop(
                state.fields, mask_request, masker, state.fields, state.body)
        except TimeoutError:
            raise Refusal(503, "masking_timeout",
                          "PHI detection took too long; the request was not sent.",
                          retry=True) from None
        except VaultFull:
            raise Refusal(400, "pseudonym_capacity_exceeded",
                          "This conversation holds more distinct identifiers than the gateway "
                          "keeps pseudonyms for; start a new conversation.") from None
        state.phi_summary, state.masked_excerpt = summary, excerpt
        record["masking"].extend(a.to_record("request") for a in actions)
        record["phi"] = summary
        decision = evaluate_phi(policy, summary)
        if not decision.allowed:
            context.decide(record, STAGE, "refuse", rule=decision.rule)
            raise decision.refusal()
        if actions:
            state.bodies["client_request"] = flow.request.raw_content
            flow.request.headers.pop("content-encoding", None)
            flow.request.content = json.dumps(masked, ensure_ascii=False).encode()
        context.decide(record, STAGE, "allow", detail=f"{sum(a.count for a in actions)} masked")

    @guard(STAGE)
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.of(flow)
        record = record_of(flow)
        if record.get("local_response") or state.response_masker is None:
            return
        response = flow.response
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            return
        policy = state.policy
        stream = StreamMasker(record["endpoint"], state.response_masker,
                              mask=masks_anything(policy.masking.response),
                              reidentify=policy.masking.reidentify,
                              content_encoding=response.headers.get("content-encoding"))
        state.stream_masker = stream
        response.headers.pop("content-encoding", None)
        response.headers.pop("content-length", None)
        response.stream = FailClosedStream(stream, record["endpoint"], record)

    @guard(STAGE)
    async def response(self, flow: http.HTTPFlow) -> None:
        state = flowstate.of(flow)
        record = record_of(flow)
        if record.get("local_response") or state.response_masker is None:
            return
        if state.stream_masker is not None:
            record["masking"].extend(a.to_record("response") for a in state.stream_masker.actions)
            return
        response = flow.response
        if not (200 <= response.status_code < 300) or not response.raw_content:
            return  # upstream errors are OpenAI's own messages about the masked request
        endpoint = record["endpoint"]
        try:
            body = json.loads(response.get_content(strict=True))
        except ValueError:
            raise Refusal(502, "upstream_body_unreadable",
                          "The upstream's answer could not be read, so it could not be "
                          "checked for PHI; it was withheld.") from None
        policy = state.policy
        fields = response_fields_or_refuse(endpoint, body)
        masked, actions = await self._off_loop(
            fields, mask_response, state.response_masker, endpoint, body, fields,
            masks_anything(policy.masking.response), policy.masking.reidentify)
        if isinstance(body, dict):
            if isinstance(body.get("id"), str) and body.get("object") == "response":
                self.vault.remember_response(state.scope, body["id"])
            state.usage = int_fields(body.get("usage"))  # spares the recorder a second parse
        record["masking"].extend(a.to_record("response") for a in actions)
        if actions:
            state.bodies["upstream_response"] = response.raw_content
            response.headers.pop("content-encoding", None)
            response.content = json.dumps(masked, ensure_ascii=False).encode()


    async def _off_loop(self, fields, work, *args):
        """Run `work` inline when the detector already knows every text of small fields (no
        NLP: microseconds) or can analyse short new text at once, else on a worker thread with
        the masking timeout."""
        texts = [TextField(f.text, f.key) for f in fields]
        size = sum(len(t.text) for t in texts)
        if size <= INLINE_CHARS and self.detector.is_cached(texts):
            return work(*args)
        if size <= INLINE_NLP_CHARS and self._analysed_now(texts):
            return work(*args)  # its detection is now cached
        return await asyncio.wait_for(asyncio.to_thread(work, *args),
                                      ctx.options.masking_timeout)

    def _analysed_now(self, texts: list[TextField]) -> bool:
        """Analyse `texts` here and now unless another thread is running the NLP stage."""
        try:
            self.detector.analyze(texts, wait=False)
        except DetectorBusy:
            return False
        return True


def mask_request(masker: Masker, fields, body):
    """Detect, count distinct identifiers per type, and mask (runs in a worker thread).

    Detection results are cached by the detector, so the second pass inside `mask_fields`
    costs microseconds."""
    texts = [TextField(f.text, f.key) for f in fields]
    findings = masker.detect(texts)
    distinct: dict[str, set[str]] = {}
    for field, found in zip(fields, findings):
        for f in found:
            distinct.setdefault(f.entity_type, set()).add(normalise(field.text[f.start:f.end]))
    summary = {entity: len(values) for entity, values in sorted(distinct.items())}
    replacements, actions = masker.mask_fields(fields)
    masked = wire_fields.apply(body, replacements)
    excerpt = ""
    for field in reversed(fields):
        if field.kind == "text" and field.text.strip():
            excerpt = replacements.get(field.path, field.text)[:EXCERPT_CHARS]
            break
    return masked, actions, summary, excerpt


def response_fields_or_refuse(endpoint: str, body):
    try:
        return wire_fields.response_fields(endpoint, body)
    except UnsupportedContent as e:
        raise Refusal(502, "content_not_examinable",
                      f"The upstream's answer holds content the gateway cannot examine "
                      f"({e.kind}); it was withheld.") from None


def mask_response(masker: Masker, endpoint: str, body, fields, mask: bool, reidentify: bool):
    replacements, actions = masker.mask_fields(fields, reidentify=reidentify, mask=mask)
    return wire_fields.apply(body, replacements), actions


def int_fields(value) -> dict | None:
    """The integer members of a usage object (token counts), or None."""
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


def masks_anything(direction) -> bool:
    return direction.default != "keep" or any(op != "keep" for op in direction.entities.values())


class FailClosedStream:
    """mitmproxy's stream callable: a masking failure ends the stream with an error event that
    the openai SDKs raise on; everything the upstream sends after that is dropped."""

    def __init__(self, masker: StreamMasker, endpoint: str, record: dict) -> None:
        self.masker = masker
        self.endpoint = endpoint
        self.record = record
        self.failed = False

    def __call__(self, chunk: bytes) -> bytes:
        if self.failed:
            return b""
        try:
            return self.masker(chunk)
        except Exception as exc:
            self.failed = True
            context.fail(self.record, STAGE, exc)
            log.error("response stream masking failed (%s), stream ended, request %s",
                      type(exc).__name__, self.record.get("request_id"))
            return error_event(self.endpoint, "gateway_stage_failed",
                               "The gateway could not check the rest of this answer for PHI; "
                               "the stream was ended.")


def masking_keys(path) -> tuple[bytes, Cipher]:
    """The keyed-hash and reversible-encryption keys, kept in the home folder so that hashed
    tokens stay stable across restarts."""
    if not path.exists():
        import os

        write_private(path, os.urandom(96))
    key = path.read_bytes()
    if len(key) != 96:
        raise exceptions.OptionsError(f"{path} must hold 96 bytes")
    return key[:32], Cipher(key[32:])
