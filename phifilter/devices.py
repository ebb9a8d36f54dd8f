"""Which torch device a command runs on: one rule for `--device` everywhere.

``score``, ``embed``, ``train``, ``evaluate``, ``suggest``, ``label --backend transformers`` and
``ablate`` all take ``--device auto|cpu|cuda|cuda:N|mps`` and pass it here. The answer is a
string (what sentence-transformers and transformers take); code that needs a ``torch.device``
converts it. A device that does not exist is an :class:`~phifilter.errors.OptionError` naming the
option and the fix, raised before any model is loaded. ``score --devices`` (one worker process
per device) checks each of its devices with the same rule. torch is imported only when called.
"""

from __future__ import annotations

from typing import Sequence

from .errors import OptionError


def resolve_device(device: str = "auto") -> str:
    """'auto' -> cuda, then mps, then cpu; other values are checked against what exists."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise OptionError(f"--device {device}: no CUDA device is available here; use --device cpu or auto")
        if ":" in device:
            index = device.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise OptionError(
                    f"--device {device}: no such GPU (this machine has {torch.cuda.device_count()})"
                )
        return device
    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise OptionError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return device
    raise OptionError(f"--device {device}: expected auto, cpu, cuda, cuda:N or mps")


def parse_devices(devices: str | Sequence[str]) -> list[str]:
    """`score --devices`: 'cuda:0,cuda:1' / 'all' / 'cpu,cpu' / a list -> checked device names."""
    if isinstance(devices, str):
        if devices.strip().lower() == "all":
            import torch

            count = torch.cuda.device_count()
            if count == 0:
                raise OptionError("--devices all: no CUDA device is available here; use --device cpu")
            return [f"cuda:{i}" for i in range(count)]
        devices = [d for d in devices.split(",")]
    names = [d.strip().lower() for d in devices if d.strip()]
    if not names:
        raise OptionError("--devices: expected a comma-separated list such as cuda:0,cuda:1, or 'all'")
    checked = []
    for d in names:
        if d == "cuda":
            d = "cuda:0"
        resolve_device(d)
        checked.append(d)
    return checked
