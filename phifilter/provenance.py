"""Provenance: record in each output what produced it, and tell when an existing output is stale.

An output that merely has the right row count may come from another input of the same name,
another model or other columns. Each output therefore carries a *run record* in its Parquet
key-value metadata (key ``phifilter.run``), and a rerun compares it with the record it would
write now: a difference means the output is redone, and the reason is reported.

Stable API (other modules build on it; add, do not change):

``fingerprint(path) -> dict``
    ``{"size": int, "sha256": hex}`` for files up to :data:`FULL_HASH_BYTES` (the whole
    content); for a larger Parquet file ``{"size": int, "footer_sha256": hex}`` (the footer
    holds every row group's offsets, sizes and statistics, so a rewrite changes it). A larger
    non-Parquet file is hashed whole. Accepts a path string or ``os.PathLike``. No mtime: a
    copied input is the same input.
``file_hashes(folder_or_files) -> {name: sha256}``
    SHA-256 of each file of a model folder (or of the given files).
``model_identity(hashes=None, **options) -> dict``
    ``{"files": {name: sha256}, "options": {...}}``: the model's file hashes plus every option
    that changes the output values (max_length, chunking, dtype, ...). JSON-able values only.
``run_record(input, model=None, columns=None, **extra) -> dict``
    ``{"format": RECORD_FORMAT, "input": fingerprint, "model": identity or None,
    "columns": {...} or [...], **extra}``; ``input`` is a path or an already computed fingerprint.
``with_record(schema, record) -> pa.Schema``
    The schema with the record in its metadata; a ``pq.ParquetWriter`` (and so
    ``corpus.ShardWriter``) given this schema writes it into the file footer.
``read_record(path) -> dict | None``
    The record of an existing Parquet output (None: absent, unreadable, or no record).
``stale_reason(existing, wanted) -> str | None``
    None when ``existing`` (a record, or a path whose record is read) matches ``wanted``;
    otherwise one of ``"no run record"``, ``"input changed"``, ``"model changed"``,
    ``"columns changed"``, ``"settings changed"`` (any other key), checked in that order.
``describe_redone(reasons) -> str``
    ``"2 redone: input changed"`` or ``"3 redone: input changed (2), model changed (1)"``;
    ``""`` for no reasons. For command summaries.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping

from .hashing import sha256_file

RECORD_KEY = b"phifilter.run"
RECORD_FORMAT = "phifilter-run-1"
FULL_HASH_BYTES = 64 << 20  # hashing 64 MiB costs ~0.1 s, negligible next to scoring it
_PARQUET_MAGIC = b"PAR1"


def fingerprint(path: str | os.PathLike) -> dict:
    """Size and a content hash (whole file, or a large Parquet file's footer) of one input.

    A URL (s3://...) is read through fsspec; a large non-Parquet object there is identified by
    its size and ETag instead of a download of the whole object."""
    from .location import as_location, store_of

    path = as_location(path)
    st = store_of(path).stat(path)
    size = st.size
    if size > FULL_HASH_BYTES and not path.name.endswith(".parquet") and st.etag:
        return {"size": size, "etag": st.etag}  # a store's large object: its ETag, not a download
    if size > FULL_HASH_BYTES:
        with path.open("rb") as f:
            f.seek(size - 8)
            tail = f.read(8)
        footer_len = int.from_bytes(tail[:4], "little")
        if tail[4:] == _PARQUET_MAGIC and 0 < footer_len <= size - 12:
            return {"size": size, "footer_sha256": sha256_file(path, size - 8 - footer_len, footer_len + 8)}
    return {"size": size, "sha256": sha256_file(path)}


def file_hashes(source: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, str]:
    """SHA-256 of every file in a folder (not recursive, hidden files skipped), or of given files."""
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = sorted(p for p in Path(source).iterdir() if p.is_file() and not p.name.startswith("."))
    else:
        files = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    return {p.name: sha256_file(p) for p in files}


def model_identity(hashes: Mapping[str, str] | None = None, **options) -> dict:
    """The model's file hashes and the options that change what it outputs."""
    return {"files": dict(sorted((hashes or {}).items())), "options": dict(sorted(options.items()))}


def run_record(input: str | os.PathLike | Mapping, model: Mapping | None = None,
               columns: Mapping | list | tuple | None = None, **extra) -> dict:
    """What produced one output: the input's fingerprint, the model identity, the column names."""
    fp = dict(input) if isinstance(input, Mapping) else fingerprint(input)
    record = {"format": RECORD_FORMAT, "input": fp, "model": dict(model) if model is not None else None,
              "columns": list(columns) if isinstance(columns, (list, tuple)) else (dict(columns) if columns else None)}
    record.update(extra)
    # Round-trip through JSON so tuples, numpy scalars' str... compare equal to what is read back.
    return json.loads(json.dumps(record, sort_keys=True, default=str))


def with_record(schema, record: Mapping):
    """``schema`` with ``record`` stored under :data:`RECORD_KEY` in its key-value metadata."""
    meta = dict(schema.metadata or {})
    meta[RECORD_KEY] = json.dumps(record, sort_keys=True).encode()
    return schema.with_metadata(meta)


def read_record(path: str | os.PathLike) -> dict | None:
    """The run record in an existing Parquet file's footer, or None."""
    from .corpus import read_metadata

    meta = read_metadata(path) or {}  # a Parquet footer, or JSON Lines' sidecar
    raw = meta.get(RECORD_KEY)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def stale_reason(existing: Mapping | str | os.PathLike | None, wanted: Mapping) -> str | None:
    """Why an output made under ``existing`` may not stand for ``wanted`` (None: it may)."""
    if existing is not None and not isinstance(existing, Mapping):  # a path or a URL (RemotePath)
        existing = read_record(existing)
    if not existing or existing.get("format") != wanted.get("format"):
        return "no run record"
    for key, reason in (("input", "input changed"), ("model", "model changed"), ("columns", "columns changed")):
        if existing.get(key) != wanted.get(key):
            return reason
    if {k: v for k, v in existing.items()} != dict(wanted):
        return "settings changed"
    return None


def describe_redone(reasons: Iterable[str]) -> str:
    """Summary phrase for outputs redone, grouped by reason."""
    counts = Counter(r for r in reasons if r)
    total = sum(counts.values())
    if not total:
        return ""
    if len(counts) == 1:
        return f"{total} redone: {next(iter(counts))}"
    return f"{total} redone: " + ", ".join(f"{r} ({n})" for r, n in counts.most_common())
