"""The NER gate: texts in which no NER span can survive `_is_noise` skip the spaCy NER, and the
findings stay exactly those of a detector that runs the NER on every text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from presidio_analyzer import EntityRecognizer, RecognizerRegistry, RecognizerResult
from spacy.tokens import Doc

from phigate.detect import Detector, TextField, load_config
from phigate.detect import detector as detector_module
from phigate.detect.detector import _gate_exact, _hidden_by_ner, _ner_gate_settings, ner_can_matter
from phigate.detect.recognizers import NOT_NAME_WORDS, build_pack

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "scripts" / "eval" / "phi_eval.jsonl"

# Names where a careless gate would look away: lower case, after punctuation, hyphens, quotes and
# brackets, unicode and all-caps names, NOT_NAME_WORDS right before a name, titles, codes.
TRICKY = [
    "", "   ", "no capitals here at all", "pt john smith denies chest pain", "dr. smith called", "Dr. smith called",
    "Dr smith called", "dr Smith called", "The patient denies pain.", "He reports chest pain since yesterday",
    "Denies fever. Tolerated diet.", "The Smith family visited", "Per Jones, stable", "Per the chart, stable",
    "A Jones called", "An Lee called", "Mr.Smith called", "Ms.Jones here", "seen by (John Carter) today",
    "seen by [Ann Holt]", "{Ann Holt}", "\"Ann\" said hi", "“Ann Holt” said hi", "'Ann' said hi", "end.Start here",
    "end.Smith here", "well-Smith", "smith-Jones", "x-Ray", "o'Brien", "O'Brien came", "mcDonald", "McDonald came",
    "iPad", "iPads", "eBay order", "Émile Zola visited", "émile zola visited", "ÉMILE ZOLA", "Иван Петров", "Ωmega",
    "Ｊｏｈｎ Ｓｍｉｔｈ", "ǅemal Bijedić", "JOHN SMITH", "SMITH", "Smith", "smith", "MN", "IL", "MN IL", "E11.9",
    "J44.1, Na 138", "HTN", "HTN, DM2", "state: MN", "code E11.9", "No", "No.", "NO", "Not Smith", "Not smith",
    "The\nBronx", "The\tBronx", "The\u00a0Bronx", "Ann\u2003Holt", "lives in The", "moved to The", "resides in The\n",
    "call mary at home", "son: ann lee", "patient's daughter visited", "i saw dr. house", "92 yo M, pt margaret oneil",
    "mariehenry@yahoo.com", "666-31-9252", "(697) 552-3760", "bp 142/88, hr 72", "Tolerated Smith", "Nurse Ratched",
    "Doctor Who", "Who", "Today Ann Holt was seen", "Start metformin", "Use Tylenol", "Consider Ann for trial",
    "From Boston", "In Springfield, IL", "Springfield, IL 62704", "at St. Jude's", "Given Lasix", "Was seen",
    "he went to Kettering", "transferred from Mercy General", "X", "x Y", "The Ⅻ Legion", "ℚ", "A. Smith",
    "The The The", "Ann", "ann", "Smith2", "2Smith", "ANN HOLT MD", "aNN", "Reports\nAnn Holt", "pt:Harold Finch",
    "lives in Admitted", "lives in Being", "moved to Compare Miss", "born in Will",
]


def eval_records() -> list[dict]:
    with EVAL.open() as source:
        return [json.loads(line) for line in source if line.strip()]


@pytest.fixture(scope="module")
def gated() -> Detector:
    return Detector.from_config(None)


@pytest.fixture(scope="module")
def plain() -> Detector:
    return Detector.from_config(None, ner_gate=False)


@pytest.mark.parametrize("text", [
    "", "no capitals", "The patient denies pain.", "He reports chest pain", "Denies fever. Tolerated diet.",
    "pt john smith", "dr. smith", "Dr smith", "Per the chart", "end.Start here", "émile zola", "666-31-9252",
    "mariehenry@yahoo.com", "ǅemal", "The\nthe", "Reports\tNo",
    # A span inside the last word is one word: noise at up to 3 characters, or all capitals up to 5.
    "MN", "state: MN", "E11.9", "SMITH", "iPad", "No.", "Ann", "x-Ray",
])
def test_gate_skips_texts_without_a_possible_name(text):
    assert not ner_can_matter(text)


@pytest.mark.parametrize("text", [
    "Dr. smith", "Émile Zola", "émile Zola", "the (John) case", "\"Ann\" said", "well-Smith", "end.Smith here",
    "JOHN SMITH", "MN IL", "The Smith family", "smith-Jones", "iPads", "Ｊｏｈｎ", "Smith", "Smith2", "No. 5",
    "Ann Holt", "x-Rays", "HTN, DM2", "E11.9 today", "Иван", "The\u00a0Bronx", "ℚuinn",
])
def test_gate_keeps_texts_with_a_possible_name(text):
    assert ner_can_matter(text)


def test_gate_reads_every_not_name_word_as_skippable():
    assert all(not ner_can_matter(f"{word} said nothing") for word in NOT_NAME_WORDS)
    assert all(ner_can_matter(f"{word}x said nothing") for word in NOT_NAME_WORDS)


def test_a_token_boundary_inside_a_not_name_word_sends_the_text_to_the_ner(gated):
    vocab = gated._nlp_engine.nlp["en"].vocab
    assert not _gate_exact("The x", Doc(vocab, words=["Th", "e", "x"], spaces=[False, True, False]))
    assert _gate_exact("The x", Doc(vocab, words=["The", "x"], spaces=[True, False]))
    # The bundled tokenizer keeps every NOT_NAME_WORDS word whole, whatever precedes it.
    tokenizer = gated._nlp_engine.nlp["en"].make_doc
    for word in sorted(NOT_NAME_WORDS):
        for before in ("", "(", "\"", "“", "'", "-", "x-", "end.", "[", "1", "$", "/", "...", ":"):
            text = f"{before}{word} x"
            assert _gate_exact(text, tokenizer(text)), text


def test_results_an_ner_span_could_swallow_send_the_text_to_the_ner():
    def result(entity: str, score: float) -> RecognizerResult:
        return RecognizerResult(entity, 0, 3, score)
    entities = frozenset({"PERSON", "LOCATION"})
    assert _hidden_by_ner([result("LOCATION", 0.8)], entities, 0.85)
    assert _hidden_by_ner([result("PERSON", 0.85)], entities, 0.85)  # equal results collapse into one
    assert not _hidden_by_ner([result("PERSON", 0.88), result("DATE", 0.5)], entities, 0.85)


def test_a_noise_ner_span_still_hides_a_rule_finding(monkeypatch, plain):
    # The NER tags "Admitted" as a place; `_is_noise` drops it, but Presidio's de-duplication has
    # already dropped the rule's LOCATION inside it. So this text must keep its NER run.
    text = "lives in Admitted"
    assert not ner_can_matter(text)
    assert plain.analyze([TextField(text)]) == [[]]
    gated = Detector.from_config(None)
    assert gated.analyze([TextField(text)]) == [[]] and (gated.ner_runs, gated.ner_skips) == (1, 0)
    monkeypatch.setattr(detector_module, "_hidden_by_ner", lambda *args: False)
    assert [f.entity_type for f in Detector.from_config(None).analyze([TextField(text)])[0]] == ["LOCATION"]


def test_gate_applies_only_where_it_is_exact(gated, plain, tmp_path):
    assert gated._ner_gate == (frozenset({"PERSON", "LOCATION"}), 0.85)
    assert plain._ner_gate is None
    # A pipeline with more than the NER (lemmas, tags) is not gated.
    config = tmp_path / "detect.yaml"
    config.write_text("disabled_components: []\n")
    assert Detector.from_config(config)._ner_gate is None

    class ReadsEntities(EntityRecognizer):
        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return []

    engine = gated._nlp_engine
    registry = RecognizerRegistry(recognizers=build_pack(), supported_languages=["en"])
    registry.add_nlp_recognizer(engine)
    assert _ner_gate_settings(engine, registry) is not None
    registry.add_recognizer(ReadsEntities(supported_entities=["X"]))
    assert _ner_gate_settings(engine, registry) is None


def analyze_records(detector: Detector, records: list[dict]) -> list[list]:
    return [detector.analyze([TextField(f["text"], f.get("key")) for f in record["fields"]]) for record in records]


def test_gate_changes_no_finding_on_the_evaluation_set(monkeypatch, gated, plain):
    def no_nlp(*args, **kwargs):
        raise AssertionError("Presidio ran the NLP engine itself")
    monkeypatch.setattr(gated._nlp_engine, "process_text", no_nlp)  # artifacts without entities are used as given
    records = eval_records()
    skipped_before = gated.ner_skips
    assert analyze_records(gated, records) == analyze_records(plain, records)
    # The comparison proves something only if the gate skipped the NER for many texts.
    skipped = gated.ner_skips - skipped_before
    assert skipped >= 400 and skipped / (plain.ner_runs or 1) >= 0.25, (skipped, plain.ner_runs)


def test_gate_changes_no_finding_on_tricky_texts(gated, plain):
    fields = [TextField(text) for text in TRICKY] + [TextField(text, "text") for text in TRICKY]
    assert gated.analyze(fields) == plain.analyze(fields)  # one batch, gated and NER texts mixed
    assert [gated.analyze([f]) for f in fields] == [plain.analyze([f]) for f in fields]  # cache hits
    assert gated.ner_skips > 0


def test_gate_with_the_example_registry_changes_no_finding():
    # Hospital pattern recognizers with context words: Presidio's context enhancer then reads the
    # tokens and lemmas, which the tokenizer-only doc must provide unchanged.
    config = load_config(ROOT / "phigate" / "detect" / "detect.example.yaml")
    config["nlp_configuration"] = load_config(None)["nlp_configuration"]
    gated, plain = Detector(config), Detector(config, ner_gate=False)
    assert gated._ner_gate is not None
    records = eval_records()[:400] + [{"fields": [{"text": f"badge {text} BX-123456"}]} for text in TRICKY]
    assert analyze_records(gated, records) == analyze_records(plain, records)
    assert gated.ner_skips > 0


def test_an_always_skipping_gate_would_be_caught(monkeypatch, plain):
    # The equality test can fail: skipping the NER everywhere loses names on the evaluation set.
    monkeypatch.setattr(detector_module, "ner_can_matter", lambda text: False)
    careless = Detector.from_config(None)
    records = eval_records()[:300]
    assert analyze_records(careless, records) != analyze_records(plain, records)


def test_concurrent_callers_share_nlp_batches_and_get_their_own_findings(plain):
    """Texts of threads that call at once run as one NLP batch (spaCy's per-call cost is
    paid once); each caller still gets exactly the findings of its own texts."""
    import threading

    texts = [f"Patient Ann Holt{chr(97 + i)} was seen by Dr. Ravi Menon on 03/{i + 1:02d}/2024, "
             f"call {i + 5}55-010-{1000 + i}." for i in range(12)]
    expected = [Detector.analyze(plain, [TextField(t)]) for t in texts]  # one at a time
    fresh = Detector.from_config(None, ner_gate=False)
    fresh.analyze([TextField("warm up the pipeline")])
    batches_before, results, start = fresh.batches, [None] * len(texts), threading.Barrier(len(texts))

    def call(i: int) -> None:
        start.wait()
        results[i] = fresh.analyze([TextField(texts[i])])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == expected
    assert fresh.batches - batches_before < len(texts)  # some callers shared a batch


def test_a_failing_text_in_a_shared_batch_fails_only_its_caller(monkeypatch):
    import threading

    detector = Detector.from_config(None, ner_gate=False)
    detector.analyze([TextField("warm up the pipeline")])
    real = detector._findings

    def findings(text, analysed):
        if "POISON" in text:
            raise ValueError("bad text")
        return real(text, analysed)

    monkeypatch.setattr(detector, "_findings", findings)
    texts = ["Seen by Dr. Ravi Menon today.", "POISON Ann Holt", "Call Maria Lopez at 555-010-2000."]
    outcomes, start = {}, threading.Barrier(len(texts))

    def call(text: str) -> None:
        start.wait()
        try:
            outcomes[text] = detector.analyze([TextField(text)])
        except ValueError as exc:
            outcomes[text] = exc

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert isinstance(outcomes["POISON Ann Holt"], ValueError)
    assert [f.entity_type for f in outcomes[texts[0]][0]] == ["PERSON"]
    assert {f.entity_type for f in outcomes[texts[2]][0]} >= {"PERSON", "PHONE_NUMBER"}


def test_analyze_without_waiting_refuses_while_the_nlp_stage_is_busy(plain):
    """The event loop analyses short new text itself only when no thread is running the NLP
    stage; it never waits for one (that would stall every connection)."""
    from phigate.detect.detector import DetectorBusy

    with plain._nlp_lock:
        with pytest.raises(DetectorBusy):
            plain.analyze([TextField("Seen by Dr. Ravi Menon, never analysed before 7731.")], wait=False)
        # Cached or key-decided fields need no NLP stage: answered even while it is busy.
        assert plain.analyze([TextField("1990-01-01", "birthDate")], wait=False)[0]
    found = plain.analyze([TextField("Seen by Dr. Ravi Menon, never analysed before 7731.")], wait=False)
    assert [f.entity_type for f in found[0]] == ["PERSON"]
