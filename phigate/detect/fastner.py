"""A faster inference path for the token encoder of spaCy's CNN NER (en_core_web_sm's).

spaCy runs that encoder (hash embeddings of NORM/PREFIX/SUFFIX/SHAPE, a maxout reduction, then
residual maxout window layers, then a linear projection) as ~60 thinc layers: one Python call
each, with their own bookkeeping, and thinc's blis gemm, which is slow for matrices of a few
rows. For the short texts of chat traffic that overhead, not arithmetic, is most of the NER's
time. `fuse_ner_encoder` swaps the encoder, for inference only, for one thinc layer that
computes the same function in a few numpy calls (OpenBLAS, one thread, on pre-transposed
weights). It first reads the model's structure and refuses anything but the architecture it
was written for (hash embeddings only: an NER that also embeds static word vectors, as larger
pipelines may, or a transformer pipeline keeps spaCy's layers), then checks both encoders agree
on sample texts; otherwise spaCy's own layers stay. Only the floating-point summation order of the matrix
products can differ.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy
from spacy.attrs import IDS
from thinc.api import Model

log = logging.getLogger(__name__)

FUSED_NAME = "phigate_fused_tok2vec"

_RESIDUAL = "residual(expand_window>>maxout>>layernorm>>dropout)"
# thinc names a chain after its layers, so the name spells the whole architecture out.
_ARCHITECTURE = re.compile(
    r"extract_features>>list2ragged"
    r">>with_array\((?:ints-getitem>>hashembed\|)*ints-getitem>>hashembed\)"
    r">>with_array\(maxout>>layernorm>>dropout\)>>ragged2list"
    rf">>with_array\((?:{re.escape(_RESIDUAL)}>>)*{re.escape(_RESIDUAL)}\)"
    r">>list2array>>linear")

# Sample texts for the agreement check: names, places, codes, a multi-line note.
SAMPLES = (
    "Pt John Smith, 67M, seen at Mercy General in Springfield, IL on 03/14/2024.",
    "Question 12.",
    "Maria de Souza called from Boston about her mother's MRI; callback (617) 555-0142.",
    "Dr. Ann Holt reviewed the chart.\nPlan: start metformin 500 mg BID, recheck HbA1c in 3 months.",
    "denies chest pain",
)


@dataclass(frozen=True)
class _Maxout:
    """A maxout layer with the layer norm after it, weights laid out for `x @ weights`."""

    weights: numpy.ndarray  # (inputs, outputs * pieces), C-contiguous
    bias: numpy.ndarray
    outputs: int
    pieces: int
    gain: numpy.ndarray
    shift: numpy.ndarray

    def __call__(self, ops, x: numpy.ndarray) -> numpy.ndarray:
        y = x @ self.weights
        y += self.bias
        best, _ = ops.maxout(y.reshape(y.shape[0], self.outputs, self.pieces))
        # thinc's LayerNorm with the same operations as numpy's mean and var, minus their overhead
        count = best.shape[1]
        centered = best - numpy.add.reduce(best, axis=1, keepdims=True) / count
        variance = numpy.add.reduce(centered * centered, axis=1, keepdims=True) / count + 1e-08
        normed = centered * variance ** (-1.0 / 2.0)
        normed *= self.gain
        normed += self.shift
        return normed


@dataclass(frozen=True)
class _Encoder:
    columns: tuple[int, ...]  # spaCy attribute ids, in the embedding's order
    tables: tuple[tuple[numpy.ndarray, int], ...]  # (hash embedding table, seed) per column
    reduce: _Maxout
    layers: tuple[_Maxout, ...]
    window: int
    pad: int
    projection: numpy.ndarray  # (width, outputs), C-contiguous
    projection_bias: numpy.ndarray


def read_encoder(tok2vec: Model) -> _Encoder | None:
    """The encoder's weights when `tok2vec` is exactly the supported architecture, else None."""
    if not _ARCHITECTURE.fullmatch(tok2vec.name) or len(tok2vec.layers) != 3:
        return None
    try:
        embed_encode, _, linear = tok2vec.layers
        embed, encode = embed_encode.layers
        extract, _, concat, reduce, _ = embed.layers
        columns = extract.attrs["columns"]
        pieces = concat.layers[0].layers
        if len(pieces) != len(columns):
            return None
        tables = []
        for position, piece in enumerate(pieces):
            getitem, hashembed = piece.layers
            if getitem.attrs["index"] != (slice(0, None, None), position):
                return None
            tables.append((hashembed.get_param("E"), int(hashembed.attrs["seed"])))
        residuals = [node for node in encode.walk() if node.name == _RESIDUAL]
        windows = {_only(node, "expand_window").attrs["window_size"] for node in residuals}
        if len(windows) != 1:
            return None
        return _Encoder(
            columns=tuple(IDS[column] for column in columns),
            tables=tuple(tables),
            reduce=_maxout(reduce),
            layers=tuple(_maxout(node) for node in residuals),
            window=int(windows.pop()),
            pad=int(encode.attrs["pad"]),
            projection=numpy.ascontiguousarray(linear.get_param("W").T),
            projection_bias=linear.get_param("b"),
        )
    except (KeyError, ValueError, AttributeError, TypeError):  # missing dims/params: not ours
        return None


