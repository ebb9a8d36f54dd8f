"""Several scorers in one pass: ``phifilter score IN -o OUT --model NAME=SPEC --model NAME=SPEC ...``.

A :class:`ScorerPlan` is what the user asked for (column name -> spec); it is small and
picklable, so engines ship it to workers, which load it with :func:`load_scorer_set`. A
:class:`ScorerSet` is the loaded set, and is a model to the scoring flow like any other: its
stages are every member's stages one after the other (each member keeps its own threads, an
EduClassifier its tokenise / embed / head pipeline), the first member's score goes in the
primary column (``ScoreConfig.score_column``) and every other member's in
``extra_columns``; an ensemble member also writes its 0-19 bucket as ``NAME_bucket``. Each
shard is read once.

Specs (:func:`phifilter.foreign.parse_spec`): a phifilter model folder, an ensemble folder
(``phifilter ensemble``), a Hugging Face folder (``[hf:]DIR[#LABEL]``) or ``fasttext:PATH#LABEL``.
A bare ``--model DIR`` of our own format keeps its meaning (the model, column ``edu_score``,
the same run record as before); a bare foreign spec is scored into ``--score-column``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import InputError, OptionError
from .foreign import Spec, parse_spec
from .scorer import NAME, check_member, member_identity

BUCKET_SUFFIX = "_bucket"


@dataclass(frozen=True)
class ScorerPlan:
    """The scorers of one run: ``((column, spec), ...)``; a spec is a string or a loaded model object."""

    members: tuple

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.members]

    def load_scorers(self, cfg) -> "ScorerSet":
        """Every member loaded and checked (what ``scoring.model.load_model`` calls)."""
        return load_scorer_set(self, cfg)


def split_model_option(value: str) -> tuple[str | None, str]:
    """'NAME=SPEC' -> (NAME, SPEC); a value whose part before '=' is not a column name is a bare SPEC."""
    name, sep, spec = value.partition("=")
    if sep and NAME.match(name) and spec and not os.path.exists(value):
        return name, spec
    return None, value


def plan_models(model, score_column: str = "edu_score"):
    """Normalise ``score_shards``' ``model`` argument: today's forms are returned unchanged (None,
    a model folder of our own format, a model object); foreign specs, a ``{column: spec}``
    mapping or a list of ``--model`` values become a :class:`ScorerPlan`."""
    if isinstance(model, ScorerPlan):
        return model
    if isinstance(model, (list, tuple)):
        values = [split_model_option(os.fspath(v)) for v in model]
        if not values:
            return None
        if len(values) == 1 and values[0][0] is None:
            return plan_models(values[0][1], score_column)
        bare = [spec for name, spec in values if name is None]
        if bare:
            raise OptionError(f"--model {bare[0]}: with several --model options each needs a column name: "
                              "--model NAME=SPEC", "--model")
        model = dict(_unique(values))
    if isinstance(model, Mapping):
        members = tuple(model.items())
        if not members:
            raise OptionError("--model: no scorers given", "--model")
        for name, _ in members:
            if not isinstance(name, str) or not NAME.match(name):
                raise OptionError(f"--model {name}=...: a column name is letters, digits and _ "
                                  "(not starting with a digit, at most 64)", "--model")
        return ScorerPlan(members)
    if isinstance(model, (str, os.PathLike)):
        spec = parse_spec(model)
        if spec.kind != "ours":
            return ScorerPlan(((score_column, os.fspath(model)),))
        return None if spec.path is None else model  # "bundled": the bundled model
    return model


def _unique(values: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    seen = set()
    for name, _ in values:
        if name in seen:
            raise OptionError(f"--model {name}=...: the column {name!r} is named twice", "--model")
        seen.add(name)
    return list(values)


def load_member(spec, cfg):
    """One member, loaded: a spec string (see the module docstring) or a model object as it is."""
    if spec is not None and not isinstance(spec, (str, os.PathLike, Spec)):
        return spec
    parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
    if parsed.kind == "fasttext":
        from .foreign import FastTextScorer

        return FastTextScorer(parsed.path, parsed.label)
    if parsed.kind == "hf":
        from .foreign import HFScorer

        return HFScorer(parsed.path, parsed.label, max_length=cfg.max_length, device=cfg.device,
                        dtype=cfg.dtype, batch_size=cfg.embed_batch_size)
    if parsed.kind == "ensemble":
        from .ensemble import EnsembleScorer

        return EnsembleScorer.from_folder(parsed.path, cfg, load_member)
    from .scoring.model import load_model

    return load_model(parsed.path, cfg)  # None: the bundled model


def load_scorer_set(plan: ScorerPlan, cfg) -> "ScorerSet":
    """Every member of ``plan`` loaded and checked (before any output is written)."""
    members = [(name, load_member(spec, cfg)) for name, spec in plan.members]
    scorers = ScorerSet(members)
    scorers.check()
    return scorers


class ScorerSet:
    """Loaded scorers, one output column each (see the module docstring)."""

    def __init__(self, members: Sequence[tuple[str, object]]):
        self.members = list(members)
        self.columns = [name for name, _ in self.members]
        self.primary = self.members[0][1]
        self.threshold = float(self.primary.threshold)
        chunking = [m for _, m in self.members if getattr(m, "chunking", "truncate") != "truncate"]
        self.chunking = "chunk" if chunking else "truncate"
        self.max_chunks = max([int(m.max_chunks) for m in chunking] or [1])

    @property
    def extra_columns(self) -> list:
        """(name, arrow type) of the columns after the primary score (and its int score)."""
        import pyarrow as pa

        out = [(name, pa.float32()) for name in self.columns[1:]]
        return out + [(name + BUCKET_SUFFIX, pa.int8()) for name, m in self.members if hasattr(m, "buckets")]

    def check(self) -> None:
        """Load every member now, so a bad one fails before any output is written."""
        for _, m in self.members:
            check_member(m)

    def scoring_stages(self, tensor_forest: bool | None = None) -> list:
        """Every member's stages in turn; each member's last stage files its scores under its column."""
        from .scoring.model import model_stages
        from .scoring.config import ScoreConfig

        cfg = ScoreConfig(tensor_forest=tensor_forest)
        stages = []
        for k, (name, member) in enumerate(self.members):
            own = model_stages(member, cfg)
            for j, (stage_name, fn) in enumerate(own):
                last = j == len(own) - 1
                stages.append((f"{name}-{stage_name}", _filed(fn, name, member) if last else fn))
        stages.append(("columns", self._primary_scores))
        return stages

    def _primary_scores(self, batch):
        batch.scores = batch.columns.pop(self.columns[0])
        return batch

    def edu_score(self, texts: Sequence[str]) -> np.ndarray:
        """The primary member's scores (for callers that score texts directly)."""
        return np.asarray(self.primary.edu_score(texts), np.float32)

    def int_scores(self, scores: np.ndarray) -> np.ndarray:
        if not hasattr(self.primary, "int_scores"):
            raise InputError(f"--int-score-column: the scorer of column {self.columns[0]!r} gives no 0-5 score")
        return self.primary.int_scores(scores)

    def scoring_identity(self) -> dict:
        """Each member's identity by column (checkpoints compare it)."""
        return {"scorers": {name: member_identity(m) for name, m in self.members}}

    def run_identity(self) -> dict:
        """The model part of the run record: every member's file hashes (``COLUMN/FILE``) and options."""
        from .provenance import model_identity as identity

        scorers = self.scoring_identity()["scorers"]
        files = {f"{name}/{f}": sha for name, ident in scorers.items() for f, sha in ident["files"].items()}
        return identity(files, scorers={name: {k: v for k, v in ident.items() if k != "files"}
                                        for name, ident in scorers.items()})


