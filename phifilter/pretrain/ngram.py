"""A count-based bigram model: the cheap reference every GPT in the ablation should beat.

P(b | a) = (count(a, b) + beta * P(b)) / (count(a) + beta), with P(b) the add-one unigram
distribution: Dirichlet smoothing towards the unigram. beta is picked from a small grid on
held-out tokens (``tune``). Counts are kept sparse (sorted pair codes), so a 65k
vocabulary costs memory in the number of distinct pairs seen, not vocab squared.
"""

from __future__ import annotations

import numpy as np

BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


class BigramModel:
    """scikit-learn style: ``fit(tokens)`` learns counts (attributes ending in ``_``)."""

    def __init__(self, vocab_size: int, beta: float = 2.0):
        self.vocab_size = vocab_size
        self.beta = beta

    def fit(self, tokens: np.ndarray, chunk: int = 1 << 24) -> "BigramModel":
        V = self.vocab_size
        tokens = np.asarray(tokens)
        unigram = np.bincount(tokens.astype(np.int64), minlength=V).astype(np.float64)
        self.unigram_ = (unigram + 1.0) / (unigram.sum() + V)
        # Pair counts by chunks (overlapping by one token) so memory stays bounded.
        codes, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for start in range(0, max(0, tokens.size - 1), chunk):
            part = tokens[start : start + chunk + 1].astype(np.int64)
            c, n = np.unique(part[:-1] * V + part[1:], return_counts=True)
            codes, counts = _merge(codes, counts, c, n)
        self.pair_codes_, self.pair_counts_ = codes, counts
        self.context_counts_ = np.bincount(codes // V, weights=counts, minlength=V)
        return self

    def nll(self, tokens: np.ndarray, beta: float | None = None) -> float:
        """Mean negative log-likelihood (nats per token) of each token given the previous one."""
        tokens = np.asarray(tokens).astype(np.int64)
        if tokens.size < 2:
            return float("nan")
        return float(self._token_nll(tokens[:-1], tokens[1:], beta).mean())

    def _token_nll(self, prev: np.ndarray, nxt: np.ndarray, beta: float | None) -> np.ndarray:
        beta = self.beta if beta is None else beta
        code = prev * self.vocab_size + nxt
        pair = np.zeros(code.size)
        if self.pair_codes_.size:
            pos = np.searchsorted(self.pair_codes_, code).clip(max=self.pair_codes_.size - 1)
            hit = self.pair_codes_[pos] == code
            pair[hit] = self.pair_counts_[pos[hit]]
        p = (pair + beta * self.unigram_[nxt]) / (self.context_counts_[prev] + beta)
        return -np.log(p)

    def tune(self, val_tokens: np.ndarray, betas=BETAS) -> "BigramModel":
        """Pick the smoothing weight with the lowest loss on validation tokens."""
        if np.asarray(val_tokens).size >= 2:
            self.beta = min(betas, key=lambda b: self.nll(val_tokens, b))
        return self


def _merge(codes_a, counts_a, codes_b, counts_b):
    codes = np.concatenate((codes_a, codes_b))
    counts = np.concatenate((counts_a, counts_b))
    uniq, inverse = np.unique(codes, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts).astype(np.int64)