def _only(model: Model, name: str) -> Model:
    nodes = [node for node in model.walk() if node.name == name]
    if len(nodes) != 1:
        raise ValueError(f"expected one {name} layer, found {len(nodes)}")
    return nodes[0]


def _maxout(block: Model) -> _Maxout:
    maxout, norm = _only(block, "maxout"), _only(block, "layernorm")
    outputs, pieces, inputs = (maxout.get_dim(name) for name in ("nO", "nP", "nI"))
    weights = maxout.get_param("W").reshape(outputs * pieces, inputs)
    return _Maxout(numpy.ascontiguousarray(weights.T), maxout.get_param("b").reshape(outputs * pieces),
                   outputs, pieces, norm.get_param("G"), norm.get_param("b"))


def encode(encoder: _Encoder, ops, docs: list) -> numpy.ndarray:
    """Token vectors for `docs`, rows in doc order: what the thinc encoder computes."""
    features = [doc.to_array(encoder.columns).astype("uint64", copy=False) for doc in docs]
    lengths = [len(feature) for feature in features]
    ids = numpy.concatenate(features) if len(features) > 1 else features[0]
    if ids.ndim == 1:
        ids = ids.reshape(-1, 1)
    embedded = [ops.gather_add(table, ops.hash(numpy.ascontiguousarray(ids[:, column]), seed) % table.shape[0])
                for column, (table, seed) in enumerate(encoder.tables)]
    hidden = encoder.reduce(ops, numpy.hstack(embedded))
    # thinc's with_array(pad=...) puts `pad` zero rows before each non-empty doc and after the
    # last; the window layers then read those rows (and what earlier layers made of them).
    width, pad = hidden.shape[1], encoder.pad
    padded = numpy.zeros((sum(n + pad for n in lengths if n) + pad, width), dtype=hidden.dtype)
    rows, start, offset = [], 0, pad
    for n in lengths:
        if n:
            padded[offset:offset + n] = hidden[start:start + n]
            rows.append(slice(offset, offset + n))
            start, offset = start + n, offset + n + pad
    for layer in encoder.layers:
        padded = padded + layer(ops, ops.seq2col(padded, encoder.window))
    tokens = numpy.concatenate([padded[row] for row in rows]) if len(rows) != 1 else padded[rows[0]]
    out = tokens @ encoder.projection
    out += encoder.projection_bias
    return out


def _fused_layer(encoder: _Encoder, ops, width: int) -> Model:
    def forward(model: Model, docs: list, is_train: bool) -> tuple[Any, Any]:
        if is_train:
            raise NotImplementedError("phigate's fused NER encoder is for inference only")
        if not sum(len(doc) for doc in docs):
            return ops.alloc2f(0, width), _no_backprop
        return encode(encoder, ops, docs), _no_backprop

    return Model(FUSED_NAME, forward, dims={"nO": width}, ops=ops)


def _no_backprop(_gradient: Any) -> Any:
    raise NotImplementedError("phigate's fused NER encoder is for inference only")


def fuse_ner_encoder(nlp: Any, pipe: str = "ner", samples: tuple[str, ...] = SAMPLES) -> bool:
    """Swap the NER's token encoder for the fused one; True when swapped.

    Kept as is (False): no such pipe, another architecture, or a fused encoder whose token
    vectors or entities differ from spaCy's on `samples`."""
    if pipe not in nlp.pipe_names:
        return False
    ner = nlp.get_pipe(pipe)
    model = getattr(ner, "model", None)
    if model is None or not model.has_ref("tok2vec"):
        return False
    original = model.get_ref("tok2vec")
    if original.name == FUSED_NAME:
        return True
    encoder = read_encoder(original)
    if encoder is None:
        log.info("NER encoder kept: not the architecture phigate's fused encoder supports")
        return False
    _one_blas_thread()
    fused = _fused_layer(encoder, original.ops, original.get_dim("nO"))
    docs = [nlp.make_doc(text) for text in samples]
    expected_vectors = original.predict(docs)
    expected_entities = [_entities(ner(nlp.make_doc(text))) for text in samples]
    model.replace_node(original, fused)
    agrees = (numpy.allclose(fused.predict(docs), expected_vectors, rtol=1e-4, atol=1e-4)
              and [_entities(ner(nlp.make_doc(text))) for text in samples] == expected_entities)
    if not agrees:
        model.replace_node(fused, original)
        log.warning("NER encoder kept: the fused encoder disagreed with spaCy's on sample texts")
    return agrees


def _entities(doc) -> list[tuple[int, int, str]]:
    return [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]


def _one_blas_thread() -> None:
    """OpenBLAS would spread these small products over every core and spin between calls,
    taking CPU from the proxy's event loop; one thread is also the fastest for them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
