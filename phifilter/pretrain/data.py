"""Training data for the ablation: scan, decontaminate, split, tokenise, and write arm memmaps.

The corpus is read twice, streaming, never held in memory:

1. ``scan_corpus``: per document its score, size and whether it overlaps HumanEval/MBPP
   (those are dropped from every arm and counted).
2. ``tokenize_corpus``: every clean document becomes BPE ids followed by an end-of-text id,
   appended to one uint16 file (``all.bin``) with an offsets array, in corpus order.

Arms are then sets of document indices, and each arm's train and validation files are
gathered from ``all.bin`` by those indices. The validation split is drawn from all documents
*before* the arms, so no arm ever trains on another arm's validation documents and every model
can be scored on every arm's validation split.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..atomic import write_atomic, write_text
from ..corpus import Shard, check_text_column, iter_batches, open_parquet, texts_from_array
from ..errors import InputError, OutputError
from ..exclude import ExclusionSet

EOT = "<|endoftext|>"
TOKEN_DTYPE = np.uint16  # vocabularies up to 65,536 ids; half the disk of int32
READ_ROWS = 512
CLEAN, EXACT, NGRAM = 0, 1, 2


@dataclass
class DocTable:
    """One entry per input document, in corpus order (shard by shard, row by row)."""

    score: np.ndarray  # float32, NaN where the score is null
    nbytes: np.ndarray  # int64 UTF-8 bytes of the text
    contamination: np.ndarray  # int8: CLEAN, EXACT or NGRAM

    def __len__(self) -> int:
        return len(self.score)

    @property
    def clean(self) -> np.ndarray:
        return self.contamination == CLEAN

    def save(self, path: Path) -> None:
        write_atomic(path, lambda tmp: _save_npz(tmp, score=self.score, nbytes=self.nbytes,
                                                 contamination=self.contamination))

    @classmethod
    def load(cls, path: Path) -> "DocTable":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["score"], z["nbytes"], z["contamination"])


def _save_npz(tmp: Path, **arrays) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)


def _save_npy(tmp: Path, array: np.ndarray) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
        np.save(f, array)


def check_scored_shards(shards: Sequence[Shard], text_column: str, score_column: str) -> None:
    for s in shards:
        schema = open_parquet(s.path).schema_arrow
        check_text_column(schema, text_column, s.path)
        if score_column not in schema.names:
            raise InputError(
                f"{s.path}: no column '{score_column}'; is it a scored shard? (run `phifilter score` first)"
            )


def iter_texts(shards: Sequence[Shard], text_column: str, columns: Sequence[str] = ()) -> Iterator[tuple[list[str], dict]]:
    """(texts, {column: numpy array}) per record batch of every shard, in corpus order."""
    for s in shards:
        for batch in iter_batches(s.path, batch_size=READ_ROWS, columns=[text_column, *columns]):
            extra = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in columns}
            yield texts_from_array(batch.column(text_column)), extra


def scan_corpus(shards: Sequence[Shard], text_column: str, score_column: str,
                decontaminator: ExclusionSet, progress: bool = False) -> DocTable:
    from tqdm import tqdm

    scores, sizes, flags = [], [], []
    total = sum(open_parquet(s.path).metadata.num_rows for s in shards)
    with tqdm(total=total, unit="doc", desc="scanning + decontaminating", disable=not progress) as bar:
        for texts, extra in iter_texts(shards, text_column, [score_column]):
            score = np.asarray(extra[score_column], dtype=np.float32)  # nulls arrive as NaN
            scores.append(score)
            sizes.append(np.fromiter((len(t.encode("utf-8", "replace")) for t in texts), np.int64, len(texts)))
            verdicts = (decontaminator.check(t) for t in texts)
            flags.append(np.fromiter(({None: CLEAN, "exact": EXACT, "ngram": NGRAM}[v] for v in verdicts),
                                     np.int8, len(texts)))
            bar.update(len(texts))
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)  # noqa: E731
    return DocTable(cat(scores, np.float32), cat(sizes, np.int64), cat(flags, np.int8))


# ---------------------------------------------------------------------------------------------
# tokeniser


def train_tokenizer(texts: Iterator[str], vocab_size: int, path: Path):
    """Byte-level BPE (GPT-2 style: any input is encodable, no unknown token), trained locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise InputError(f"vocab_size {vocab_size}: at most 65,536 ids fit the uint16 token files")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    write_atomic(path, lambda tmp: tok.save(str(tmp)))
    return tok


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def tokenize_corpus(shards: Sequence[Shard], text_column: str, keep: np.ndarray, tokenizer,
                    out_bin: Path, out_offsets: Path, progress: bool = False) -> np.ndarray:
    """Append ids + EOT of every kept document to ``out_bin``; returns offsets [n_docs + 1].

    Dropped documents get zero length, so document i is always ``bin[offsets[i]:offsets[i+1]]``.
    """
    from tqdm import tqdm

    eot = tokenizer.token_to_id(EOT)
    lengths = np.zeros(len(keep), dtype=np.int64)
    offsets: list[np.ndarray] = []

    def fill(tmp: Path) -> None:
        i = 0
        with open(tmp, "wb") as f, tqdm(total=int(keep.sum()), unit="doc", desc="tokenising",
                                        disable=not progress) as bar:
            for texts, _ in iter_texts(shards, text_column):
                idx = [j for j in range(len(texts)) if keep[i + j]]
                if idx:
                    encodings = tokenizer.encode_batch([texts[j] for j in idx], add_special_tokens=False)
                    for j, enc in zip(idx, encodings):
                        ids = np.asarray(enc.ids + [eot], dtype=TOKEN_DTYPE)
                        f.write(ids.tobytes())
                        lengths[i + j] = ids.size
                    bar.update(len(idx))
                i += len(texts)
        if i != len(keep):
            raise InputError(f"the input shards changed while reading ({i} rows now, {len(keep)} at the scan); rerun")
        offsets.append(np.concatenate(([0], np.cumsum(lengths))))
        write_atomic(out_offsets, lambda t: _save_npy(t, offsets[0]))  # in place before the tokens

    write_atomic(out_bin, fill)
    return offsets[0]


