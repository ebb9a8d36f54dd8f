"""Run configuration as dataclasses: model shape, training loop, presets, the ablation itself.

No torch here, so the CLI can list presets and validate options instantly.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import InputError, OptionError


@dataclass
class GPTConfig:
    vocab_size: int = 4096
    context: int = 256  # tokens the model attends over
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0  # 0 keeps runs deterministic; budgets here are about one epoch anyway
    positions: str = "rotary"  # "rotary" or "learned"


@dataclass
class LoopConfig:
    """The optimisation recipe; the number of steps follows from the token budget."""

    batch_size: int = 16  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    warmup_fraction: float = 0.05  # of all steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100  # steps between validation losses for the loss curves
    eval_batches: int = 4  # micro-batches per curve point (the final evaluation uses more)
    checkpoint_every: int = 200  # steps between checkpoints (and always at the end)


@dataclass
class Preset:
    """A model size with a recipe that suits it and a default token budget per run."""

    name: str
    model: GPTConfig
    loop: LoopConfig
    tokens: int  # default training tokens per (arm, seed)
    eval_tokens: int  # tokens of each validation split scored at the end
    note: str = ""

    @property
    def tokens_per_step(self) -> int:
        return self.loop.batch_size * self.loop.grad_accum * self.model.context


PRESETS: dict[str, Preset] = {
    # Seconds on a CPU: for tests and for checking a setup, not for conclusions.
    "micro": Preset(
        "micro",
        GPTConfig(vocab_size=384, context=64, n_layer=1, n_head=2, d_model=32),
        LoopConfig(batch_size=8, lr=3e-3, eval_every=10, eval_batches=2, checkpoint_every=10),
        tokens=8 * 64 * 30,
        eval_tokens=2048,
        note="~60k parameters; seconds on a CPU",
    ),
    # The measured prototype: ~1.35M parameters, ~3.5 minutes per run on 2 CPU cores.
    "tiny": Preset(
        "tiny",
        GPTConfig(vocab_size=4096, context=256, n_layer=4, n_head=4, d_model=128),
        LoopConfig(batch_size=16, lr=3e-3, eval_every=50, eval_batches=4, checkpoint_every=100),
        tokens=700 * 16 * 256,
        eval_tokens=128 * 256,
        note="~1.35M parameters; minutes per run on a CPU",
    ),
    "small": Preset(
        "small",
        GPTConfig(vocab_size=16384, context=512, n_layer=6, n_head=6, d_model=384),
        LoopConfig(batch_size=32, grad_accum=2, lr=1e-3, eval_every=200, eval_batches=8,
                   checkpoint_every=500),
        tokens=200_000_000,
        eval_tokens=256 * 512,
        note="~17M parameters; a GPU for an hour or so",
    ),
    "base": Preset(
        "base",
        GPTConfig(vocab_size=32768, context=1024, n_layer=12, n_head=12, d_model=768),
        LoopConfig(batch_size=16, grad_accum=8, lr=6e-4, eval_every=250, eval_batches=8,
                   checkpoint_every=500),
        tokens=2_000_000_000,
        eval_tokens=256 * 1024,
        note="~110M parameters; a GPU for about a day",
    ),
}


@dataclass
class AblateConfig:
    """Options of `phifilter ablate` (see docs/ablation.md)."""

    preset: str = "tiny"
    tokens: int | None = None  # training tokens per (arm, seed); None: the preset's
    seeds: int = 3
    seed: int = 0  # first seed; runs use seed, seed + 1, ...
    threshold: float | None = None  # filtered arm: edu_score >= threshold ...
    top_fraction: float | None = None  # ... or the best documents holding this share of tokens
    arms: tuple[str, ...] = ("filtered", "random", "unfiltered")
    text_column: str = "text"
    score_column: str = "edu_score"
    eval_dir: str | None = None  # HumanEval/MBPP folder; None: the copies shipped in the package
    val_fraction: float = 0.02  # of documents, held out before the arms are drawn
    tokenizer_max_bytes: int = 200_000_000  # BPE is trained on a sample of at most this much text
    pass_samples: int = 4  # completions per problem for pass@k (0: skip pass@k)
    pass_problems: int | None = None  # problems per eval set for pass@k (None: all)
    max_new_tokens: int = 128
    temperature: float = 0.8
    exec_timeout: float = 3.0  # seconds per sandboxed test run
    data_seed: int = 0  # the validation split and tokeniser sample
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    compile: bool = True  # torch.compile on CUDA (never on CPU, where it costs more than it saves)
    overrides: dict = field(default_factory=dict)  # model/loop fields, e.g. {"lr": 1e-3}
    note: str | None = None  # a sentence for the report (why the budget was cut, where it ran...)
    prune_similar: tuple[float, ...] = ()  # retrain each arm without documents above each max_similarity
    similarity_from: str | None = None  # a `phifilter contamination` folder of the same inputs
    similarity_methods: tuple[str, ...] = ("syntax",)  # how ablate measures it itself (embedding: ~2 CPU-s/doc)

    def resolved_preset(self) -> Preset:
        if self.preset not in PRESETS:
            raise OptionError(f"--preset {self.preset}: unknown; choose one of {', '.join(PRESETS)}")
        p = PRESETS[self.preset]
        model, loop = p.model, p.loop
        for key, value in self.overrides.items():
            if hasattr(model, key):
                model = replace(model, **{key: value})
            elif hasattr(loop, key):
                loop = replace(loop, **{key: value})
            else:
                raise InputError(f"unknown model or loop setting '{key}'")
        return replace(p, model=model, loop=loop)

    def check(self) -> None:
        self.resolved_preset()
        if self.threshold is not None and self.top_fraction is not None:
            raise OptionError("give --threshold or --top-fraction, not both")
        if self.top_fraction is not None and not 0.0 < self.top_fraction < 1.0:
            raise OptionError(f"--top-fraction {self.top_fraction}: must be between 0 and 1")
        if self.seeds < 1:
            raise OptionError("--seeds must be at least 1")
        unknown = set(self.arms) - {"filtered", "random", "unfiltered"}
        if unknown or not self.arms:
            raise OptionError(f"--arms: unknown arm(s) {', '.join(sorted(unknown)) or '(none)'}")
        if "random" in self.arms and "filtered" not in self.arms:
            raise OptionError("--arms: the random arm is sized by the filtered arm; include 'filtered'")
        if self.eval_dir is not None and not Path(self.eval_dir).is_dir():
            raise OptionError(f"--eval-dir {self.eval_dir}: no such folder")
        if not self.similarity_methods or set(self.similarity_methods) - {"embedding", "syntax"}:
            raise OptionError(f"--similarity-methods {','.join(self.similarity_methods)}: choose embedding, syntax or both")
        for tau in self.prune_similar:
            if not 0.0 <= tau < 1.0:
                raise OptionError(f"--prune-similar {tau}: must be at least 0 and below 1 (max_similarity is in [0, 1])")
        if not 0.0 < self.val_fraction < 0.5:
            raise OptionError(f"--val-fraction {self.val_fraction}: must be between 0 and 0.5")

    def effective_threshold(self) -> float | None:
        """The filtered arm's cut-off: --threshold, else 0.5 (the bundled model's "keep"
        threshold, as in `phifilter filter`), or None when --top-fraction decides."""
        if self.top_fraction is not None:
            return None
        return 0.5 if self.threshold is None else self.threshold

    def to_dict(self) -> dict:
        return asdict(self)


def parse_overrides(items) -> dict:
    """``--set KEY=VALUE`` (repeatable) -> {key: value}; a value is read as JSON when it is JSON
    (``lr=1e-3`` -> 0.001, ``compile=false`` -> False), else kept as text."""
    import json

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionError(f"{item!r}: expected KEY=VALUE", option="--set")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}


def parse_tokens(text: str) -> int:
    """'50M' -> 50_000_000; '2.5k' -> 2500; plain integers as they are."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBgG]?)\s*", str(text))
    if not m:
        raise OptionError(f"--tokens {text}: expected a number with an optional K, M or B suffix")
    value = int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    if value <= 0:
        raise OptionError(f"--tokens {text}: must be positive")
    return value
