"""Embeddings from any `transformers` model: the mean of its last hidden layer over real tokens.

The phi-1 paper embedded code with a pretrained code model; this lets a user do the same with
any local causal (GPT-2, CodeGen, ...) or encoder (BERT, ...) model folder::

    phifilter train labels.parquet -o model/ --embedder mean-pool:./codegen-350M-mono

It has the interface :class:`~phifilter.embed.Embedder` has (``encode``, ``count_tokens``,
``dim``, ``name``, ``hashes``, ``describe``, ``max_length``), so the classifier, the chunker and
the embedding cache use it unchanged. Only local folders are read: nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .defaults import EMBED_BATCH_SIZE, MAX_LENGTH
from .devices import resolve_device
from .embed import Embedder, file_hashes, verify_hashes
from .errors import ModelError

PREFIX = "mean-pool:"


def make_embedder(spec, device: str = "auto", max_length: int = MAX_LENGTH, batch_size: int = EMBED_BATCH_SIZE):
    """``mean-pool:FOLDER`` -> :class:`MeanPoolEmbedder`; anything else -> a sentence-transformers
    :class:`~phifilter.embed.Embedder`."""
    if spec is not None and str(spec).startswith(PREFIX):
        return MeanPoolEmbedder(str(spec)[len(PREFIX):], device=device, max_length=max_length, batch_size=batch_size)
    return Embedder(spec, device=device, max_length=max_length, batch_size=batch_size)


class MeanPoolEmbedder:
    """Mean-pooled, L2-normalised last hidden states of a local transformers model folder.

    Parameters
    ----------
    model : folder holding config.json, weights and a tokenizer.
    device, max_length, batch_size : as for :class:`~phifilter.embed.Embedder`.
    sha256 : optional pinned hashes ({file: hex}) checked before loading.
    """

    def __init__(self, model: str | os.PathLike, device: str = "auto", max_length: int = MAX_LENGTH,
                 batch_size: int = EMBED_BATCH_SIZE, sha256: dict[str, str] | None = None):
        self.model = model
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.sha256 = sha256
        self._model = None
        self._tokenizer = None
        self._hashes: dict[str, str] = {}

    @property
    def source(self) -> str:
        """What a model folder records to rebuild this embedder."""
        return PREFIX + str(self.model)

    @property
    def name(self) -> str:
        return PREFIX + Path(self.model).resolve().name

    @property
    def hashes(self) -> dict[str, str]:
        self._load()
        return dict(self._hashes)

    @property
    def dim(self) -> int:
        return int(self._load().config.hidden_size)

    @property
    def resolved_device(self) -> str | None:
        """The device the model runs on once loaded; None before."""
        return getattr(self, "_device", None)

    def describe(self) -> dict:
        return {"name": self.name, "revision": None, "dim": self.dim, "max_length": self.max_length,
                "sha256": self.hashes, "pooling": "mean of last hidden layer"}

    def _load(self):
        if self._model is not None:
            return self._model
        import torch  # noqa: F401  (transformers needs it; imported here to fail clearly)
        from transformers import AutoModel, AutoTokenizer

        from .embed import quiet_transformers

        folder = Path(self.model)
        if not folder.is_dir():
            raise ModelError(f"{self.model}: no such model folder for the mean-pool embedder")
        if self.sha256:
            verify_hashes(folder, self.sha256, f"embedder {self.name}")
        quiet_transformers()
        self._device = resolve_device(self.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:
            raise ModelError(f"{folder}: cannot load as a transformers model "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        if tokenizer.pad_token is None:  # causal models often have none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            if tokenizer.pad_token is None:
                tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        tokenizer.padding_side = "right"
        model.to(self._device).eval()
        self._tokenizer, self._model = tokenizer, model
        self._hashes = file_hashes(folder)
        return model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim]; empty or blank texts get zero vectors."""
        import torch

        model = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = sorted((i for i, t in enumerate(texts) if t and not t.isspace()), key=lambda i: -len(texts[i]))
        limit = min(self.max_length, getattr(model.config, "max_position_embeddings", None) or self.max_length)
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=limit,
                                      return_tensors="pt")
                enc = {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                hidden = model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        enc = self._tokenizer([t or "" for t in texts], add_special_tokens=False, truncation=False)["input_ids"]
        return np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(texts))

    def __repr__(self) -> str:
        return f"MeanPoolEmbedder(model={str(self.model)!r}, device={self.device!r}, max_length={self.max_length})"
