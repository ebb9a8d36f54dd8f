"""`filter --token-budget N`: keep the best documents of scored shards up to N tokens.

Tokens are counted with a named tokenizer (default: the tokenizer of the bundled model's
embedder, all-MiniLM-L6-v2), without special tokens and without truncation. Two passes, both
streaming: the first counts tokens per fine score bin (``select.BINS`` bins, the bin rule of
:mod:`phifilter.histogram`) over every shard and finds the boundary bin; the second keeps, shard
by shard, every document above the boundary bin and the boundary bin's documents in corpus
order whenever one still fits, so the kept tokens never exceed N and the result is deterministic.
NaN and null scores are never kept. Only documents at or above the boundary bin are tokenised
again in the second pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .corpus import iter_batches, texts_from_array
from .errors import InputError
from .histogram import bin_index

READ_ROWS = 4096


@dataclass
class TokenCounter:
    """Counts tokens per text with one named tokenizer."""

    name: str
    count: Callable[[list[str]], np.ndarray]


def token_counter(name: str | None = None) -> TokenCounter:
    """The tokenizer ``name``: None or "default" (the bundled embedder's), a folder or file with a
    ``tokenizer.json``, or a Hugging Face hub id (from the local cache when offline)."""
    from .embed import DEFAULT_EMBEDDER, bundled_model_path, tokenizable

    label = name or DEFAULT_EMBEDDER
    if name in (None, "default", DEFAULT_EMBEDDER):
        path = bundled_model_path() / "tokenizer.json"
    else:
        path = Path(name)
        path = path / "tokenizer.json" if path.is_dir() else path
    if path.is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:
            raise InputError(f"{path}: not a readable tokenizer.json ({e})") from None
        tok.no_truncation()
        tok.no_padding()

        def count(texts):
            enc = tok.encode_batch([tokenizable(t, len(t)) for t in texts], add_special_tokens=False)
            return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts))

        return TokenCounter(label, count)
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(name))
    except Exception as e:
        raise InputError(f"{name}: cannot load this tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "give --tokenizer a folder with tokenizer.json or a hub id in the local cache") from None

    def count_hf(texts):
        ids = hf([tokenizable(t, len(t)) for t in texts], add_special_tokens=False, truncation=False)["input_ids"]
        return np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(texts))

    return TokenCounter(label, count_hf)


def _scored_rows(path: Path, score_column: str, text_column: str):
    """(scores float64 with NaN for null, texts) per record batch."""
    for batch in iter_batches(path, READ_ROWS, columns=[score_column, text_column]):
        scores = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
        yield scores, batch.column(1)


def _bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin per row, -1 for a NaN/null score (never kept)."""
    out = bin_index(np.clip(scores, 0.0, 1.0), bins)
    out[~np.isfinite(scores)] = -1
    return out


@dataclass
class BudgetCut:
    boundary: int  # fine bin partly kept (-1: nothing to cut, everything fits)
    boundary_tokens: int  # tokens the boundary bin may still give, in corpus order
    tokens_total: int  # tokens of every document with a score


def budget_cutoff(paths: Sequence[os.PathLike], budget: int, score_column: str, text_column: str,
                  counter: TokenCounter, bins: int) -> BudgetCut:
    """Pass 1: tokens per fine score bin over every shard, and where the budget runs out."""
    tokens = np.zeros(bins, np.int64)
    for p in paths:
        for scores, texts in _scored_rows(p, score_column, text_column):
            b = _bins(scores, bins)
            ok = b >= 0
            if ok.any():
                counts = counter.count([t for t, k in zip(texts_from_array(texts), ok) if k])
                tokens += np.bincount(b[ok], weights=counts, minlength=bins).astype(np.int64)
    total = int(tokens.sum())
    if total <= budget:
        return BudgetCut(-1, 0, total)
    from_top = np.cumsum(tokens[::-1])
    k = int(np.searchsorted(from_top, budget, side="right"))  # bins that fit whole, from the top
    above = int(from_top[k - 1]) if k > 0 else 0
    return BudgetCut(bins - 1 - k, budget - above, total)


def shard_keep(path: os.PathLike, cut: BudgetCut, remaining: int, score_column: str, text_column: str,
               counter: TokenCounter, bins: int) -> tuple[np.ndarray, int, int]:
    """Pass 2 for one shard: (keep mask, kept tokens, boundary tokens taken)."""
    masks, kept_tokens, taken = [], 0, 0
    for scores, texts in _scored_rows(path, score_column, text_column):
        b = _bins(scores, bins)
        keep = b > cut.boundary
        keep[b < 0] = False
        wanted = b >= cut.boundary if cut.boundary >= 0 else keep
        wanted &= b >= 0
        idx = np.flatnonzero(wanted)
        counts = np.zeros(len(b), np.int64)
        if len(idx):
            all_texts = texts_from_array(texts)
            counts[idx] = counter.count([all_texts[i] for i in idx])
        if cut.boundary >= 0:
            for i in np.flatnonzero(b == cut.boundary):  # corpus order: each one that still fits
                if taken + counts[i] > remaining:
                    continue
                keep[i] = True
                taken += int(counts[i])
        kept_tokens += int(counts[keep].sum())
        masks.append(keep)
    return (np.concatenate(masks) if masks else np.zeros(0, bool)), kept_tokens, taken
