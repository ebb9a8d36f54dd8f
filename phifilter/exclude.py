"""Keep evaluation data out of training data: one rule, used by `sample --exclude` and `ablate`.

An exclusion set holds evaluation texts: for `sample`, every string field of every record of
files such as HumanEval (``.jsonl.gz``) or MBPP (``.jsonl``), list elements one by one; for
`ablate`, the prompts, reference solutions, tests and problem statements of both benchmarks
(:func:`phifilter.pretrain.evalsets.contamination_texts`).

Texts are compared as lower-cased words (``\\w+`` runs), so whitespace, indentation, line
endings, punctuation and case do not hide a copy. A document overlaps the set when

* **exact**: its words are exactly the words of an evaluation text. This is what catches texts
  too short for the n-gram test (a short MBPP test line or solution, a terse problem statement);
* **ngram**: it shares a run of ``ngram`` consecutive words (13 by default: the GPT-3 paper's
  test) with an evaluation text. 13 words are long enough that ordinary code idioms rarely match
  by chance and short enough to catch a pasted solution inside a bigger file. A run only counts
  when more than half of its words start with a letter and have two or more characters, and at
  least 5 in 13 of them (the same share for another ``ngram``) differ: runs of numbers, single
  letters or loop indices ("0 0 0 ...", "a b c d ...", a list of primes, "for i in range 1 n 1
  for j ...") occur in countless unrelated programs.

Both rules are one pass over the document's words. Only words that occur in the evaluation
texts can be part of a shared run, so a document becomes an array of evaluation-vocabulary ids
(-1 for any other word) whose windows are hashed with numpy in ``ngram`` vectorised steps; a
64-bit polynomial hash makes a false match about as likely as a cosmic ray.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import InputError

WORD = re.compile(r"\w+")
NGRAM = 13
EXCLUSION_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
_MULT = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit constant; the hash's arithmetic wraps mod 2**64


def words(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation and whitespace dropped): the unit of comparison."""
    return WORD.findall(text.lower())


def min_informative(n: int) -> int:
    """Words of an n-word run that must start with a letter and have 2+ characters (7 of 13)."""
    return n // 2 + 1


