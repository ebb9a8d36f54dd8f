"""Keep evaluation data out of training data: find documents that overlap an exclusion set.

An exclusion set is built from files such as HumanEval (``.jsonl.gz``) or MBPP (``.jsonl``):
every string field of every record (prompts, solutions, tests; lists of strings element by
element) becomes one *item*. Texts are compared as lower-cased word tokens, so whitespace,
punctuation, line endings and indentation do not hide a copy.

A document matches when

* it shares any run of ``ngram`` consecutive words with an item (the usual n-gram overlap
  test for contamination; 13 words by default) that is mostly made of real words (see
  :func:`informative`), or
* an item that has no such n-gram (an MBPP prompt shorter than ``ngram`` words, or terse
  code made of single letters and numbers) appears in it whole.

Items shorter than ``min_tokens`` (task ids, entry-point names) are ignored: they would match
half the corpus. Both tests cost one pass over the document's tokens, whatever the set's size.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .errors import InputError

TOKEN_RE = re.compile(r"\w+")
EXCLUSION_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation and whitespace dropped): the unit of overlap."""
    return TOKEN_RE.findall(text.lower())


def informative(gram: Sequence[str]) -> bool:
    """True when most of an n-gram's tokens are real words (2+ characters with a letter).

    Runs of numbers, single letters or loop indices ("1 2 3 4 ...", "a b c d ...", "for i in
    range 1 n 1 for j ...") occur in countless unrelated programs: against HumanEval and MBPP,
    counting them flags 44 of the 1,164 files of TheAlgorithms/Python instead of 7.
    """
    words = sum(1 for t in gram if len(t) >= 2 and not t.isdigit() and any(c.isalpha() for c in t))
    return 2 * words > len(gram)


class ExclusionSet:
    """Items (texts) that no sampled document may overlap; see the module docstring."""

    def __init__(self, ngram: int = 13, min_tokens: int = 8):
        if ngram < 1 or min_tokens < 1:
            raise ValueError("ngram and min_tokens must be positive")
        self.ngram = ngram
        self.min_tokens = min(min_tokens, ngram)
        self.items = 0
        self.files: list[str] = []
        # Python's hash of a tuple of strings is stable within one process, which is all a
        # set that lives as long as the process needs; collisions (2**-64) are negligible.
        self._ngrams: set[int] = set()
        # Items without informative n-grams, found by their first min_tokens tokens, then confirmed whole.
        self._short: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return self.items

    def add(self, text: str) -> bool:
        """Add one item; returns False when it is too short to be used."""
        toks = tokenize(text)
        if len(toks) < self.min_tokens:
            return False
        n = self.ngram
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        kept = [hash(g) for g in grams if informative(g)]
        self._ngrams.update(kept)
        if not kept:
            # Too short for an n-gram, or made only of uninformative ones (terse code such as
            # "A[i] = A[i - 2] + 2 * B[i - 1]"): caught when it appears whole instead.
            anchor = hash(tuple(toks[: self.min_tokens]))
            self._short.setdefault(anchor, []).append(" " + " ".join(toks) + " ")
        self.items += 1
        return True

    def add_file(self, path: str | os.PathLike) -> int:
        """Add every string field of every record in a .jsonl[.gz], .json[.gz] or .parquet file."""
        added = sum(self.add(s) for s in _strings_in_file(Path(path)))
        self.files.append(os.fspath(path))
        return added

    def matches(self, text: str) -> bool:
        """True when ``text`` overlaps any item (see the module docstring)."""
        if not self.items:
            return False
        toks = tokenize(text)
        n, m = self.ngram, self.min_tokens
        if self._ngrams and len(toks) >= n:
            grams = self._ngrams
            for i in range(len(toks) - n + 1):
                if hash(tuple(toks[i : i + n])) in grams:
                    return True
        if self._short and len(toks) >= m:
            joined = None
            short = self._short
            for i in range(len(toks) - m + 1):
                candidates = short.get(hash(tuple(toks[i : i + m])))
                if candidates:
                    if joined is None:
                        joined = " " + " ".join(toks) + " "
                    if any(item in joined for item in candidates):
                        return True
        return False


def load_exclusions(paths: Sequence[str | os.PathLike], ngram: int = 13, min_tokens: int = 8) -> ExclusionSet:
    """Build an :class:`ExclusionSet` from files; an unusable file is an InputError naming it."""
    ex = ExclusionSet(ngram=ngram, min_tokens=min_tokens)
    for p in paths:
        if ex.add_file(p) == 0:
            raise InputError(f"{p}: holds no text long enough to exclude (at least {ex.min_tokens} tokens)")
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
