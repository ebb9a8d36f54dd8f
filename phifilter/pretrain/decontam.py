"""Remove evaluation problems from training data: exact matches and 13-gram overlap.

Words are ``\\w+`` runs, lower-cased, so formatting, punctuation and comments-vs-code layout do
not hide a copied solution. A document is contaminated if it equals an evaluation text (after
collapsing whitespace) or shares any run of 13 consecutive words with one (the GPT-3 paper's
n-gram test). 13 words is long enough that ordinary code idioms rarely match by chance and
short enough to catch a pasted solution inside a bigger file. Windows of mostly numbers or
single letters ("0 0 0 ...", "a b c d ...", a list of primes) match unrelated files by the
dozen, so a window only counts when it holds at least 7 words that start with a letter and
are two characters or longer, and at least 5 different words.

Speed: only words that occur in the evaluation sets can be part of a shared 13-gram, so each
document becomes an array of evaluation-vocabulary ids (-1 for any other word) and its 13-gram
windows are hashed with numpy in 13 vectorised steps; a 64-bit polynomial hash makes a false
match about as likely as a cosmic ray.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

import numpy as np

WORD = re.compile(r"\w+")
NGRAM = 13
MIN_INFORMATIVE = 7  # words per window that start with a letter and have 2+ characters
MIN_DISTINCT = 5  # different words per window
_MULT = np.uint64(0x9E3779B97F4A7C15)  # an odd 64-bit constant; arithmetic wraps mod 2**64


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def normalise(text: str) -> str:
    return " ".join(text.split())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(normalise(text).encode("utf-8", "replace"), digest_size=16).digest()


class Decontaminator:
    """Flags documents that overlap given evaluation texts (``check`` -> "exact", "ngram" or None)."""

    def __init__(self, eval_texts: Iterable[str], n: int = NGRAM):
        self.n = n
        texts = [t for t in eval_texts if t.strip()]
        self.exact_ = {_digest(t) for t in texts}
        vocab = sorted({w for t in texts for w in words(t)})
        self.vocab_ = {w: i for i, w in enumerate(vocab)}
        self.informative_ = np.array([len(w) > 1 and w[0].isalpha() for w in vocab] + [False])
        hashes = [self._window_hashes(self._ids(t)) for t in texts]
        hashes = [h for h in hashes if h.size]
        self.ngrams_ = np.unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)

    def _ids(self, text: str) -> np.ndarray:
        get = self.vocab_.get
        return np.fromiter((get(w, -1) for w in words(text)), dtype=np.int64)

    def _window_hashes(self, ids: np.ndarray) -> np.ndarray:
        """Hashes of every n-word window made only of evaluation words."""
        n = self.n
        if ids.size < n:
            return np.zeros(0, np.uint64)
        # Window counts by cumulative sums: no out-of-vocabulary word, enough informative ones.
        bad = np.concatenate(([0], np.cumsum(ids < 0)))
        good = np.concatenate(([0], np.cumsum(self.informative_[ids])))  # ids -1 -> False
        ok = ((bad[n:] - bad[:-n]) == 0) & ((good[n:] - good[:-n]) >= MIN_INFORMATIVE)
        if ok.any():
            windows = np.lib.stride_tricks.sliding_window_view(ids, n)[ok]
            srt = np.sort(windows, axis=1)
            distinct = 1 + (srt[:, 1:] != srt[:, :-1]).sum(axis=1)
            ok[np.flatnonzero(ok)[distinct < MIN_DISTINCT]] = False
        if not ok.any():
            return np.zeros(0, np.uint64)
        vals = (ids + 1).astype(np.uint64)
        h = np.zeros(ids.size - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = h * _MULT + vals[k : k + h.size]
        return h[ok]

    def check(self, text: str) -> str | None:
        if _digest(text) in self.exact_:
            return "exact"
        if self.ngrams_.size:
            h = self._window_hashes(self._ids(text))
            if h.size:
                # ngrams_ is sorted: a binary search per window beats np.isin's sort of both.
                pos = np.searchsorted(self.ngrams_, h).clip(max=self.ngrams_.size - 1)
                if (self.ngrams_[pos] == h).any():
                    return "ngram"
        return None