def min_distinct(n: int) -> int:
    """Different words an n-word run must hold (5 of 13, the same share for another n)."""
    return max(1, -(-5 * n // 13))


def _digest(toks: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(toks).encode("utf-8", "replace"), digest_size=16).digest()


class ExclusionSet:
    """Evaluation texts no document may overlap; see the module docstring for the rule.

    ``check(text)`` says how a document overlaps ("exact", "ngram" or None), ``matches(text)``
    whether it does. Texts with fewer than ``min_tokens`` words are not added.
    """

    def __init__(self, ngram: int = NGRAM, min_tokens: int = 1):
        if ngram < 1 or min_tokens < 1:
            raise ValueError("ngram and min_tokens must be positive")
        self.ngram = ngram
        self.min_tokens = min_tokens
        self.items = 0
        self.files: list[str] = []
        self._texts: list[list[str]] = []
        self._index = None  # (exact digests, vocabulary, informative flags, sorted n-gram hashes)

    @classmethod
    def from_texts(cls, texts: Iterable[str], ngram: int = NGRAM, min_tokens: int = 1) -> "ExclusionSet":
        ex = cls(ngram=ngram, min_tokens=min_tokens)
        for t in texts:
            ex.add(t)
        return ex

    def __len__(self) -> int:
        return self.items

    def add(self, text: str) -> bool:
        """Add one evaluation text; returns False when it has fewer than ``min_tokens`` words."""
        toks = words(text)
        if len(toks) < self.min_tokens:
            return False
        self._texts.append(toks)
        self._index = None
        self.items += 1
        return True

    def add_file(self, path: str | os.PathLike) -> int:
        """Add every string field of every record in a .jsonl[.gz], .json[.gz] or .parquet file."""
        added = sum(self.add(s) for s in _strings_in_file(Path(path)))
        self.files.append(os.fspath(path))
        return added

    def check(self, text: str) -> str | None:
        """"exact" or "ngram" when ``text`` overlaps an evaluation text (module docstring), else None."""
        if not self.items:
            return None
        exact, vocab, informative, grams = self._built()
        toks = words(text)
        if _digest(toks) in exact:
            return "exact"
        if grams.size and len(toks) >= self.ngram:
            h = self._window_hashes(self._ids(toks, vocab), informative)
            if h.size:
                # grams is sorted: a binary search per window beats np.isin's sort of both.
                pos = np.searchsorted(grams, h).clip(max=grams.size - 1)
                if (grams[pos] == h).any():
                    return "ngram"
        return None

    def matches(self, text: str) -> bool:
        """True when ``text`` overlaps an evaluation text."""
        return self.check(text) is not None

    def _built(self):
        if self._index is None:
            exact = {_digest(t) for t in self._texts}
            vocab = {w: i for i, w in enumerate(sorted({w for t in self._texts for w in t}))}
            informative = np.zeros(len(vocab) + 1, dtype=bool)  # the last entry: id -1
            for w, i in vocab.items():
                informative[i] = len(w) > 1 and w[0].isalpha()
            hashes = [self._window_hashes(self._ids(t, vocab), informative) for t in self._texts]
            hashes = [h for h in hashes if h.size]
            grams = np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)
            self._index = (exact, vocab, informative, grams)
        return self._index

    @staticmethod
    def _ids(toks: Sequence[str], vocab: dict):
        get = vocab.get
        return np.fromiter((get(w, -1) for w in toks), dtype=np.int64, count=len(toks))

    def _window_hashes(self, ids, informative):
        """Hashes of every n-word window made only of evaluation words that counts (see above)."""
        n = self.ngram
        if ids.size < n:
            return np.zeros(0, np.uint64)
        # Window counts by cumulative sums: no out-of-vocabulary word, enough informative ones.
        bad = np.concatenate(([0], np.cumsum(ids < 0)))
        good = np.concatenate(([0], np.cumsum(informative[ids])))  # ids -1 -> False
        ok = ((bad[n:] - bad[:-n]) == 0) & ((good[n:] - good[:-n]) >= min_informative(n))
        if ok.any():
            windows = np.lib.stride_tricks.sliding_window_view(ids, n)[ok]
            srt = np.sort(windows, axis=1)
            distinct = 1 + (srt[:, 1:] != srt[:, :-1]).sum(axis=1)
            ok[np.flatnonzero(ok)[distinct < min_distinct(n)]] = False
        if not ok.any():
            return np.zeros(0, np.uint64)
        vals = (ids + 1).astype(np.uint64)
        h = np.zeros(ids.size - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * _MULT + vals[k : k + h.size]
        return h[ok]


def load_exclusions(paths: Sequence[str | os.PathLike], ngram: int = NGRAM, min_tokens: int = 1) -> ExclusionSet:
    """Build an :class:`ExclusionSet` from files; an unusable file is an InputError naming it."""
    ex = ExclusionSet(ngram=ngram, min_tokens=min_tokens)
    for p in paths:
        if ex.add_file(p) == 0:
            raise InputError(f"{p}: holds no text to exclude (no string field with at least {ex.min_tokens} "
                             "word(s)); give HumanEval/MBPP-like .jsonl, .json or .parquet files")
    return ex


def _strings_in_file(path: Path) -> Iterator[str]:
    name = path.name.lower()
    if not name.endswith(EXCLUSION_SUFFIXES):
        raise InputError(f"{path}: exclusion files must be {', '.join(EXCLUSION_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if name.endswith(".parquet"):
        yield from _strings_in_parquet(path)
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if name.endswith((".jsonl", ".jsonl.gz")):
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{path}: line {lineno} is not JSON ({e.msg})") from None
                    yield from _strings_in(record)
            else:
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
                yield from _strings_in(data)
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _strings_in(value, depth: int = 0) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif depth < 3 and isinstance(value, dict):
        for v in value.values():
            yield from _strings_in(v, depth + 1)
    elif depth < 3 and isinstance(value, list):
        for v in value:
            yield from _strings_in(v, depth + 1)


def _strings_in_parquet(path: Path) -> Iterator[str]:
    from .corpus import is_text_type, iter_batches, open_parquet, texts_from_array

    pf = open_parquet(path)
    columns = [f.name for f in pf.schema_arrow if is_text_type(f.type)]
    if not columns:
        raise InputError(f"{path}: has no string columns to exclude")
    for batch in iter_batches(path, columns=columns, parquet_file=pf):
        for col in batch.columns:
            yield from (t for t in texts_from_array(col) if t)
