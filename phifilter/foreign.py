"""Scorers trained elsewhere, as model parts: a Hugging Face sequence classifier and a fastText model.

Both have the interface the scoring flow uses for any model (:mod:`phifilter.scoring.model`):
``edu_score(texts) -> float32``, a ``threshold`` and ``scoring_identity()``; the regression
scorer also has ``int_scores`` (FineWeb-Edu's ``int_score``). They are loaded from a *spec*
(:func:`parse_spec`):

* ``fasttext:PATH#LABEL``: a fastText ``.bin``; the score is the probability of ``LABEL``
  (``__label__`` may be left out) for the text made one line, whitespace collapsed, as DCLM's
  and FineWeb's fastText filters feed it.
* a folder with ``config.json`` (optionally ``hf:`` in front, ``#LABEL`` behind): a Hugging Face
  sequence-classification model. With one output (``num_labels == 1``, the FineWeb-Edu
  classifier's style) the score is the raw output; with several, the softmax probability of
  the label named by ``#LABEL`` (required).

A foreign folder is untrusted input. Only safetensors weights are loaded (``use_safetensors=True``;
a folder whose weights are pickles, ``*.bin``/``*.pt``/``*.pth``/``*.ckpt``, is refused), no
code from the folder is run (a config with ``auto_map`` is refused, ``trust_remote_code`` is never
set), nothing is downloaded (``local_files_only``), and the config's fields are checked before
transformers sees them. Null, empty or blank texts score 0, as with every phifilter model.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ModelError, OptionError

FASTTEXT_PREFIX = "fasttext:"
HF_PREFIX = "hf:"
LABEL_PREFIX = "__label__"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HF_DEFAULT_MAX_LENGTH = 512
BUNDLED = "bundled"  # --model NAME=bundled: phifilter's bundled model


@dataclass(frozen=True)
class Spec:
    """What ``--model [NAME=]SPEC`` names: its kind ('ours', 'hf', 'fasttext', 'ensemble'), path, label."""

    kind: str
    path: str | None
    label: str | None = None

    def __str__(self) -> str:
        if self.kind == "fasttext":
            return f"{FASTTEXT_PREFIX}{self.path}#{self.label}"
        return f"{self.path}#{self.label}" if self.label else str(self.path)


def parse_spec(spec) -> Spec:
    """A model spec string (or path) -> :class:`Spec`. None (or "bundled") is the bundled model."""
    if spec is None:
        return Spec("ours", None)
    text = os.fspath(spec)
    if text == BUNDLED and not os.path.exists(text):
        return Spec("ours", None)
    if text.startswith(FASTTEXT_PREFIX):
        path, sep, label = text[len(FASTTEXT_PREFIX):].rpartition("#")
        if not sep or not path or not label:
            raise OptionError(f"--model {text}: expected fasttext:PATH#LABEL (the label to score, e.g. __label__hq)",
                              "--model")
        return Spec("fasttext", path, label)
    if "://" in text:  # a URL (s3://, gs://, hf://...): one of our model folders on a store
        return Spec("ours", text)
    forced = text.startswith(HF_PREFIX)
    body = text[len(HF_PREFIX):] if forced else text
    path, label = body, None
    if "#" in body and not Path(body).exists():
        path, _, label = body.rpartition("#")
        label = label or None
    folder = Path(path)
    if (folder / "ensemble.json").is_file() and not forced:
        return Spec("ensemble", path)
    if forced or ((folder / "config.json").is_file() and not (folder / "phifilter.json").is_file()):
        return Spec("hf", path, label)
    if label is not None:
        raise OptionError(f"--model {text}: a #LABEL is for a Hugging Face folder or fasttext:PATH#LABEL; "
                          f"{path} is not one", "--model")
    return Spec("ours", text)


def _finite(value, name: str, where: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ModelError(f"{where}: field {name!r} must be a finite number, not {value!r}")
    return float(value)


def read_json_object(path: Path, missing: str, fix: str) -> dict:
    """A model file's JSON object; a ModelError naming ``path`` when it is missing (``missing``
    says why it is needed), not JSON or not an object (``fix`` says what to do)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; {missing}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e}); {fix}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: expected a JSON object; {fix}")
    return value


