"""Turn documents into embeddings: truncate them, or cut them into chunks the embedder reads whole.

The embedder reads ``max_length`` tokens; seed-set documents often hold twice that, so
truncation throws away most of a file. Chunking keeps it:

- code that parses with :mod:`ast` is cut at top-level ``def`` / ``class`` boundaries (a chunk
  starts at the first decorator), neighbouring pieces packed together while they fit;
- code that does not parse (another language, a fragment) is cut into windows of whole lines;
- prose is cut at blank lines into windows of whole paragraphs;
- any piece still too long is cut by lines, then by characters.

:class:`DocEmbeddings` holds one row per chunk and knows which document each row belongs to,
so a head can combine chunk embeddings (mean, token-weighted mean) or chunk scores (mean, max).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .defaults import MAX_CHUNKS
from .embed import CHARS_PER_TOKEN_CAP, tokenizable

# How an EduClassifier turns a document into what its head sees.
DOC_MODES = ("truncate", "chunk-mean", "chunk-weighted", "chunk-score-mean", "chunk-score-max")
# Special tokens ([CLS] ... [SEP]) the embedder adds around every chunk.
SPECIAL_TOKENS = 2
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def chunking_of(mode: str) -> str:
    """'truncate' or 'chunk': what the embedding pass must produce for ``mode``."""
    if mode not in DOC_MODES:
        from .errors import OptionError

        raise OptionError(f"--doc-mode {mode}: expected one of {', '.join(DOC_MODES)}")
    return "truncate" if mode == "truncate" else "chunk"


# ---------------------------------------------------------------------------------------------
# splitting text into pieces


def code_pieces(text: str) -> list[str] | None:
    """Cut Python source before each top-level function or class; None if it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    starts = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            starts.append(first - 1)
    lines = text.splitlines(keepends=True)
    bounds = sorted({0, *starts, len(lines)})
    return ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:]) if a < b]


def line_pieces(text: str) -> list[str]:
    return text.splitlines(keepends=True) or [text]


def paragraph_pieces(text: str) -> list[str]:
    """Paragraphs with their trailing blank lines, so joining the pieces gives back the text."""
    pieces, start = [], 0
    for m in _BLANK_LINE.finditer(text):
        pieces.append(text[start : m.end()])
        start = m.end()
    pieces.append(text[start:])
    return [p for p in pieces if p]


def first_pieces(text: str, kind: str = "auto") -> list[str]:
    """The first cut of a document: ast for parsable code, lines for other code, paragraphs for prose."""
    if kind in ("auto", "code"):
        pieces = code_pieces(text)
        if pieces is not None and len(pieces) > 1:
            return pieces
        if kind == "code" or not _BLANK_LINE.search(text):
            return line_pieces(text)
    return paragraph_pieces(text)


def pack(pieces: Sequence[str], count: Callable[[list[str]], Sequence[int]], budget: int) -> list[str]:
    """Merge consecutive pieces into chunks of at most ``budget`` tokens (over-long pieces are cut finer)."""
    sizes = list(count(list(pieces)))
    fine: list[tuple[str, int]] = []
    for piece, size in zip(pieces, sizes):
        if size <= budget:
            fine.append((piece, size))
            continue
        lines = line_pieces(piece)
        if len(lines) > 1:
            sub = pack(lines, count, budget)
            fine.extend(zip(sub, count(sub)))
        else:  # one very long line: cut by characters, in proportion to its token count
            step = max(1, int(len(piece) * budget / size * 0.9))
            parts = [piece[i : i + step] for i in range(0, len(piece), step)]
            fine.extend(zip(parts, count(parts)))
    chunks, current, used = [], [], 0
    for piece, size in fine:
        if current and used + size > budget:
            chunks.append("".join(current))
            current, used = [], 0
        current.append(piece)
        used += size
    if current:
        chunks.append("".join(current))
    return chunks


