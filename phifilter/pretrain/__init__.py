"""Pretraining validation: does the filtered data train better models than random data?

``run_ablation`` (the `phifilter ablate` command) trains the same small GPT on three arms of a
scored corpus at equal token budgets and reports the losses. torch is imported only by the
modules that train or evaluate, not by this package's import.
"""

from .ablate import run_ablation
from .config import PRESETS, AblateConfig, GPTConfig, LoopConfig, Preset, parse_tokens

__all__ = ["AblateConfig", "GPTConfig", "LoopConfig", "PRESETS", "Preset", "parse_tokens", "run_ablation"]