def check_hf_folder(folder: Path) -> dict:
    """The folder's config.json, checked: safetensors weights, no remote code, sane labels."""
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder")
    config = read_json_object(config_path, "a Hugging Face model folder needs config.json", "restore the file")
    if "auto_map" in config:
        raise ModelError(f"{config_path}: asks for custom code (auto_map); phifilter runs no code from a model "
                         "folder: use a model of a standard transformers architecture")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.replace("_", "").replace("-", "").isalnum():
        raise ModelError(f"{config_path}: field 'model_type' must be a plain name, not {model_type!r}")
    id2label = config.get("id2label")
    if id2label is not None:
        if not isinstance(id2label, dict) or not all(isinstance(k, str) and k.lstrip("-").isdigit()
                                                     and isinstance(v, str) for k, v in id2label.items()):
            raise ModelError(f"{config_path}: field 'id2label' must map label numbers to names")
    num_labels = config.get("num_labels", len(id2label) if id2label else 2)
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or not 1 <= num_labels <= 100_000:
        raise ModelError(f"{config_path}: field 'num_labels' must be an integer in 1..100000, not {num_labels!r}")
    for key in ("max_position_embeddings", "vocab_size", "hidden_size", "num_hidden_layers"):
        if key in config:
            value = _finite(config[key], key, config_path)
            if value < 1 or value != int(value):
                raise ModelError(f"{config_path}: field {key!r} must be a positive integer, not {config[key]!r}")
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    weights = sorted(p.name for p in folder.iterdir() if p.name.endswith(".safetensors"))
    if not weights:
        found = f" (it has {', '.join(pickles)}: pickled weights, which can run code when loaded)" if pickles else ""
        raise ModelError(f"{folder}: no *.safetensors weights{found}; convert the model to safetensors "
                         "(model.save_pretrained(folder, safe_serialization=True)) from a source you trust")
    config["num_labels"] = num_labels
    return config


def _resolve_label(config: dict, label: str | None, folder: Path) -> int | None:
    """The output index of ``label`` (None for a one-output regression model)."""
    num_labels = config["num_labels"]
    names = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    if num_labels == 1:
        if label is not None:
            raise ModelError(f"{folder}: a one-output (regression) model scores without a label; drop '#{label}'")
        return None
    if label is None:
        raise ModelError(f"{folder}: a classifier with {num_labels} outputs needs the label to score: "
                         f"{folder}#LABEL (labels: {', '.join(names.get(i, str(i)) for i in range(num_labels))})")
    for index, name in names.items():
        if name == label:
            return index
    if label.isdigit() and int(label) < num_labels:
        return int(label)
    raise ModelError(f"{folder}: no label {label!r}; labels: {', '.join(names.get(i, str(i)) for i in range(num_labels))}")


