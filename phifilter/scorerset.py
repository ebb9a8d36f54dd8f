"""Several scorers in one pass: ``phifilter score IN -o OUT --model NAME=SPEC --model NAME=SPEC ...``.

A :class:`ScorerPlan` is what the user asked for (column name -> spec); it is small and
picklable, so engines ship it to workers, which load it with :func:`load_scorer_set`. A
:class:`ScorerSet` is the loaded set, and is a model to the scoring flow like any other: its
stages are every member's stages one after the other (each member keeps its own threads, an
EduClassifier its tokenise / embed / head pipeline), the first member's score goes in the
primary column (``ScoreConfig.score_column``) and every other member's in
``extra_columns``; a Hugging Face regression member also writes FineWeb-Edu's
``round(clip(score, 0, 5))`` as ``NAME_int_score`` (int8) and an ensemble member its 0-19
bucket as ``NAME_bucket``. Each shard is read once.

The run record names, per column, the scorer's kind, options, threshold, the nominal range of
its scores (``scale``: [0, 1] for probabilities, [0, 5] for a regression, [0, 20] for an
ensemble) and its int score or bucket column; :func:`column_span` reads it back, so ``report``
lays its histogram over that range and ``report``/``filter --threshold`` check a threshold
against it.

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

from .errors import OptionError
from .foreign import Spec, parse_spec
from .scorer import NAME, check_member, member_identity

BUCKET_SUFFIX = "_bucket"
INT_SCORE_SUFFIX = "_int_score"
UNIT = (0.0, 1.0)


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
    if cfg.int_score_column and cfg.int_score_column in [*scorers.columns, *(c for _, c in scorers.derived_columns())]:
        raise OptionError(f"--int-score-column {cfg.int_score_column}: a scorer writes that column already; "
                          "choose another name", "--int-score-column")
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
        written = [*self.columns, *(c for _, c in self.derived_columns())]
        twice = sorted({c for c in written if written.count(c) > 1})
        if twice:
            raise OptionError(f"--model: the column {twice[0]!r} would be written twice (a scorer NAME also "
                              f"writes NAME{INT_SCORE_SUFFIX} or NAME{BUCKET_SUFFIX}); rename a scorer", "--model")

    def derived_columns(self) -> list[tuple[str, str]]:
        """(member name, column) of each int8 column a member writes besides its score, in order:
        every regression member's ``NAME_int_score``, then every ensemble's ``NAME_bucket``."""
        ints = [(name, name + INT_SCORE_SUFFIX) for name, m in self.members if getattr(m, "writes_int_score", False)]
        return ints + [(name, name + BUCKET_SUFFIX) for name, m in self.members if hasattr(m, "buckets")]

    @property
    def extra_columns(self) -> list:
        """(name, arrow type) of the columns after the primary score (and its --int-score-column)."""
        import pyarrow as pa

        return [(name, pa.float32()) for name in self.columns[1:]] + [(c, pa.int8()) for _, c in self.derived_columns()]

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
            raise OptionError(f"--int-score-column: the scorer of column {self.columns[0]!r} gives no 0-5 score",
                              "--int-score-column")
        return self.primary.int_scores(scores)

    def scoring_identity(self) -> dict:
        """Each member's identity by column (checkpoints compare it)."""
        return {"scorers": {name: member_identity(m) for name, m in self.members}}

    def run_identity(self) -> dict:
        """The model part of the run record: every member's file hashes (``COLUMN/FILE``) and options."""
        from .provenance import model_identity as identity

        scorers = self.scoring_identity()["scorers"]
        files = {f"{name}/{f}": sha for name, ident in scorers.items() for f, sha in ident["files"].items()}
        derived = dict(self.derived_columns())  # a member writes at most one of the two
        entries = {}
        for name, member in self.members:
            entry = {k: v for k, v in scorers[name].items() if k != "files"}
            entry.update(threshold=float(member.threshold), scale=list(member_scale(member)))
            if name in derived:
                entry["int_column" if derived[name].endswith(INT_SCORE_SUFFIX) else "bucket_column"] = derived[name]
            entries[name] = entry
        return identity(files, scorers=entries)


