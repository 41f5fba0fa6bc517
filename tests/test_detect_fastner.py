"""The fused NER encoder (phigate/detect/fastner.py): spaCy's own encoder and the fused one give
the same entities; other architectures, disagreement and training leave spaCy's layers in place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import pytest
import spacy
from threadpoolctl import threadpool_info

from phigate.detect import Detector, TextField, bundled_model_path, load_config
from phigate.detect import fastner
from phigate.detect.detector import DEFAULT_DISABLED_COMPONENTS
from phigate.detect.fastner import FUSED_NAME, fuse_ner_encoder, read_encoder

from tests.test_detect_gate import TRICKY

EVAL = Path(__file__).resolve().parents[1] / "scripts" / "eval" / "phi_eval.jsonl"


def eval_texts() -> list[str]:
    with EVAL.open() as source:
        return [field["text"] for line in source if line.strip() for field in json.loads(line)["fields"]]


def load_model():
    return spacy.load(bundled_model_path(), exclude=list(DEFAULT_DISABLED_COMPONENTS))


def entities(docs) -> list[list[tuple[int, int, str]]]:
    return [[(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents] for doc in docs]


def encoder_of(nlp):
    return nlp.get_pipe("ner").model.get_ref("tok2vec")


@pytest.fixture(scope="module")
def stock():
    return load_model()


@pytest.fixture(scope="module")
def fused():
    nlp = load_model()
    assert fuse_ner_encoder(nlp)
    return nlp


def test_the_bundled_model_is_fused_by_default_and_can_be_left_alone(tmp_path):
    assert encoder_of(Detector.from_config(None)._nlp_engine.nlp["en"]).name == FUSED_NAME
    config = tmp_path / "detect.yaml"
    config.write_text("fused_ner_encoder: false\n")
    assert encoder_of(Detector.from_config(config)._nlp_engine.nlp["en"]).name != FUSED_NAME


def test_same_entities_on_every_eval_text_one_by_one_and_batched(stock, fused):
    texts = eval_texts() + TRICKY
    expected = entities(stock.pipe(texts, batch_size=32))
    assert sum(map(len, expected)) > 1000  # the comparison has entities to lose
    assert entities(fused.pipe(texts, batch_size=32)) == expected
    assert entities(fused(text) for text in texts[:400]) == expected[:400]


def test_token_vectors_match_spacys_within_float_rounding(stock, fused):
    docs = [stock.make_doc(text) for text in ["", "John", *eval_texts()[:64], "", "Ann Holt"]]
    expected = encoder_of(stock).predict(docs)
    got = encoder_of(fused).predict(docs)
    assert got.shape == expected.shape and got.dtype == expected.dtype and got.flags["C_CONTIGUOUS"]
    assert float(numpy.abs(got - expected).max()) < 1e-4


def test_the_comparison_fails_on_a_slightly_wrong_encoder(stock):
    """Entities do move when the encoder is off: the agreement tests above can fail."""
    nlp = load_model()
    encoder = read_encoder(encoder_of(nlp))
    wrong = fastner._Encoder(**{**encoder.__dict__, "projection_bias": encoder.projection_bias + 0.5})
    nlp.get_pipe("ner").model.replace_node(encoder_of(nlp), fastner._fused_layer(wrong, encoder_of(nlp).ops, 64))
    texts = eval_texts()[:300]
    assert entities(nlp.pipe(texts)) != entities(stock.pipe(texts))


def test_a_fused_encoder_that_disagrees_is_put_back(monkeypatch):
    nlp = load_model()
    original = encoder_of(nlp)
    monkeypatch.setattr(fastner, "encode", lambda encoder, ops, docs: ops.alloc2f(sum(map(len, docs)), 64))
    assert not fuse_ner_encoder(nlp)
    assert encoder_of(nlp) is original


@pytest.mark.parametrize("settings", [
    {"width": 32, "depth": 2, "window_size": 2, "rows": [300, 100, 200, 200]},
    {"width": 48, "depth": 1, "window_size": 1, "rows": [500, 500, 500, 500]},
])
def test_other_sizes_of_the_same_architecture_are_fused_exactly(settings):
    """A hospital's own model of this architecture (other width, depth, window, rows)."""
    def untrained():
        nlp = spacy.blank("en")
        nlp.add_pipe("ner", config={"model": {
            "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner",
            "extra_state_tokens": False, "hidden_width": 32, "maxout_pieces": 2, "use_upper": True,
            "tok2vec": {"@architectures": "spacy.Tok2Vec.v2",
                        "embed": {"@architectures": "spacy.MultiHashEmbed.v2", "width": settings["width"],
                                  "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"], "rows": settings["rows"],
                                  "include_static_vectors": False},
                        "encode": {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": settings["width"],
                                   "depth": settings["depth"], "window_size": settings["window_size"],
                                   "maxout_pieces": 3}}}})
        nlp.get_pipe("ner").add_label("PERSON")
        nlp.initialize()
        return nlp
    nlp = untrained()
    docs = [nlp.make_doc(text) for text in eval_texts()[:40]]
    expected = encoder_of(nlp).predict(docs)
    assert fuse_ner_encoder(nlp)
    assert float(numpy.abs(encoder_of(nlp).predict(docs) - expected).max()) < 1e-4


def test_another_architecture_keeps_spacys_layers():
    nlp = spacy.blank("en")
    nlp.add_pipe("ner", config={"model": {
        "@architectures": "spacy.TransitionBasedParser.v2", "state_type": "ner", "extra_state_tokens": False,
        "hidden_width": 32, "maxout_pieces": 2, "use_upper": True,
        "tok2vec": {"@architectures": "spacy.Tok2Vec.v2",
                    "embed": {"@architectures": "spacy.MultiHashEmbed.v2", "width": 32,
                              "attrs": ["NORM", "SHAPE"], "rows": [100, 100], "include_static_vectors": False},
                    "encode": {"@architectures": "spacy.MishWindowEncoder.v2", "width": 32, "depth": 2,
                               "window_size": 1}}}})
    nlp.get_pipe("ner").add_label("PERSON")
    nlp.initialize()
    before = encoder_of(nlp)
    assert read_encoder(before) is None
    assert not fuse_ner_encoder(nlp)
    assert encoder_of(nlp) is before
    assert not fuse_ner_encoder(spacy.blank("en"))  # no NER at all


def test_the_fused_encoder_refuses_training(fused):
    encoder = encoder_of(fused)
    docs = [fused.make_doc("Ann Holt")]
    with pytest.raises(NotImplementedError, match="inference only"):
        encoder.begin_update(docs)


def test_fusing_twice_is_harmless_and_blas_runs_on_one_thread(fused):
    assert fuse_ner_encoder(fused)
    assert encoder_of(fused).name == FUSED_NAME
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_detector_findings_are_unchanged():
    config = load_config(None)
    spacy_layers = Detector({**config, "fused_ner_encoder": False})
    fused_layers = Detector(config)
    fields = [TextField(text) for text in eval_texts()[:600]]
    assert fused_layers.analyze(fields) == spacy_layers.analyze(fields)