class HFScorer:
    """A local Hugging Face sequence-classification folder as a scorer (see the module docstring)."""

    kind = "hf"

    def __init__(self, folder: str | os.PathLike, label: str | None = None, max_length: int | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 64):
        self.folder = Path(folder)
        config = check_hf_folder(self.folder)
        self.label = label
        self.index = _resolve_label(config, label, self.folder)
        self.max_length = int(max_length or HF_DEFAULT_MAX_LENGTH)
        self.batch_size = int(batch_size)
        self.device_option, self.dtype_option = device, dtype
        # FineWeb-Edu keeps documents whose regression score is >= 3; a probability at 0.5.
        self.threshold = 3.0 if self.index is None else 0.5
        self.model_ = self.tokenizer_ = None

    @property
    def regression(self) -> bool:
        return self.index is None

    @property
    def unit_interval(self) -> bool:
        """A classifier's probability lies in [0, 1]; a regression's raw output need not."""
        return not self.regression

    @property
    def writes_int_score(self) -> bool:
        """A regression scorer ``NAME`` also writes ``NAME_int_score`` (FineWeb-Edu's companion)."""
        return self.regression

    @property
    def scale(self) -> tuple[float, float]:
        """The nominal range of its scores: FineWeb-Edu's 0-5 for a regression (raw outputs may
        stray past it), [0, 1] for a label's probability."""
        return (0.0, 5.0) if self.regression else (0.0, 1.0)

    def load(self) -> "HFScorer":
        """Load the tokenizer and the safetensors weights (on the device, in the dtype)."""
        if self.model_ is not None:
            return self
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .devices import resolve_device

        self.device = resolve_device(self.device_option)
        dtype = self.dtype_option if self.dtype_option not in (None, "auto") else (
            "bfloat16" if self.device.startswith("cuda") else "float32")
        self.dtype = dtype
        import transformers

        major_minor = tuple(int(x) for x in transformers.__version__.split(".")[:2])
        dtype_kw = "dtype" if major_minor >= (4, 56) else "torch_dtype"  # renamed in transformers 4.56
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(
                str(self.folder), local_files_only=True, use_safetensors=True, trust_remote_code=False,
                **{dtype_kw: getattr(torch, dtype)})
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{self.folder}: cannot load this Hugging Face model ({str(e).splitlines()[0]})") from None
        self.model_ = model.to(self.device).eval()
        return self

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """The raw output (regression) or the label's probability, one float32 per text."""
        import torch

        self.load()
        out = np.zeros(len(texts), np.float32)
        rows = [i for i, t in enumerate(texts) if t and not t.isspace()]
        rows.sort(key=lambda i: len(texts[i]))  # similar lengths per batch: less padding
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            enc = self.tokenizer_([texts[i] for i in chunk], truncation=True, max_length=self.max_length,
                                  padding=True, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model_(**enc).logits.float()
            values = logits[:, 0] if self.regression else torch.softmax(logits, dim=-1)[:, self.index]
            out[chunk] = values.cpu().numpy()
        return out

    def int_scores(self, scores: np.ndarray) -> np.ndarray:
        """FineWeb-Edu's ``int_score``: round(clip(score, 0, 5)) (regression models only)."""
        if not self.regression:
            from .errors import OptionError

            raise OptionError(f"--int-score-column: {self.folder} is a classifier (label {self.label!r}); "
                              "the 0-5 int score is for one-output regression models", "--int-score-column")
        clipped = np.clip(np.nan_to_num(np.asarray(scores, np.float64), nan=0.0), 0, 5)
        return np.rint(clipped).astype(np.int8)

    def scoring_identity(self) -> dict:
        """Its files' hashes and the options that change its scores (for run records)."""
        from .provenance import file_hashes

        self.load()
        files = {name: sha for name, sha in file_hashes(self.folder).items()
                 if not name.endswith(PICKLE_SUFFIXES) and name != "README.md"}
        return {"kind": self.kind, "files": files,
                "options": {"label": self.label, "max_length": self.max_length, "dtype": self.dtype}}


def one_line(text: str) -> str:
    """The text as fastText classifiers read it: one line, every run of whitespace one space."""
    return " ".join(text.split())


class FastTextScorer:
    """A fastText ``.bin`` scored for one label (DCLM style)."""

    kind = "fasttext"
    threshold = 0.5

    def __init__(self, path: str | os.PathLike, label: str):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such fastText model file")
        self.label = label if label.startswith(LABEL_PREFIX) else LABEL_PREFIX + label
        self.model_ = None

    def load(self) -> "FastTextScorer":
        if self.model_ is not None:
            return self
        import fasttext

        try:
            model = fasttext.load_model(str(self.path))
        except ValueError as e:
            raise ModelError(f"{self.path}: not a fastText model ({e})") from None
        labels = list(model.get_labels())
        if self.label not in labels:
            shown = ", ".join(labels[:20]) + (" ..." if len(labels) > 20 else "")
            raise ModelError(f"{self.path}: no label {self.label!r}; its labels: {shown} "
                             f"(give one as fasttext:{self.path}#LABEL)")
        self.model_, self.n_labels = model, len(labels)
        return self

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """P(label) for each text (0 for a blank one)."""
        self.load()
        out = np.zeros(len(texts), np.float32)
        rows = [i for i, t in enumerate(texts) if t and not t.isspace()]
        if not rows:
            return out
        labels, probs = self.model_.predict([one_line(texts[i]) for i in rows], k=self.n_labels, threshold=0.0)
        for i, names, p in zip(rows, labels, probs):
            for name, value in zip(names, p):
                if name == self.label:
                    out[i] = min(1.0, float(value))  # fastText's softmax may round a hair above 1
                    break
        return out

    def scoring_identity(self) -> dict:
        from .hashing import sha256_file

        return {"kind": self.kind, "files": {self.path.name: sha256_file(self.path)},
                "options": {"label": self.label, "input": "one line, whitespace collapsed"}}
