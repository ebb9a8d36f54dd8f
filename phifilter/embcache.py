"""The embedding cache: a Parquet sidecar of document embeddings, so retraining costs no embedding pass.

``phifilter embed SHARDS -o EMB_DIR`` writes, for every input shard, ``EMB_DIR/<same name>``
with one row per embedded chunk (one per document when truncating)::

    id          string                      the document's id column (or "sha1:<text hash>")
    chunk       int32                       chunk number within the document
    tokens      int32                       tokens the chunk holds
    doc_tokens  int64                       tokens of the whole document
    cut         bool                        the document's tail was not read
    embedding   fixed_size_list<float16>[dim]
    text_sha1   string                      SHA-1 of the document's text (since issue 12)

A cached embedding is found by id *and* text hash, so two documents that share an id (two
shards numbered "0".."5") never get each other's embedding; a sidecar written before the text
hash existed is used by id alone, and then a repeated id is refused.

The file's Parquet metadata names the embedder, its file hashes, ``max_length`` and the
chunking; their hash (``key``) must match the model's before ``train``, ``evaluate`` or
``score`` use a row. Each sidecar also carries a run record (``phifilter.provenance``): a
rerun keeps a sidecar only if its input, embedder and columns are unchanged, else redoes it
and says why. Classifiers round every embedding to float16 precision, so scores from
the cache equal scores computed from the text.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from .defaults import EMBED_BATCH_SIZE, MAX_CHUNKS, MAX_LENGTH
from .hashing import document_ids, text_hash
from .chunking import DocEmbeddings, embed_documents
from .corpus import ShardWriter, check_text_column, iter_batches, open_parquet, output_path, texts_from_array
from .errors import InputError
from .shardjob import ShardJob, leased_lines

FORMAT = "phifilter-embeddings"
META_KEY = b"phifilter.embeddings"


def identity(embedder, chunking: str, max_chunks: int) -> dict:
    """What makes two embedding passes interchangeable, and its short hash under ``key``."""
    ident = {
        "format": FORMAT,
        "embedder": embedder.name,
        "sha256": dict(sorted(embedder.hashes.items())),
        "dim": int(embedder.dim),
        "max_length": int(embedder.max_length),
        "chunking": chunking,
        "max_chunks": int(max_chunks) if chunking == "chunk" else None,
    }
    ident["key"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ident


def sidecar_schema(dim: int, ident: dict) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("chunk", pa.int32()),
            ("tokens", pa.int32()),
            ("doc_tokens", pa.int64()),
            ("cut", pa.bool_()),
            ("embedding", pa.list_(pa.float16(), dim)),
            ("text_sha1", pa.string()),
        ],
        metadata={META_KEY: json.dumps(ident, sort_keys=True).encode()},
    )


def to_batch(ids: Sequence[str], emb: DocEmbeddings, schema: pa.Schema,
             texts: Sequence[str] | None = None) -> pa.RecordBatch:
    dim = emb.vectors.shape[1]
    first = np.searchsorted(emb.doc, np.arange(emb.n_docs))
    chunk = np.arange(len(emb.doc)) - first[emb.doc]
    flat = pa.array(emb.vectors.astype(np.float16).reshape(-1), pa.float16())
    return pa.RecordBatch.from_arrays(
        [
            pa.array([ids[d] for d in emb.doc], pa.string()),
            pa.array(chunk, pa.int32()),
            pa.array(emb.tokens, pa.int32()),
            pa.array(emb.doc_tokens[emb.doc], pa.int64()),
            pa.array(emb.cut[emb.doc], pa.bool_()),
            pa.FixedSizeListArray.from_arrays(flat, dim),
            pa.array([text_hash(texts[d], "sha1") if texts is not None else None for d in emb.doc], pa.string()),
        ],
        schema=schema,
    )


def read_identity(path: Path) -> dict | None:
    meta = open_parquet(path).schema_arrow.metadata or {}
    raw = meta.get(META_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


@dataclass
class EmbedSummary:
    shards_written: int = 0
    shards_skipped: int = 0
    docs: int = 0
    chunks: int = 0
    chunked: int = 0
    truncated: int = 0
    key: str = ""
    redone: list = field(default_factory=list)  # why earlier sidecars were written again
    seconds: float = 0.0
    text_bytes: int = 0  # UTF-8 bytes of the texts embedded
    per_shard: list = field(default_factory=list)  # {"name", "rows", "bytes", "seconds"} per written shard
    leased: list = field(default_factory=list)  # (shard, holder): left to another live run writing it

    def __str__(self) -> str:
        from .provenance import describe_redone

        redone = describe_redone(self.redone)
        return (f"embeddings {self.key}: {self.shards_written} shards written"
                + (f" ({redone})" if redone else "") + f", {self.shards_skipped} already "
                f"complete; {self.docs:,} documents, {self.chunks:,} chunks; {self.chunked:,} documents "
                f"chunked, {self.truncated:,} truncated" + "".join(f"\n{line}" for line in leased_lines(self.leased)))

    def stats(self) -> dict:
        """Machine-readable statistics (``--stats-json``)."""
        from .stats import rate

        return {
            "command": "embed", "key": self.key, "seconds": round(self.seconds, 6),
            "shards": {"written": self.shards_written, "skipped": self.shards_skipped, "failed": 0,
                       "leased": len(self.leased)},
            "rows": {"in": self.docs, "chunks": self.chunks, "chunked": self.chunked, "truncated": self.truncated},
            "bytes": {"in": self.text_bytes},
            "docs_per_second": rate(self.docs, self.seconds), "redone": list(self.redone),
            "per_shard": list(self.per_shard), "failures": [],
        }

    def add(self, done) -> None:
        """Fold one shard's fate (:class:`phifilter.shardjob.Done`) in (a skipped one counts as skipped)."""
        if done.status == "leased":
            self.leased.append((str(done.shard.name), done.holder))
        elif done.status == "skipped":
            self.shards_skipped += 1
        else:
            c = done.outcome
            self.shards_written += 1
            self.redone += [done.redone] if done.redone else []
            self.docs, self.chunks = self.docs + c["docs"], self.chunks + c["chunks"]
            self.chunked, self.truncated = self.chunked + c["chunked"], self.truncated + c["truncated"]
            self.text_bytes += c["bytes"]
            self.per_shard.append({"name": str(done.shard.name), "rows": c["rows"], "bytes": c["bytes"],
                                   "seconds": round(done.seconds, 6)})


