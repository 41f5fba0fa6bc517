"""phigate.detect: recognizers, key context, cache, offline operation, evaluation targets."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from phigate.detect import Detector, TextField, bundled_model_path
from phigate.detect.validators import dea_ok, luhn_ok, npi_ok, vin_ok

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "eval"))

import evaluate  # noqa: E402


@pytest.fixture(scope="session")
def detector() -> Detector:
    return Detector.from_config(None)


def found(detector: Detector, text: str, key: str | None = None) -> list[tuple[str, str]]:
    return [(text[f.start:f.end], f.entity_type) for f in detector.analyze([TextField(text, key)])[0]]


POSITIVES = [
    ("Moved to 42 Elm Street, Springfield 01105 last year.", "01105", "ZIP_CODE"),
    ("Seen by Dr. Alice Whitmore today", "Alice Whitmore", "PERSON"),
    ("pt Harold Finch denies chest pain", "Harold Finch", "PERSON"),
    ("Emergency contact: Garcia 555-201-3344", "Garcia", "PERSON"),
    ("Lives at 4410 Birchwood Lane Apt 3B, Dayton", "4410 Birchwood Lane Apt 3B", "STREET_ADDRESS"),
    ("Springfield, IL 62704", "62704", "ZIP_CODE"),
    ("moved to Kettering last year", "Kettering", "LOCATION"),
    ("admitted 03/14/2024 for CHF", "03/14/2024", "DATE"),
    ("born March 3 in a small town", "March 3", "DATE"),
    ("symptoms began in Sept. 2021", "Sept. 2021", "DATE"),
    ("a 93-year-old woman", "93-year-old", "AGE_OVER_89"),
    ("aged 101, alert", "101", "AGE_OVER_89"),
    ("a ninety-two-year-old man", "ninety-two-year-old", "AGE_OVER_89"),
    ("pt is 95 years of age", "95 years of age", "AGE_OVER_89"),
    ("seen 14.03.2024 in clinic", "14.03.2024", "DATE"),
    ("SSN ending in 4821", "4821", "US_SSN"),
    ("I am following up on Rosa Delgado's labs", "Rosa Delgado", "PERSON"),
    ("pt margaret oneil 84F with afib", "margaret oneil", "PERSON"),
    ("call (614) 555-0199 ext 12", "(614) 555-0199 ext 12", "PHONE_NUMBER"),
    ("fax: 614-555-0100", "614-555-0100", "FAX_NUMBER"),
    ("write to j.doe+chart@mercy-health.org now", "j.doe+chart@mercy-health.org", "EMAIL_ADDRESS"),
    ("SSN 000-12-3456 on file", "000-12-3456", "US_SSN"),
    ("ssn 987654321", "987654321", "US_SSN"),
    ("MRN: 00451234", "00451234", "MEDICAL_RECORD_NUMBER"),
    ("MBI 1EG4-TE5-MK73 active", "1EG4-TE5-MK73", "HEALTH_PLAN_ID"),
    ("member ID XJH123456789", "XJH123456789", "HEALTH_PLAN_ID"),
    ("acct # 0098-112233", "0098-112233", "ACCOUNT_NUMBER"),
    ("DEA AB1234563 on the script", "AB1234563", "LICENSE_NUMBER"),
    ("NPI 1245319599", "1245319599", "LICENSE_NUMBER"),
    ("state licence MD48213", "MD48213", "LICENSE_NUMBER"),
    ("car 1HGCM82633A004352 towed", "1HGCM82633A004352", "VEHICLE_ID"),
    ("license plate 7ABC123", "7ABC123", "VEHICLE_ID"),
    ("UDI (01)00844588003288(17)141120(10)7654321D", "(01)00844588003288(17)141120(10)7654321D", "DEVICE_ID"),
    ("pump serial no. SN-88231-A", "SN-88231-A", "DEVICE_ID"),
    ("see https://portal.example.org/p?id=3.", "https://portal.example.org/p?id=3", "URL"),
    ("login from 10.20.30.40 blocked", "10.20.30.40", "IP_ADDRESS"),
    ("transferred to Riverside Methodist Hospital", "Riverside Methodist Hospital", "ORGANIZATION"),
    ("case ID 55-21873", "55-21873", "OTHER_ID"),
]


@pytest.mark.parametrize(("text", "value", "entity"), POSITIVES, ids=[p[2] + ":" + p[1] for p in POSITIVES])
def test_recognizer_positive(detector, text, value, entity):
    # The finding covers the value (a name may take its title along: "Dr. Alice Whitmore").
    assert any(value in span and kind == entity for span, kind in found(detector, text))


NEGATIVES = [
    "67-year-old with HTN on metformin 500 mg since 2019",
    "aged 89, HbA1c 7.2%, eGFR 58, K 4.1 mmol/L",
    "Deploy to EKS, store in S3, use gpt-4o with C4 and HbA1c features",
    "Texas and Ohio Medicaid cover apixaban 5 mg BID",
    "ICD-10 E11.9 and I50.9; LOINC 4548-4; SNOMED 44054006; BP 142/88, HR 96",
    "Trial ran 2008-2012 in patients 18 to 65; version v2.3.1",
    "The patient was stable overnight and denies pain",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_hard_negatives_are_left_alone(detector, text):
    assert found(detector, text) == []


NEAR_MISSES = [
    ("car 1HGCM82633A004353 towed", "VEHICLE_ID"),  # wrong VIN check digit
    ("script AB1234564", "LICENSE_NUMBER"),  # wrong DEA check digit
    ("an 89 yo man", "AGE_OVER_89"),  # 89 and under are allowed
    ("in 2019 the patient", "DATE"),  # a bare year is allowed
    ("ratio 3/4 of the dose", "DATE"),  # m/d without a date keyword
    ("model gpt-4o and SHA-256", "DEVICE_ID"),
]


@pytest.mark.parametrize(("text", "entity"), NEAR_MISSES)
def test_near_misses(detector, text, entity):
    assert entity not in {e for _, e in found(detector, text)}


def test_check_digits():
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert npi_ok("1245319599") and not npi_ok("1245319598")
    assert dea_ok("AB1234563") and not dea_ok("AB1234564")
    assert vin_ok("1HGCM82633A004352") and not vin_ok("1HGCM82633A004353")


def test_fhir_patient_keys_decide(detector):
    fields = [TextField("Patient", "resourceType"), TextField("Chalmers", "family"), TextField("Peter", "given"),
              TextField("1974-12-25", "birthDate"), TextField("(03) 5555 6473", "telecom"),
              TextField("p.chalmers@example.com", "telecom"), TextField("534 Erewhon St", "line"),
              TextField("PleasantVille", "city"), TextField("3999", "postalCode"), TextField("12345", "mrn"),
              TextField("http://hl7.org/fhir/sid/us-ssn", "system"), TextField("male", "gender")]
    results = detector.analyze(fields)
    kinds = [[f.entity_type for f in per_field] for per_field in results]
    assert kinds == [[], ["PERSON"], ["PERSON"], ["DATE"], ["PHONE_NUMBER"], ["EMAIL_ADDRESS"],
                     ["STREET_ADDRESS"], ["LOCATION"], ["ZIP_CODE"], ["MEDICAL_RECORD_NUMBER"], [], []]
    assert all((f.start, f.end) == (0, len(field.text)) for field, per in zip(fields, results) for f in per)


def test_generic_identifier_keys(detector):
    fields = [TextField("123456", "value"), TextField("555-201-3344", "value"), TextField("7.2", "value"),
              TextField("example", "id"), TextField("urn:uuid:1234-5678", "id")]
    kinds = [[f.entity_type for f in per] for per in detector.analyze(fields)]
    assert kinds == [["OTHER_ID"], ["PHONE_NUMBER"], [], [], ["OTHER_ID"]]


def test_concurrent_callers_get_the_same_results(detector):
    texts = [f"Pt Omar Haddad {i} seen 0{i}/11/2023, call 312-555-01{i}{i}" for i in range(1, 9)]
    expected = [detector.analyze([TextField(t, "note")])[0] for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: detector.analyze([TextField(t, "content")])[0], texts))
    assert got == expected


def test_unknown_key_falls_back_to_text_analysis(detector):
    assert found(detector, "call 614-555-0199", key="content") == [("614-555-0199", "PHONE_NUMBER")]


def test_cache_is_fast_and_holds_no_text(detector):
    texts = [f"Pt Jane Roe seen 04/0{i}/2024, MRN 7788{i}21, note {'x' * 200}" for i in range(1, 9)]
    fields = [TextField(t) for t in texts]
    first = detector.analyze(fields)
    started = time.perf_counter()
    for _ in range(50):
        again = detector.analyze(fields)
    per_field_ms = (time.perf_counter() - started) / (50 * len(fields)) * 1e3
    assert again == first
    assert per_field_ms < 0.1
    assert not any("Jane" in repr(key) or "Jane" in repr(value) for key, value in detector._cache.items())


def test_cache_is_bounded(tmp_path):
    config = tmp_path / "detect.yaml"
    config.write_text("cache_size: 3\n")
    small = Detector.from_config(config)
    small.analyze([TextField(f"text number {i}") for i in range(10)])
    assert len(small._cache) == 3


def test_registry_yaml_adds_recognizers_and_changes_version(detector, tmp_path):
    config = tmp_path / "detect.yaml"
    config.write_text(textwrap.dedent("""\
        recognizer_registry:
          supported_languages: [en]
          recognizers:
            - name: BadgeRecognizer
              type: custom
              supported_entity: EMPLOYEE_BADGE
              supported_language: en
              patterns:
                - name: badge
                  regex: "\\\\bBX-[0-9]{3}\\\\b"
                  score: 0.9
        """))
    custom = Detector.from_config(config)
    assert custom.detector_version != detector.detector_version
    assert found(custom, "badge BX-123 lost") == [("BX-123", "EMPLOYEE_BADGE")]


def test_nlp_engine_yaml_points_at_another_model(tmp_path):
    # A hospital swaps the model (here: the same pipeline by explicit path, with all its
    # components enabled) through Presidio's NLP-engine configuration, no code change.
    config = tmp_path / "detect.yaml"
    config.write_text(textwrap.dedent(f"""\
        nlp_configuration:
          nlp_engine_name: spacy
          models:
            - lang_code: en
              model_name: "{bundled_model_path()}"
        disabled_components: []
        """))
    custom = Detector.from_config(config)
    assert "parser" in custom._nlp_engine.nlp["en"].pipe_names
    assert ("Harold Finch", "PERSON") in found(custom, "pt Harold Finch denies chest pain")
    assert found(custom, "a 45 year old seen in 2019") == []  # our NER label mapping still applies


def test_unknown_setting_is_refused(tmp_path):
    config = tmp_path / "detect.yaml"
    config.write_text("cache_sise: 3\n")
    with pytest.raises(ValueError, match="cache_sise"):
        Detector.from_config(config)


OFFLINE_SCRIPT = """
import socket
attempts = []
real_connect = socket.socket.connect
def guarded(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if self.family != socket.AF_UNIX and host not in ("127.0.0.1", "::1", "localhost"):
        attempts.append(host)  # libraries swallow connection errors; record every attempt
        raise OSError("network disabled in this test")
    return real_connect(self, address)
socket.socket.connect = guarded
real_getaddrinfo = socket.getaddrinfo
def guarded_getaddrinfo(host, *args, **kwargs):
    if host not in ("127.0.0.1", "::1", "localhost", None):
        attempts.append(host)
        raise socket.gaierror("network disabled in this test")
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = guarded_getaddrinfo
from phigate.detect import Detector, TextField, bundled_model_path
import tldextract
assert tldextract.extract("mail.example.co.uk").suffix == "co.uk"
from presidio_analyzer.predefined_recognizers import EmailRecognizer
assert EmailRecognizer().validate_result("a@b.example.org")
found = Detector.from_config(None).analyze([TextField("mail a.b@example.org, see https://x.example.com")])[0]
assert {f.entity_type for f in found} == {"EMAIL_ADDRESS", "URL"}, found
assert attempts == [], attempts
print("offline ok")
"""


def test_import_and_analysis_stay_offline(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "offline ok" in result.stdout
    assert not (tmp_path / "cache").exists()  # tldextract wrote no suffix-list cache


def test_evaluation_slice_meets_targets(detector):
    result = evaluate.score(evaluate.load(evaluate.DEFAULT_DATA, 400), evaluate.ours(detector))
    assert result["recall_overall"] >= 0.995
    assert {entity: recall for entity, recall in result["recall"].items() if recall < 0.99} == {}
    assert result["negatives_altered"] <= 0.10


def test_example_configuration_is_valid(detector):
    from phigate.detect import load_config

    config = load_config(ROOT / "phigate" / "detect" / "detect.example.yaml")
    config["nlp_configuration"] = load_config(None)["nlp_configuration"]  # en_core_web_lg is not installed here
    custom = Detector(config)
    assert found(custom, "employee badge BX-123456") == [("BX-123456", "EMPLOYEE_BADGE")]


def test_code_identifiers_under_name_are_not_presumed_people(detector):
    assert found(detector, "get_patient_record", key="name") == []
    assert found(detector, "agents.runner.step", key="name") == []
    assert found(detector, "Margaret Whitfield", key="name") == [("Margaret Whitfield", "PERSON")]


def test_context_pass_groups_results_as_presidio_does(detector):
    """`_Analyzer._enhance_using_context` (one grouping) returns Presidio's own list, same
    objects in the same order, and defers to Presidio when a recognizer enhances scores."""
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerResult

    from phigate.detect.detector import LANGUAGE, _with_token_lemmas

    analyzer, engine = detector._analyzer, detector._nlp_engine
    recognizers = analyzer.registry.get_recognizers(language=LANGUAGE, all_fields=True)
    compared = 0
    for record in evaluate.load(evaluate.DEFAULT_DATA, 150):
        for field in record["fields"]:
            text = field["text"]
            artifacts = _with_token_lemmas(engine._doc_to_nlp_artifact(engine.nlp[LANGUAGE](text), LANGUAGE))
            raw = [r for rec in recognizers for r in rec.analyze(text, rec.supported_entities, artifacts) or []]
            raw.reverse()  # arrival order differs from recognizer order: the grouping must restore it
            ours = analyzer._enhance_using_context(text, raw, artifacts, recognizers)
            presidio = AnalyzerEngine._enhance_using_context(analyzer, text, raw, artifacts, recognizers)
            assert [id(r) for r in ours] == [id(r) for r in presidio]
            compared += len(raw)
    assert compared > 300

    class Boosting(PatternRecognizer):
        def enhance_using_context(self, text, raw_recognizer_results, other_raw_recognizer_results,
                                  nlp_artifacts, context=None):
            return [RecognizerResult(r.entity_type, r.start, r.end, 1.0) for r in raw_recognizer_results]

    boosting = Boosting(supported_entity="X", deny_list=["zzz"])
    raw = [RecognizerResult("X", 0, 3, 0.4, recognition_metadata={
        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: boosting.id})]
    assert [r.score for r in analyzer._enhance_using_context("zzz", raw, None, [boosting])] == [1.0]
