"""Finding and loading a local chat model for `--backend transformers`; nothing is downloaded.

``--model`` may be a GGUF file (``model.gguf``), a folder holding exactly one GGUF file, or a
transformers model folder (``config.json``, weights and tokenizer, as ``save_pretrained``
writes it). :func:`resolve_local_model` only looks at the file system, so the CLI can name the
model in the cache (and a dry run can report) without importing torch or transformers;
:func:`load_local_model` loads it. A GGUF file is de-quantised by transformers (with the
``gguf`` package) to float32 weights; its tokenizer and chat template come from the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError


@dataclass(frozen=True)
class LocalModel:
    """Where a local model lives: the folder transformers loads from and, for GGUF, the file."""

    folder: Path
    gguf_file: str | None  # name of the GGUF file inside ``folder``; None for a transformers folder

    @property
    def model_id(self) -> str:
        """The name of the model in the answer cache and the ``llm_model`` column."""
        path = self.folder / self.gguf_file if self.gguf_file else self.folder
        return f"transformers:{path}"

    @property
    def kind(self) -> str:
        return "GGUF file" if self.gguf_file else "transformers folder"


def resolve_local_model(spec: str | os.PathLike) -> LocalModel:
    """The local model ``spec`` names; a clear error when it names none."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelError(f"{spec}: no such file or folder; --backend transformers needs a local model "
                         "(a .gguf file, or a folder with config.json or one .gguf file)")
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{spec}: not a GGUF file; give a .gguf file or a model folder")
        return LocalModel(path.parent, path.name)
    if (path / "config.json").is_file():
        return LocalModel(path, None)
    ggufs = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(ggufs) == 1:
        return LocalModel(path, ggufs[0])
    if ggufs:
        raise ModelError(f"{spec}: holds {len(ggufs)} GGUF files ({', '.join(ggufs)}); give the one to use, "
                         f"e.g. --model {path / ggufs[0]}")
    raise ModelError(f"{spec}: not a model folder (no config.json and no .gguf file); "
                     "the transformers backend loads local models only")


def load_local_model(model: LocalModel, device: str):
    """(tokenizer, model) on ``device``, in bfloat16 on a CUDA device that supports it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    common = {"local_files_only": True}
    if model.gguf_file:
        common["gguf_file"] = model.gguf_file
    kwargs = {}
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        # transformers renamed torch_dtype to dtype in 4.56
        kwargs["dtype" if _transformers_at_least(4, 56) else "torch_dtype"] = torch.bfloat16
    where = model.folder / model.gguf_file if model.gguf_file else model.folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(model.folder, **common)
        lm = AutoModelForCausalLM.from_pretrained(model.folder, **common, **kwargs)
    except ImportError as e:
        # GGUF needs the gguf package (and accelerate); say which, instead of a traceback.
        raise ModelError(f"{where}: cannot load this {model.kind} ({str(e).splitlines()[0]}); "
                         "install phifilter[llm]") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{where}: cannot load model or tokenizer ({first})") from None
    return tokenizer, lm.to(device).eval()


def _transformers_at_least(major: int, minor: int) -> bool:
    import transformers

    try:
        found = tuple(int(p) for p in transformers.__version__.split(".")[:2])
    except ValueError:
        return True
    return found >= (major, minor)