def is_sidecar(path: Path) -> bool:
    """Ours: a Parquet file that phifilter embed wrote (its metadata names the format); local or on
    a store (a rerun of ``embed -o s3://...`` claims the sidecars it wrote)."""
    if path.suffix != ".parquet":
        return False
    try:
        raw = (open_parquet(path).schema_arrow.metadata or {}).get(META_KEY)
        return raw is not None and json.loads(raw).get("format") == FORMAT
    except (InputError, pa.ArrowException, OSError, ValueError, AttributeError):
        return False


def check_embed_inputs(inputs, output_dir, text_column: str = "text", stats_json=None, task: tuple = (None, None)):
    """Everything checkable before an embedder is loaded: shards, text column, output folder,
    ``--stats-json``, this task's share of the shards (:func:`phifilter.shardjob.claim`)."""
    from .shardjob import claim

    claimed = claim(inputs, output_dir, is_sidecar, "an embedding cache", stats_json, task)
    for s in claimed.shards:
        check_text_column(open_parquet(s.path).schema_arrow, text_column, s.path)
    return claimed


class EmbedJob(ShardJob):
    """Embed one shard (:mod:`phifilter.shardjob`): its sidecar, with the embedder in its record."""

    command, desc = "embed", "shards"

    def __init__(self, embedder, chunking, max_chunks, text_column, id_column, read_batch_rows, progress):
        from .provenance import model_identity

        self.embedder, self.chunking, self.max_chunks, self.progress = embedder, chunking, max_chunks, progress
        self.text_column, self.id_column, self.read_batch_rows = text_column, id_column, read_batch_rows
        ident = identity(embedder, chunking, max_chunks)
        self.schema, self.summary = sidecar_schema(ident["dim"], ident), EmbedSummary(key=ident["key"])
        self.model = model_identity(ident["sha256"], **{k: v for k, v in ident.items() if k not in ("sha256", "key")})

    owns = staticmethod(is_sidecar)

    def output(self, out_dir, shard):
        return output_path(out_dir, shard, "parquet")  # a sidecar is Parquet whatever the shard's format

    def record(self, shard) -> dict:
        from .provenance import run_record

        has_id = bool(self.id_column and self.id_column in open_parquet(shard.path).schema_arrow.names)
        return run_record(shard.path, model=self.model, command="embed",
                          columns={"text": self.text_column, "id": self.id_column if has_id else None})

    def write(self, shard, out, record: dict) -> dict:
        from .provenance import with_record

        schema, id_column = with_record(self.schema, record), record["columns"]["id"]
        columns = [self.text_column] + ([id_column] if id_column else [])
        counts = dict.fromkeys(("rows", "bytes", "docs", "chunks", "chunked", "truncated"), 0)
        with ShardWriter(out, schema) as writer:
            for batch in iter_batches(shard.path, self.read_batch_rows, columns=columns):
                texts = texts_from_array(batch.column(0))
                counts["rows"] += len(texts)
                counts["bytes"] += sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
                emb = embed_documents(self.embedder, texts, self.chunking, self.max_chunks, progress=self.progress)
                writer.write_batch(to_batch(document_ids(batch, id_column, texts), emb, schema, texts))
                for key, n in (("docs", emb.n_docs), ("chunks", len(emb.doc)), ("chunked", emb.chunked),
                               ("truncated", emb.truncated)):
                    counts[key] += int(n)
        return counts

    def seen(self, done) -> None:
        self.summary.add(done)


