"""Featurizer: how documents become the feature matrix an embedding head reads.

``doc_mode`` says how a document is embedded (see :mod:`phifilter.chunking`): ``truncate``
reads the first ``max_length`` tokens; ``chunk-mean`` / ``chunk-weighted`` average the
embeddings of up to ``max_chunks`` chunks; ``chunk-score-mean`` / ``chunk-score-max`` give the
head one row per chunk and combine the chunk scores. ``features`` picks what a pooled document
row holds ("mean", "mean+first", "mean+first+max+length", ...). ``max_chars`` (None: all) is how
much of a document the embedder reads: its first ``max_chars`` characters, cut at a line break
(:func:`phifilter.chunking.excerpt`), before any chunking; the bundled model reads 2,500, the
length of the excerpts its labels were given on (its lexical scorer reads the same).

The featurizer holds no learned state: the embedder object is passed in, so the scorer, the
trainer and the pipeline stages share one embedder and one set of rules.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np

from .chunking import DocEmbeddings, chunking_of, embed_documents, excerpt, round_to_float16
from .defaults import MAX_CHUNKS
from .errors import ModelError

# Parts of a document's feature vector (``features="mean+first"``); all but "mean" need a
# chunk-mean / chunk-weighted doc_mode. "length": log tokens, log chunks, tail cut (3 numbers).
FEATURE_PARTS = ("mean", "first", "max", "length")


def params_of(obj) -> dict:
    """scikit-learn's get_params: the ``__init__`` parameters, read from the signature."""
    names = [p for p in inspect.signature(type(obj).__init__).parameters if p != "self"]
    return {n: getattr(obj, n) for n in names}


def blank_mask(texts: Sequence[str]) -> np.ndarray:
    """True for null, empty or blank texts: they score 0 without reaching any scorer."""
    return np.fromiter((not t or t.isspace() for t in texts), dtype=bool, count=len(texts))


class Featurizer:
    """Embedder output -> one feature row per document (or per chunk for the chunk-score modes)."""

    def __init__(self, doc_mode: str = "truncate", max_chunks: int = MAX_CHUNKS, features: str = "mean",
                 max_chars: int | None = None):
        self.doc_mode = doc_mode
        self.max_chunks = max_chunks
        self.features = features
        self.max_chars = max_chars

    def get_params(self, deep: bool = False) -> dict:
        return params_of(self)

    @property
    def parts(self) -> list[str]:
        return [p.strip() for p in str(self.features or "mean").split("+")]

    @property
    def chunking(self) -> str:
        """'truncate' or 'chunk': what the embedding pass must produce."""
        return chunking_of(self.doc_mode)

    @property
    def needs_chunk_tokens(self) -> bool:
        """Whether scoring needs each chunk's token count (token-weighted pooling does)."""
        return self.doc_mode == "chunk-weighted"

    @property
    def per_chunk(self) -> bool:
        """The head scores chunks and the scores are combined per document."""
        return self.doc_mode.startswith("chunk-score")

    def check(self) -> None:
        chunking_of(self.doc_mode)
        m = self.max_chars
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1):
            raise ModelError(f"--max-chars {m}: expected a whole number >= 1 (or none: the whole document)")
        parts = self.parts
        unknown = [p for p in parts if p not in FEATURE_PARTS]
        if unknown or not parts or len(set(parts)) != len(parts):
            raise ModelError(f"--features {self.features}: expected distinct parts of {', '.join(FEATURE_PARTS)} "
                             "joined by '+', e.g. mean+first")
        if parts != ["mean"] and self.doc_mode not in ("chunk-mean", "chunk-weighted"):
            raise ModelError(f"--features {self.features} needs --doc-mode chunk-mean or chunk-weighted "
                             f"(not {self.doc_mode}): the other modes have one vector per chunk or document")

    def width(self, dim: int) -> int:
        """Columns the head sees for ``dim``-dimensional embeddings."""
        return sum(3 if p == "length" else dim for p in self.parts)

    def read(self, texts: Sequence[str]) -> list[str]:
        """What the embedder reads of each text: the text, or its first ``max_chars`` characters."""
        if self.max_chars is None:
            return list(texts)
        return [excerpt(t, self.max_chars) for t in texts]

    def reads_whole(self, text: str) -> bool:
        """Whether the embedder reads all of ``text`` (an embedding of the whole text is this model's)."""
        return self.max_chars is None or text is None or len(text) <= self.max_chars

    def embed(self, embedder, texts: Sequence[str], progress: bool = False, count: bool = True) -> DocEmbeddings:
        """Embed ``texts`` as ``doc_mode`` needs; ``count=False`` skips token statistics scoring does not use."""
        texts = list(texts)
        E = embed_documents(embedder, self.read(texts), self.chunking, self.max_chunks, progress=progress,
                            count=count, chunk_tokens=count or self.needs_chunk_tokens)
        E.cut = E.cut | self._excerpted(texts)
        return E

    def layout(self, embedder, texts: Sequence[str], count: bool = True):
        """:func:`phifilter.chunking.layout_documents` of what the embedder reads of ``texts``."""
        from . import chunking  # looked up at call time, like embed_documents' own call

        texts = list(texts)
        chunks, owner, doc_tokens, cut = chunking.layout_documents(embedder, self.read(texts), self.chunking,
                                                                   self.max_chunks, count=count)
        return chunks, owner, doc_tokens, np.asarray(cut, bool) | self._excerpted(texts)

    def _excerpted(self, texts: list) -> np.ndarray:
        """True where the embedder reads only an excerpt (its tail is not read)."""
        return np.fromiter((not self.reads_whole(t) for t in texts), dtype=bool, count=len(texts))

    def as_doc_embeddings(self, X) -> DocEmbeddings:
        """``X`` as DocEmbeddings: checked if it is one, else one truncated embedding per row."""
        if isinstance(X, DocEmbeddings):
            if X.chunking != self.chunking:
                raise ModelError(f"embeddings were made by '{X.chunking}' but doc_mode {self.doc_mode} needs '{self.chunking}'")
            return X
        X = round_to_float16(np.asarray(X, dtype=np.float32))
        n = len(X)
        return DocEmbeddings(X, np.arange(n, dtype=np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                             "truncate", np.zeros(n, bool))

    def transform(self, E: DocEmbeddings) -> np.ndarray:
        """Rows the head sees: one per document, or one per chunk for the chunk-score modes."""
        if self.per_chunk or self.doc_mode == "truncate":
            return E.vectors
        make = {"mean": lambda: E.pooled(weighted=self.doc_mode == "chunk-weighted"), "first": E.first_chunk,
                "max": E.max_pooled, "length": E.length_features}
        parts = [make[p]() for p in self.parts]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def row_weights(self, E: DocEmbeddings) -> np.ndarray | None:
        """Training weights per head row: in the chunk-score modes each document counts once."""
        if not self.per_chunk:
            return None
        return 1.0 / np.maximum(E.chunks_per_doc, 1)[E.doc]

    def row_labels(self, E: DocEmbeddings, values: np.ndarray) -> np.ndarray:
        """Per-document values repeated for every head row."""
        return values[E.doc] if self.per_chunk else values

    def reduce(self, E: DocEmbeddings, rows: np.ndarray, how: str | None = None) -> np.ndarray:
        """Per-document values from per-row head outputs (identity unless chunks are scored)."""
        if not self.per_chunk:
            return rows
        return E.reduce_scores(rows, how or ("max" if self.doc_mode.endswith("max") else "mean"))