def member_scale(member) -> tuple[float, float]:
    """The nominal (lo, hi) of a scorer's scores: its ``scale``, else [0, 1] (a probability)."""
    lo, hi = getattr(member, "scale", UNIT)
    return float(lo), float(hi)


def _filed(fn, name: str, member):
    """``fn``, then the batch's scores moved to ``batch.columns[name]`` (and an ensemble's buckets)."""

    def step(batch):
        batch = fn(batch)
        columns = dict(batch.columns or {})
        columns[name] = np.asarray(batch.scores, np.float32)
        if getattr(member, "writes_int_score", False):
            columns[name + INT_SCORE_SUFFIX] = member.int_scores(columns[name])
        if hasattr(member, "buckets"):
            columns[name + BUCKET_SUFFIX] = member.buckets(columns[name])
        batch.columns, batch.scores, batch.work = columns, None, None
        return batch

    return step


@dataclass(frozen=True)
class EnsembleConfig:
    """The options of `phifilter ensemble`: the ``NAME=SPEC`` members, the combine rule, the
    reference sample, and how the members score it. Bad values raise :class:`OptionError`
    naming the option, when the config is built."""

    members: tuple = ()
    combine_rule: str = "max"
    sample: int = 10_000
    text_column: str = "text"
    device: str = "auto"
    embed_batch_size: int = 64
    max_length: int | None = None
    dtype: str = "auto"

    def __post_init__(self):
        from .ensemble import BINS, COMBINE

        pairs = [split_model_option(os.fspath(m)) for m in self.members]
        if not pairs or any(name is None for name, _ in pairs):
            raise OptionError("--member: give each member as NAME=SPEC (at least one)", "--member")
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise OptionError(f"--member {sorted(n for n in names if names.count(n) > 1)[0]}=...: each member "
                              "needs its own NAME", "--member")
        if self.combine_rule not in COMBINE:
            raise OptionError(f"--combine {self.combine_rule}: expected one of {', '.join(COMBINE)}", "--combine")
        if isinstance(self.sample, bool) or not isinstance(self.sample, int) or self.sample < BINS:
            raise OptionError(f"--sample {self.sample}: percentile bins need at least {BINS} documents", "--sample")

    def pairs(self) -> list[tuple[str, str]]:
        return [split_model_option(os.fspath(m)) for m in self.members]


def build_ensemble(inputs, output_dir, config: "EnsembleConfig | Sequence[str]", **options) -> dict:
    """`phifilter ensemble`: load the members of ``config`` (an :class:`EnsembleConfig`, or the
    ``NAME=SPEC`` strings with its other fields as keywords) and fit the ensemble
    (:func:`phifilter.ensemble.fit_ensemble`)."""
    from .ensemble import fit_ensemble
    from .scoring.config import ScoreConfig

    cfg = config if isinstance(config, EnsembleConfig) else EnsembleConfig(members=tuple(config), **options)
    score_cfg = ScoreConfig().with_options(device=cfg.device, max_length=cfg.max_length,
                                           embed_batch_size=cfg.embed_batch_size, dtype=cfg.dtype)
    loaded = []
    for name, spec in cfg.pairs():
        member = load_member(spec, score_cfg)
        check_member(member)
        loaded.append((name, spec, member))
    return fit_ensemble(inputs, output_dir, loaded, combine_rule=cfg.combine_rule, text_column=cfg.text_column,
                        sample=cfg.sample)