def embed_shards(inputs, output_dir, embedder, chunking: str = "truncate", max_chunks: int = MAX_CHUNKS,
                 text_column: str = "text", id_column: str | None = "id", read_batch_rows: int = 2048,
                 progress: bool = False, stats_json: str | os.PathLike | None = None,
                 task_index: int | None = None, num_tasks: int | None = None) -> EmbedSummary:
    """Write an embedding sidecar per input shard (resumable: complete sidecars of the same key are
    kept), each under its lease (:mod:`phifilter.shardjob`).

    ``stats_json``: also write the run's statistics there (:meth:`EmbedSummary.stats`).
    ``task_index``/``num_tasks``: only this task's share of the shards (``--task-index/--num-tasks``;
    None: Slurm's array variables, else every shard).
    """
    import time

    from . import shardjob

    began = time.perf_counter()
    claimed = check_embed_inputs(inputs, output_dir, text_column, stats_json, (task_index, num_tasks))
    job = EmbedJob(embedder, chunking, max_chunks, text_column, id_column, read_batch_rows, progress)
    shardjob.run_shards(job, claimed, progress and len(claimed.shards) >= 2)
    return shardjob.finish(job.summary, stats_json, began)


@dataclass
class EmbedConfig:
    """Options of `phifilter embed`."""

    embedder: str | None = None  # a name or folder (see hf_embed.make_embedder); None: the default
    device: str = "auto"
    max_length: int = MAX_LENGTH
    batch_size: int = EMBED_BATCH_SIZE
    chunking: str = "truncate"  # or "chunk": one embedding per chunk
    max_chunks: int = MAX_CHUNKS
    text_column: str = "text"
    id_column: str | None = "id"  # empty or None: ids are hashes of the text
    read_batch_rows: int = 2048
    task_index: int | None = None  # a partitioned run's task (None: $SLURM_ARRAY_TASK_ID, else 0)
    num_tasks: int | None = None  # None: $SLURM_ARRAY_TASK_COUNT, else 1


def embed_corpus(inputs, output_dir, config: EmbedConfig | None = None, progress: bool = False,
                 stats_json: str | os.PathLike | None = None, **options) -> EmbedSummary:
    """`phifilter embed`: check the inputs, load the embedder and write the sidecars
    (:func:`embed_shards`). ``options`` (device=..., chunking=...) override fields of ``config``."""
    import dataclasses

    from .hf_embed import make_embedder

    cfg = dataclasses.replace(config or EmbedConfig(), **options)
    task = (cfg.task_index, cfg.num_tasks)
    check_embed_inputs(inputs, output_dir, cfg.text_column, stats_json, task)  # in its first second, not after loading the model
    emb = make_embedder(cfg.embedder, device=cfg.device, max_length=cfg.max_length, batch_size=cfg.batch_size)
    return embed_shards(inputs, output_dir, emb, chunking=cfg.chunking, max_chunks=cfg.max_chunks,
                        text_column=cfg.text_column, id_column=cfg.id_column or None,
                        read_batch_rows=cfg.read_batch_rows, progress=progress, stats_json=stats_json,
                        task_index=cfg.task_index, num_tasks=cfg.num_tasks)