def excerpt(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` characters, at the last line break if there is one:
    how ``sample --max-chars`` and ``label`` cut the seed set's excerpts before they were
    labelled, and so what a model reading ``max_chars`` characters sees (None: the whole text).

    The cut keeps the line break itself. Without a line break in range (one huge line), the
    cut falls at the last space, and failing that at exactly ``max_chars``.
    """
    if max_chars is None or text is None or len(text) <= max_chars:
        return text
    cut = text.rfind("\n", 0, max_chars)
    if cut > 0:
        return text[: cut + 1]
    cut = text.rfind(" ", 0, max_chars)
    return text[: cut + 1] if cut > 0 else text[:max_chars]


def chunk_documents(texts: Sequence[str], count: Callable[[list[str]], Sequence[int]], max_length: int,
                    max_chunks: int, kinds: Sequence[str] | None = None):
    """Cut every text into chunks of at most ``max_length`` tokens (special tokens included).

    Returns (chunks, doc index per chunk, tokens per document before cutting, bool per document:
    more than ``max_chunks`` chunks, tail dropped).
    """
    budget = max(1, max_length - SPECIAL_TOKENS)
    # Tokenising a megabyte to keep 8 chunks of it wastes seconds: count only what could be kept.
    cap = max_chunks * max_length * CHARS_PER_TOKEN_CAP
    cut = np.fromiter((len(t) > cap for t in texts), dtype=bool, count=len(texts))
    texts = [t[:cap] for t in texts]
    doc_tokens = np.asarray(count(list(texts)), dtype=np.int64) if len(texts) else np.zeros(0, np.int64)
    chunks: list[str] = []
    owner: list[int] = []
    for i, text in enumerate(texts):
        if doc_tokens[i] <= budget:
            parts = [text]
        else:
            parts = pack(first_pieces(text, kinds[i] if kinds is not None else "auto"), count, budget)
            if len(parts) > max_chunks:
                parts, cut[i] = parts[:max_chunks], True
        chunks.extend(parts)
        owner.extend([i] * len(parts))
    return chunks, np.asarray(owner, dtype=np.int64), doc_tokens, cut


# ---------------------------------------------------------------------------------------------
# embeddings per chunk


@dataclass
class DocEmbeddings:
    """Chunk embeddings and the document each belongs to (one row per document when truncating).

    vectors : float32 [rows, dim]; doc : int64 [rows] document index (non-decreasing);
    tokens : int64 [rows] tokens each row's text holds (capped at what the embedder read);
    doc_tokens : int64 [docs] tokens per document before any cut;
    chunking : 'truncate' or 'chunk'; cut : bool [docs], True where the tail was not read.
    """

    vectors: np.ndarray
    doc: np.ndarray
    tokens: np.ndarray
    doc_tokens: np.ndarray
    chunking: str
    cut: np.ndarray

    @property
    def truncated(self) -> int:
        """Documents whose tail the embedder never read."""
        return int(self.cut.sum())

    @property
    def n_docs(self) -> int:
        return len(self.doc_tokens)

    @property
    def chunks_per_doc(self) -> np.ndarray:
        return np.bincount(self.doc, minlength=self.n_docs)

    @property
    def chunked(self) -> int:
        """Documents embedded as more than one chunk."""
        return int((self.chunks_per_doc > 1).sum())

    def stats(self) -> dict:
        return {"docs": self.n_docs, "chunks": int(len(self.doc)), "chunked": self.chunked,
                "truncated": int(self.truncated), "chunking": self.chunking}

    def subset(self, docs: np.ndarray) -> "DocEmbeddings":
        """The rows of the given documents, renumbered 0..len(docs)-1 in the order given."""
        docs = np.asarray(docs, dtype=np.int64)
        rows = [np.flatnonzero(self.doc == d) for d in docs] if len(docs) < 64 else None
        if rows is None:
            order = np.argsort(self.doc, kind="stable")
            starts = np.searchsorted(self.doc[order], docs, side="left")
            ends = np.searchsorted(self.doc[order], docs, side="right")
            rows = [order[a:b] for a, b in zip(starts, ends)]
        new_doc = np.concatenate([np.full(len(r), k, np.int64) for k, r in enumerate(rows)]) if rows else np.zeros(0, np.int64)
        take = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        return DocEmbeddings(self.vectors[take], new_doc, self.tokens[take], self.doc_tokens[docs], self.chunking,
                             self.cut[docs])

    def pooled(self, weighted: bool = False) -> np.ndarray:
        """One vector per document: the mean of its chunks (weighted by their tokens if asked)."""
        w = np.maximum(self.tokens, 1).astype(np.float64) if weighted else np.ones(len(self.doc))
        sums = np.zeros((self.n_docs, self.vectors.shape[1]), np.float64)
        np.add.at(sums, self.doc, self.vectors * w[:, None])
        total = np.bincount(self.doc, weights=w, minlength=self.n_docs)
        return round_to_float16(sums / np.maximum(total, 1e-12)[:, None])

    def first_chunk(self) -> np.ndarray:
        """One vector per document: its first chunk (the opening: title, imports, module docstring)."""
        out = np.zeros((self.n_docs, self.vectors.shape[1]), np.float32)
        present = self.chunks_per_doc > 0
        out[present] = self.vectors[np.searchsorted(self.doc, np.flatnonzero(present))]
        return out

    def max_pooled(self) -> np.ndarray:
        """One vector per document: the elementwise maximum over its chunks."""
        out = np.full((self.n_docs, self.vectors.shape[1]), -np.inf, np.float32)
        np.maximum.at(out, self.doc, self.vectors)
        return np.where(np.isfinite(out), out, 0.0).astype(np.float32)

    def length_features(self) -> np.ndarray:
        """[docs, 3]: log(1 + tokens), log(1 + chunks), tail not read (0/1)."""
        return np.stack([np.log1p(self.doc_tokens.astype(np.float64)), np.log1p(self.chunks_per_doc),
                         self.cut.astype(np.float64)], axis=1).astype(np.float32)

    def reduce_scores(self, row_scores: np.ndarray, how: str) -> np.ndarray:
        """Per-document mean or max of per-chunk scores."""
        if how == "max":
            out = np.full(self.n_docs, -np.inf)
            np.maximum.at(out, self.doc, row_scores)
            return np.where(np.isfinite(out), out, 0.0)
        total = np.bincount(self.doc, weights=row_scores, minlength=self.n_docs)
        return total / np.maximum(self.chunks_per_doc, 1)


def round_to_float16(x: np.ndarray) -> np.ndarray:
    """Round to float16 precision (kept as float32), so cached float16 embeddings give identical scores."""
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def layout_documents(embedder, texts: Sequence[str], chunking: str = "truncate", max_chunks: int = MAX_CHUNKS,
                     kinds: Sequence[str] | None = None, count: bool = True):
    """What the embedder must read for ``texts``: (texts to embed, owning document per text,
    tokens per document before cutting, bool per document: text left unread).

    ``count=False`` skips the token count that truncation does not need (scoring): doc tokens
    and cut are then zero / False. Chunking always counts (it must, to cut).
    """
    texts = list(texts)
    if chunking != "truncate":
        return chunk_documents(texts, embedder.count_tokens, embedder.max_length, max_chunks, kinds)
    cap = embedder.max_length * CHARS_PER_TOKEN_CAP
    if count and texts:
        doc_tokens = np.asarray(embedder.count_tokens([tokenizable(t, cap) for t in texts]), np.int64)
    else:
        doc_tokens = np.zeros(len(texts), np.int64)
    return texts, np.arange(len(texts), dtype=np.int64), doc_tokens, doc_tokens > embedder.max_length - SPECIAL_TOKENS


def assemble(embedder, vectors: np.ndarray, layout, chunking: str, chunk_tokens: bool = True) -> DocEmbeddings:
    """DocEmbeddings from the embedder's output for a :func:`layout_documents` layout.

    ``chunk_tokens=False`` skips counting each chunk's tokens (only token-weighted pooling and
    reports need them; scoring a chunk-mean model does not).
    """
    chunk_texts, owner, doc_tokens, cut = layout
    if len(vectors):
        vectors = round_to_float16(vectors)
    else:
        vectors = np.zeros((0, embedder.dim), np.float32)
    if chunking == "truncate":
        tokens = np.minimum(np.asarray(doc_tokens, np.int64), embedder.max_length - SPECIAL_TOKENS)
    elif chunk_tokens and len(chunk_texts):
        tokens = np.asarray(embedder.count_tokens(chunk_texts), np.int64)
    else:
        tokens = np.zeros(len(chunk_texts), np.int64)
    return DocEmbeddings(vectors, owner, tokens, np.asarray(doc_tokens, np.int64), chunking, np.asarray(cut, bool))


def embed_documents(embedder, texts: Sequence[str], chunking: str = "truncate", max_chunks: int = MAX_CHUNKS,
                    kinds: Sequence[str] | None = None, progress: bool = False,
                    count: bool = True, chunk_tokens: bool | None = None) -> DocEmbeddings:
    """Embed ``texts`` by ``chunking`` ('truncate' or 'chunk') with any embedder that has
    ``encode``, ``count_tokens`` and ``max_length``.

    ``count=False`` skips the token counts scoring does not need (see :func:`layout_documents`;
    ``chunk_tokens`` defaults to ``count``, see :func:`assemble`).
    """
    from tqdm import tqdm

    layout = layout_documents(embedder, texts, chunking, max_chunks, kinds, count)
    chunk_texts = layout[0]
    step = 32  # the bar moves every 32 texts: about every second on a CPU, not every 256
    parts = []
    with tqdm(total=len(chunk_texts), unit="chunk" if chunking == "chunk" else "doc", desc="embedding",
              disable=not progress) as bar:
        for start in range(0, len(chunk_texts), step):
            parts.append(embedder.encode(chunk_texts[start : start + step]))
            bar.update(min(step, len(chunk_texts) - start))
    vectors = np.concatenate(parts) if parts else np.zeros((0, embedder.dim), np.float32)
    return assemble(embedder, vectors, layout, chunking, count if chunk_tokens is None else chunk_tokens)
