"""How well two label sets of the same documents agree (one LLM or rubric against another).

Rows are paired by an id column when both files have it (rows in only one file are counted and
left out), otherwise by position (the files must then have the same number of rows). Pairs
where either score is null are left out and counted. Reported: exact agreement, agreement
within one point, Cohen's kappa with quadratic weights (the usual measure for ordinal scales:
a 1-point disagreement costs little, a 4-point one a lot), agreement on the binary label
(score >= threshold) with its plain Cohen's kappa, and the 6x6 confusion matrix. For a file
written by `phifilter label`, how its answers were read (``llm_parse``: strict, fallback, none,
and how many scores came from the repair re-ask) is counted per model (``llm_model``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..corpus import open_parquet
from ..errors import InputError

SCORE_COLUMNS = ("llm_score", "score")
LEVELS = list(range(6))


@dataclass
class Agreement:
    a: str
    b: str
    column_a: str
    column_b: str
    paired_by: str  # the id column, or "row order"
    pairs: int  # compared pairs (both scores present)
    missing_a: int  # rows of B whose document has no score (or no row) in A
    missing_b: int
    exact: float
    within_one: float
    quadratic_kappa: float | None
    mean_abs_diff: float
    binary_threshold: int
    binary_agreement: float
    binary_kappa: float | None
    confusion: list  # confusion[i][j]: documents A scored i and B scored j
    formats_a: dict = field(default_factory=dict)  # model -> {strict, fallback, none, repaired: rows}
    formats_b: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    def __str__(self) -> str:
        def k(v):
            return "n/a" if v is None else f"{v:.3f}"

        lines = [
            f"A: {self.a} ({self.column_a})",
            f"B: {self.b} ({self.column_b})",
            f"paired by {self.paired_by}: {self.pairs:,} documents scored in both "
            f"({self.missing_a:,} unscored or absent in A, {self.missing_b:,} in B)",
            f"exact agreement:          {self.exact:.3f}",
            f"within one point:         {self.within_one:.3f}",
            f"quadratic-weighted kappa: {k(self.quadratic_kappa)}",
            f"mean absolute difference: {self.mean_abs_diff:.3f}",
            f"binary (score >= {self.binary_threshold}): agreement {self.binary_agreement:.3f}, kappa {k(self.binary_kappa)}",
            "confusion matrix (rows: A, columns: B):",
            "       " + "".join(f"{'B=' + str(j):>7}" for j in LEVELS),
        ]
        for i, row in enumerate(self.confusion):
            lines.append(f"  A={i}  " + "".join(f"{v:>7,}" for v in row))
        for side, formats in (("A", self.formats_a), ("B", self.formats_b)):
            for model, c in formats.items():
                lines.append(f"answer formats in {side}, {model}: strict {c['strict']:,}, fallback {c['fallback']:,}, "
                             f"none {c['none']:,}" + (f" ({c['repaired']:,} scored by the repair re-ask)"
                                                      if c.get("repaired") else ""))
        return "\n".join(lines)


def answer_formats(path: str | os.PathLike) -> dict:
    """Per ``llm_model``: how many answers were read strictly, by a fallback, or not at all.

    Empty for a file without an ``llm_parse`` column (labels not made by `phifilter label`).
    Rows never asked (null ``llm_parse``) are not counted.
    """
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    if "llm_parse" not in names:
        return {}
    cols = ["llm_parse"] + [c for c in ("llm_model", "llm_repaired") if c in names]
    try:
        table = pf.read(columns=cols)
    except Exception as e:  # noqa: BLE001 - Arrow raises many types for corrupt data
        raise InputError(f"{path}: corrupt Parquet data ({str(e).splitlines()[0]})") from None
    parses = table.column("llm_parse").to_pylist()
    models = table.column("llm_model").to_pylist() if "llm_model" in names else [None] * len(parses)
    repaired = table.column("llm_repaired").to_pylist() if "llm_repaired" in names else [None] * len(parses)
    out: dict = {}
    for parse, model, rep in zip(parses, models, repaired):
        if parse is None:
            continue
        c = out.setdefault(model or "(unknown model)", {"strict": 0, "fallback": 0, "none": 0, "repaired": 0})
        c[parse] = c.get(parse, 0) + 1
        c["repaired"] += bool(rep)
    return out


def _read(path: str | os.PathLike, column: str | None, id_column: str) -> tuple[str, np.ndarray, list | None]:
    pf = open_parquet(path)
    names = pf.schema_arrow.names
    col = column or next((c for c in SCORE_COLUMNS if c in names), None)
    if col is None or col not in names:
        raise InputError(f"{path}: no score column ({column or ' or '.join(SCORE_COLUMNS)}); "
                         f"columns are: {', '.join(names)}")
    cols = [col] + ([id_column] if id_column in names else [])
    try:
        table = pf.read(columns=cols)
    except Exception as e:  # noqa: BLE001 - Arrow raises many types for corrupt data
        raise InputError(f"{path}: corrupt Parquet data ({str(e).splitlines()[0]})") from None
    values = table.column(col).to_pylist()
    scores = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{path}: column '{col}' holds {type(v).__name__} values, expected 0-5 scores")
        if v == v:  # not NaN
            if v < 0 or v > 5 or v != int(v):
                raise InputError(f"{path}: column '{col}' has the value {v}; expected whole scores 0-5")
            scores[i] = v
    ids = table.column(id_column).to_pylist() if id_column in names else None
    if ids is not None:
        seen = set()
        for v in ids:
            if v in seen:
                raise InputError(f"{path}: id column '{id_column}' repeats the value {v!r}; ids must be unique "
                                 "(pair by row order instead with --id-column '')")
            seen.add(v)
    return col, scores, ids


@dataclass
class AgreementConfig:
    """Options of `phifilter agreement`."""

    column_a: str | None = None  # score column of A (None: llm_score, else score)
    column_b: str | None = None
    id_column: str = "id"  # pairs the rows ('' or absent: row order)
    binary_threshold: int = 3  # scores at or above count as positive


def compare_labels(a: str | os.PathLike, b: str | os.PathLike, config: AgreementConfig | None = None,
                   **options) -> Agreement:
    """Agreement between the score columns of two Parquet files; see the module docstring.
    ``options`` (column_a=..., id_column=...) override fields of ``config``."""
    import dataclasses

    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    cfg = dataclasses.replace(config or AgreementConfig(), **options)
    column_a, column_b, id_column, binary_threshold = cfg.column_a, cfg.column_b, cfg.id_column, cfg.binary_threshold

    col_a, sa, ids_a = _read(a, column_a, id_column)
    col_b, sb, ids_b = _read(b, column_b, id_column)
    if id_column and ids_a is not None and ids_b is not None:
        index_b = {v: i for i, v in enumerate(ids_b)}
        pairs = [(i, index_b[v]) for i, v in enumerate(ids_a) if v in index_b]
        if not pairs:
            raise InputError(f"{a} and {b}: no '{id_column}' value occurs in both files")
        ia, ib = (np.array(x, dtype=np.int64) for x in zip(*pairs))
        x, y = sa[ia], sb[ib]
        only_a, only_b = len(ids_a) - len(pairs), len(ids_b) - len(pairs)
        paired_by = f"column '{id_column}'"
    else:
        if len(sa) != len(sb):
            raise InputError(f"{a} has {len(sa):,} rows and {b} has {len(sb):,}; without an '{id_column}' column "
                             "in both files rows are paired by position, so the counts must match")
        x, y, only_a, only_b = sa, sb, 0, 0
        paired_by = "row order"
    both = ~np.isnan(x) & ~np.isnan(y)
    missing_a = int(np.sum(np.isnan(x) & ~np.isnan(y))) + only_b
    missing_b = int(np.sum(~np.isnan(x) & np.isnan(y))) + only_a
    x, y = x[both].astype(int), y[both].astype(int)
    if len(x) == 0:
        raise InputError(f"{a} and {b}: no document has a score in both files")
    diff = np.abs(x - y)

    def kappa(u, v, **kw):
        # Undefined when both raters give one and the same label to everything.
        if len(set(u.tolist()) | set(v.tolist())) < 2:
            return None
        value = float(cohen_kappa_score(u, v, **kw))
        return None if np.isnan(value) else value

    bx, by = x >= binary_threshold, y >= binary_threshold
    return Agreement(
        a=str(a), b=str(b), column_a=col_a, column_b=col_b, paired_by=paired_by, pairs=int(len(x)),
        missing_a=missing_a, missing_b=missing_b,
        exact=float(np.mean(diff == 0)), within_one=float(np.mean(diff <= 1)),
        quadratic_kappa=kappa(x, y, labels=LEVELS, weights="quadratic"),
        mean_abs_diff=float(diff.mean()), binary_threshold=binary_threshold,
        binary_agreement=float(np.mean(bx == by)), binary_kappa=kappa(bx, by),
        confusion=confusion_matrix(x, y, labels=LEVELS).tolist(),
        formats_a=answer_formats(a), formats_b=answer_formats(b),
    )