# ---------------------------------------------------------------------------------------------
# arms


@dataclass
class ArmData:
    """Document counts and token counts of one arm's train and validation files."""

    train_docs: int
    train_tokens: int
    val_docs: int
    val_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def split_validation(table: DocTable, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation documents (clean ones only), drawn before any arm."""
    rng = np.random.default_rng([seed, 0x5EED])
    return table.clean & (rng.random(len(table)) < fraction)


def filtered_docs(table: DocTable, tokens: np.ndarray, train: np.ndarray, val: np.ndarray,
                  threshold: float | None, top_fraction: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(train indices, val indices, score cut-off) of the filtered arm.

    ``top_fraction`` keeps the best-scored training documents until they hold that share of
    the training tokens (ties broken by corpus order); validation documents with a score at or
    above the last one kept form the filtered validation split.
    """
    score = np.nan_to_num(table.score, nan=-np.inf)
    if top_fraction is not None:
        pool = np.flatnonzero(train)
        order = pool[np.argsort(-score[pool], kind="stable")]
        target = top_fraction * tokens[pool].sum()
        n = int(np.searchsorted(np.cumsum(tokens[order]), target)) + 1
        chosen = np.sort(order[: min(n, order.size)])
        cutoff = float(score[order[min(n, order.size) - 1]]) if order.size else 1.0
    else:
        cutoff = float(threshold)
        chosen = np.flatnonzero(train & (score >= cutoff))
    return chosen, np.flatnonzero(val & (score >= cutoff)), cutoff


def random_docs(pool: np.ndarray, tokens: np.ndarray, target_tokens: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random subset of ``pool`` holding ``target_tokens`` (to within one document)."""
    if target_tokens <= 0 or pool.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(pool)
    n = int(np.searchsorted(np.cumsum(tokens[order]), target_tokens)) + 1
    return np.sort(order[: min(n, order.size)])


def write_arm(all_tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray, path: Path) -> int:
    """Gather documents from the corpus token file into ``path``; returns tokens written."""
    written = 0

    def fill(tmp: Path) -> None:
        nonlocal written
        with open(tmp, "wb") as f:
            # Contiguous runs of documents are copied as one slice: corpus-order arms are mostly runs.
            if docs.size:
                breaks = np.flatnonzero(np.diff(docs) != 1) + 1
                for run in np.split(docs, breaks):
                    chunk = all_tokens[offsets[run[0]] : offsets[run[-1] + 1]]
                    f.write(np.ascontiguousarray(chunk).tobytes())
                    written += chunk.size

    write_atomic(path, fill)
    return written


def open_tokens(path: Path) -> np.ndarray:
    """A read-only uint16 memmap (an empty array for an empty file, which np.memmap refuses)."""
    if not path.is_file():
        raise OutputError(f"{path}: token file missing; delete the data/ folder of the run to rebuild it")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r")


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: unreadable ({e}); delete it to redo that step") from None


def write_json(path: Path, obj, strict: bool = False) -> None:
    """Write JSON atomically. ``strict``: NaN and infinities become null, so every JSON reader
    accepts the file (for results.json; internal files keep NaN, which Python reads back)."""
    if strict:
        obj = finite_or_none(obj)
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=_json_default, allow_nan=not strict))


def finite_or_none(obj, where: str = "", found: list | None = None):
    """``obj`` with every NaN or infinite float replaced by None; their paths appended to ``found``."""
    if isinstance(obj, (float, np.floating)):
        if not np.isfinite(obj):
            if found is not None:
                found.append(where or "(value)")
            return None
        return float(obj)
    if isinstance(obj, dict):
        return {k: finite_or_none(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
