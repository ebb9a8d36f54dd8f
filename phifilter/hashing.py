"""Hashes of documents and files: each defined once, because caches and ids on disk depend on them.

* :func:`text_hash`: the hash of a document's text (its UTF-8 bytes; lone surrogates, which
  JSON Lines can carry, kept as they are). SHA-256 keys the label cache and makes sample ids;
  the embedding cache has keyed its rows by SHA-1 since it began, so it asks for ``"sha1"``
  and its sidecars on disk stay valid.
* :func:`document_id`: the id ``phifilter sample`` gives a document that has none (the first 16
  hex digits of its SHA-256).
* :func:`document_ids`: the ids that embeddings are stored under: the id column where there is
  one, else ``sha1:`` and the text's SHA-1.
* :func:`sha256_file`: the SHA-256 of a file or of a byte range of it, local or on a store
  (model parts, embedder files, eval sets, input fingerprints).

The fingerprint of a whole input (:func:`phifilter.provenance.fingerprint`) and of a labelled
set are hashes of many things at once and live with what they describe.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

_BLOCK = 1 << 20


def text_hash(text: str, algorithm: str = "sha256") -> str:
    """Hex digest of a document's text."""
    return hashlib.new(algorithm, text.encode("utf-8", "surrogatepass")).hexdigest()


def document_id(text: str) -> str:
    """The id a sampled document without one gets: 16 hex digits of its text's SHA-256."""
    return text_hash(text)[:16]


def document_ids(table_or_batch, id_column: str | None, texts: Sequence[str]) -> list[str]:
    """Ids of a table's documents for the embedding cache: ``id_column`` where the data has it
    (and the value is not null), else ``sha1:`` and the SHA-1 of the text."""
    names = table_or_batch.schema.names
    if id_column and id_column in names:
        col = table_or_batch.column(names.index(id_column))
        return [str(v) if v is not None else "sha1:" + text_hash(t, "sha1") for v, t in zip(col.to_pylist(), texts)]
    return ["sha1:" + text_hash(t, "sha1") for t in texts]


def sha256_file(path: str | os.PathLike, start: int = 0, length: int | None = None) -> str:
    """SHA-256 of a file (a path, or a ``RemotePath`` read through its store), read in 1 MiB
    blocks; with ``start``/``length``, of that byte range only."""
    h = hashlib.sha256()
    opener = getattr(path, "open", None)  # a Path or RemotePath; a str is opened here
    with (opener("rb") if opener is not None else open(path, "rb")) as f:
        if start:
            f.seek(start)
        left = length
        while left is None or left > 0:
            block = f.read(_BLOCK if left is None else min(_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()