def _filed(fn, name: str, member):
    """``fn``, then the batch's scores moved to ``batch.columns[name]`` (and an ensemble's buckets)."""

    def step(batch):
        batch = fn(batch)
        columns = dict(batch.columns or {})
        columns[name] = np.asarray(batch.scores, np.float32)
        if hasattr(member, "buckets"):
            columns[name + BUCKET_SUFFIX] = member.buckets(columns[name])
        batch.columns, batch.scores, batch.work = columns, None, None
        return batch

    return step


def build_ensemble(inputs, output_dir, members: Sequence[str], **options) -> dict:
    """`phifilter ensemble`: load the ``NAME=SPEC`` members and fit the ensemble
    (:func:`phifilter.ensemble.fit_ensemble`, which takes the other ``options``)."""
    from .ensemble import fit_ensemble
    from .scoring.config import ScoreConfig

    pairs = [split_model_option(m) for m in members]
    if not pairs or any(name is None for name, _ in pairs):
        raise InputError("--member: give each member as NAME=SPEC (at least one)")
    if len({name for name, _ in pairs}) != len(pairs):
        raise InputError("--member: each member needs its own NAME")
    fields = {"device", "max_length", "embed_batch_size", "dtype"}
    cfg = ScoreConfig().with_options(**{k: v for k, v in options.items() if k in fields})
    loaded = []
    for name, spec in pairs:
        member = load_member(spec, cfg)
        check_member(member)
        loaded.append((name, spec, member))
    return fit_ensemble(inputs, output_dir, loaded, **{k: v for k, v in options.items() if k not in fields})