def recorded_scale(path, column: str) -> tuple[float, float] | None:
    """The nominal (lo, hi) of ``column``'s scores as ``path``'s run record gives it: a scorer's
    ``scale``, 0-5 for an int score, 0-19 for a bucket, [0, 1] for our own model's score column;
    None when the record does not say (no record, or a column it does not name)."""
    from .ensemble import BINS
    from .provenance import read_record

    record = read_record(path) or {}
    if record.get("command") != "score":
        return None
    scorers = ((record.get("model") or {}).get("options") or {}).get("scorers")
    columns = record.get("columns") if isinstance(record.get("columns"), dict) else {}
    if isinstance(scorers, dict):
        for name, entry in scorers.items():
            if not isinstance(entry, dict):
                continue
            scale = entry.get("scale")
            if name == column and isinstance(scale, list) and len(scale) == 2 and _finite_pair(scale):
                return float(scale[0]), float(scale[1])
            if entry.get("int_column") == column:
                return 0.0, 5.0
            if entry.get("bucket_column") == column:
                return 0.0, float(BINS - 1)
    if column == columns.get("int_score"):
        primary = scorers.get(columns.get("score"), {}) if isinstance(scorers, dict) else {}
        return (0.0, float(BINS - 1)) if isinstance(primary, dict) and primary.get("kind") == "ensemble" else (0.0, 5.0)
    if column == columns.get("score") and not isinstance(scorers, dict):
        return UNIT  # our own model (or a fitted EduClassifier): a probability
    return None


def _finite_pair(pair) -> bool:
    import math

    return (all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in pair)
            and pair[0] < pair[1])


def observed_range(paths, column: str) -> tuple[float, float] | None:
    """The smallest and largest finite value of ``column`` in ``paths`` (None when it has none):
    from the Parquet footers' statistics where every row group has them, else by reading it."""
    import math

    from .corpus import iter_batches, open_parquet

    lo, hi = math.inf, -math.inf
    for path in paths:
        pf = open_parquet(path)
        j = pf.schema_arrow.get_field_index(column)
        footer = j >= 0 and hasattr(pf.metadata, "row_group")  # JSON Lines and Arrow files have no statistics
        stats = [pf.metadata.row_group(i).column(j).statistics for i in range(pf.metadata.num_row_groups)] if footer else []
        if stats and all(s is not None and s.has_min_max and math.isfinite(s.min) and math.isfinite(s.max)
                         for s in stats):
            lo, hi = min(lo, *(float(s.min) for s in stats)), max(hi, *(float(s.max) for s in stats))
            continue
        for batch in iter_batches(path, 1 << 16, columns=[column], parquet_file=pf):
            s = batch.column(0).to_numpy(zero_copy_only=False).astype(np.float64)
            s = s[np.isfinite(s)]
            if len(s):
                lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    return (lo, hi) if lo <= hi else None


def column_span(paths, column: str) -> tuple[float, float, str]:
    """(lo, hi, where it comes from) of ``column``'s scores in ``paths``: the run records' range
    (:func:`recorded_scale`; several shards: the range holding them all), widened to the values
    found (a regression's raw output may stray past 0-5); with no record saying, [0, 1] widened
    likewise. ``report`` lays its histograms over it and checks ``--threshold`` against it, as
    ``filter --threshold`` does."""
    paths = list(paths)
    scales = [s for s in (recorded_scale(p, column) for p in paths) if s is not None]
    if scales:
        lo, hi = min(s[0] for s in scales), max(s[1] for s in scales)
        where = f"the run record of {paths[0]}" + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
    else:
        (lo, hi), where = UNIT, "no run record gives a range: [0, 1]"
    seen = observed_range(paths, column) if (lo, hi) != UNIT or not scales else None
    if seen is not None and (seen[0] < lo or seen[1] > hi):
        lo, hi = min(lo, seen[0]), max(hi, seen[1])
        where += f", widened to the scores found ({seen[0]:.4g} to {seen[1]:.4g})"
    return lo, hi, where


def check_threshold(paths, column: str, threshold: float, option: str = "--threshold") -> None:
    """Refuse a threshold outside the range of ``column``'s scores (:func:`column_span`) where a
    run record gives that range (an OptionError naming ``option``, the range and the file)."""
    paths = list(paths)
    if not any(recorded_scale(p, column) is not None for p in paths):
        return
    lo, hi, where = column_span(paths, column)
    if not lo <= float(threshold) <= hi:
        raise OptionError(f"{option} {threshold:g}: column '{column}' holds scores in [{lo:g}, {hi:g}] "
                          f"({where}); give a threshold in that range", option)