@dataclass
class EmbeddingCache:
    """Every sidecar under a folder (or one file), indexed by document id."""

    path: Path
    ident: dict
    vectors: np.ndarray = field(repr=False)
    tokens: np.ndarray = field(repr=False)
    doc_tokens: np.ndarray = field(repr=False)
    cut: np.ndarray = field(repr=False)
    rows: dict = field(repr=False)  # (id, text sha1) or, for old sidecars, id -> (first row, rows)
    by_text: bool = True  # keyed by id and text hash (False: a sidecar written before the hash)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "EmbeddingCache":
        """Every sidecar under ``path`` (a folder or one file; a URL is read from a local copy,
        downloaded once per version of its files: :func:`phifilter.location.local_folder`)."""
        from .location import local_folder

        path = local_folder(path)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
        if not path.exists():
            raise InputError(f"{path}: no such embeddings folder (write one with `phifilter embed`)")
        if not files:
            raise InputError(f"{path}: no embedding files (write them with `phifilter embed`)")
        ident, parts, owner = None, [], []
        for f in files:
            this = read_identity(f)
            if this is None or this.get("format") != FORMAT:
                raise InputError(f"{f}: not a phifilter embeddings file (write it with `phifilter embed`)")
            if ident is not None and this["key"] != ident["key"]:
                raise InputError(f"{f}: embedded with other settings than {files[0]}; keep one embedder per folder")
            ident = this
            part = open_parquet(f).read()
            if "text_sha1" not in part.schema.names:
                part = part.append_column("text_sha1", pa.nulls(len(part), pa.string()))
            parts.append(part.select(["id", "chunk", "tokens", "doc_tokens", "cut", "embedding", "text_sha1"])
                         .replace_schema_metadata(None))
            owner += [f] * len(part)
        table = pa.concat_tables(parts)
        dim = int(ident["dim"])
        emb = table.column("embedding").combine_chunks()
        vectors = emb.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)
        ids = table.column("id").to_pylist()
        hashes = table.column("text_sha1").to_pylist()
        chunks = table.column("chunk").to_pylist()
        by_text = all(h is not None for h in hashes)
        rows: dict = {}
        key, skip = None, False
        for i, (doc_id, h, c) in enumerate(zip(ids, hashes, chunks)):
            if c == 0:  # a new document starts
                key = (doc_id, h) if by_text else doc_id
                skip = key in rows
                if skip and not by_text:
                    raise InputError(
                        f"{owner[i]}: id '{doc_id}' is repeated (also in {owner[rows[key][0]]}), and this cache "
                        "was written before embeddings were keyed by text too; rerun `phifilter embed` "
                        "(or give every document a unique id)"
                    )
                if not skip:
                    rows[key] = (i, 0)
            if not skip and key is not None:
                first, n = rows[key]
                rows[key] = (first, n + 1)
        col = lambda name: table.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
        return cls(path, ident, vectors, col("tokens").astype(np.int64), col("doc_tokens").astype(np.int64),
                   col("cut").astype(bool), rows, by_text)

    def check(self, expected: dict, what: str) -> None:
        """InputError unless this cache was written with the embedder and chunking ``expected``."""
        if self.ident.get("key") != expected.get("key"):
            diff = [k for k in ("embedder", "sha256", "max_length", "chunking", "max_chunks")
                    if self.ident.get(k) != expected.get(k)]
            raise InputError(
                f"{self.path}: embeddings were written with other settings than {what} needs "
                f"(differs in: {', '.join(diff) or 'key'}); rerun `phifilter embed` with the same "
                f"--embedder/--max-length/--chunking"
            )

    def lookup(self, ids: Sequence[str], texts: Sequence[str] | None = None) -> tuple[DocEmbeddings | None, list[int]]:
        """Embeddings of the documents found (in the order given) and the positions of those missing.

        A document is found by its id and the hash of its text; without ``texts`` only a cache
        written before text hashes (keyed by id alone) can answer, anything else is "missing".
        """
        if self.by_text:
            keys = [(doc_id, text_hash(t, "sha1")) for doc_id, t in zip(ids, texts)] if texts is not None else [None] * len(ids)
        else:
            keys = list(ids)
        found, missing = [], []
        for k, key in enumerate(keys):
            (found if key in self.rows else missing).append(k)
        if not found:
            return None, missing
        spans = [self.rows[keys[k]] for k in found]
        take = np.concatenate([np.arange(a, a + n) for a, n in spans])
        doc = np.concatenate([np.full(n, j, np.int64) for j, (_, n) in enumerate(spans)])
        firsts = np.array([a for a, _ in spans])
        emb = DocEmbeddings(self.vectors[take], doc, self.tokens[take], self.doc_tokens[firsts],
                            self.ident["chunking"], self.cut[firsts])
        return emb, missing


def merge(n_docs: int, parts: list[tuple[list[int], DocEmbeddings]]) -> DocEmbeddings:
    """Put embeddings of disjoint document sets (positions, embeddings) back in document order."""
    dim = next(e.vectors.shape[1] for _, e in parts)
    where = {}
    for p, (positions, emb) in enumerate(parts):
        for j, pos in enumerate(positions):
            where[pos] = (p, j)
    vec, doc, tok, dtok, cut = [], [], [], np.zeros(n_docs, np.int64), np.zeros(n_docs, bool)
    for pos in range(n_docs):
        p, j = where[pos]
        emb = parts[p][1]
        rows = np.flatnonzero(emb.doc == j)
        vec.append(emb.vectors[rows])
        doc.append(np.full(len(rows), pos, np.int64))
        tok.append(emb.tokens[rows])
        dtok[pos], cut[pos] = emb.doc_tokens[j], emb.cut[j]
    chunking = parts[0][1].chunking
    if not vec:
        return DocEmbeddings(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64),
                             dtok, chunking, cut)
    return DocEmbeddings(np.concatenate(vec), np.concatenate(doc), np.concatenate(tok), dtok, chunking, cut)
