"""What a scoring run did: one :class:`ShardOutcome` per shard, folded into a :class:`ScoreSummary`.

Every engine (local threads, worker processes, Ray actors) reports shards as ShardOutcome
values (small and picklable: counts and a histogram, never the scores) and returns a
ScoreSummary, so the bookkeeping of scored, skipped, redone and failed shards is written
once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..histogram import SUMMARY_BINS, histogram

HISTOGRAM_BINS = SUMMARY_BINS


@dataclass
class ShardOutcome:
    """One shard's result. ``status``: "scored", "skipped" (already complete), "leased" (another
    live run is writing it: left to that run) or "failed"."""

    path: str
    name: str
    status: str
    rows: int = 0  # rows in the output (scored: including the resumed ones)
    resumed: int = 0  # rows taken over from an interrupted run's checkpoints
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, np.int64))
    above: int = 0  # rows with a score >= the model's threshold
    message: str = ""  # failed: why
    redone: str = ""  # scored although an output existed: why ("input changed", ...)
    seconds: float = 0.0
    bytes_in: int = 0  # size of the input file
    tokens: int = 0  # tokens the model read (0 when the model does not count them)
    embedded: int = 0  # documents the model sent to its embedder (a cascade: only the uncertain ones)...
    embedded_of: int = 0  # ...of this many scored in this run (0: the model does not say)

    @classmethod
    def of_scores(cls, shard, status: str, scores: np.ndarray, threshold: float, **fields) -> "ShardOutcome":
        scores = np.asarray(scores, dtype=np.float32)
        return cls(str(shard.path), str(shard.name), status, rows=len(scores), histogram=histogram(scores),
                   above=int((scores >= threshold).sum()), **fields)


@dataclass
class ScoreSummary:
    """What a scoring run did; ``str()`` gives the text the CLI prints at the end."""

    threshold: float
    shards_scored: int = 0
    shards_skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    rows_scored: int = 0
    rows_skipped: int = 0
    rows_resumed: int = 0  # rows of partly scored shards taken from an interrupted run's checkpoints
    seconds: float = 0.0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(HISTOGRAM_BINS, dtype=np.int64))
    above_threshold: int = 0  # rows with a score >= threshold (exact, not from the bins)
    outcomes: list[ShardOutcome] = field(default_factory=list)  # one per shard, in finishing order
    task: tuple[int, int] = (0, 1)  # (task index, number of tasks) of a partitioned run
    shards_elsewhere: int = 0  # shards left to the other tasks of a partitioned run
    leased: list[tuple[str, str]] = field(default_factory=list)  # (shard, holder): left to another live run
    embedded: int = 0  # documents sent to the embedder, of embedded_of scored documents whose model says
    embedded_of: int = 0

    @property
    def rows(self) -> int:
        return self.rows_scored + self.rows_skipped + self.rows_resumed

    @property
    def docs_per_second(self) -> float:
        return self.rows_scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def redone(self) -> list[str]:
        """Why each redone shard was redone (one entry per shard)."""
        return [o.redone for o in self.outcomes if o.redone]

    def add(self, outcome: ShardOutcome) -> None:
        """Fold one shard's outcome in."""
        self.outcomes.append(outcome)
        if outcome.status == "failed":
            self.failures.append((outcome.path, outcome.message))
            return
        if outcome.status == "leased":
            self.leased.append((outcome.name, outcome.message))
            return
        if outcome.status == "skipped":
            self.shards_skipped += 1
            self.rows_skipped += outcome.rows
        else:
            self.shards_scored += 1
            self.rows_scored += outcome.rows - outcome.resumed
            self.rows_resumed += outcome.resumed
            self.embedded += outcome.embedded
            self.embedded_of += outcome.embedded_of
        self.histogram += outcome.histogram
        self.above_threshold += outcome.above

    def add_scores(self, scores: np.ndarray) -> None:
        """Count scores into the histogram and the above-threshold count (no shard bookkeeping)."""
        scores = np.asarray(scores)
        self.histogram += histogram(scores)
        self.above_threshold += int((scores >= self.threshold).sum())

    def merge(self, other: "ScoreSummary") -> None:
        for outcome in other.outcomes:
            self.add(outcome)

    def __str__(self) -> str:
        from ..provenance import describe_redone
        from ..shardjob import leased_lines

        redone = describe_redone(self.redone)
        lines = [
            f"shards: {self.shards_scored} scored, {self.shards_skipped} already complete, "
            f"{len(self.failures)} failed" + (f"; {redone}" if redone else "")
            + (f", {len(self.leased)} left to another run writing them" if self.leased else "")
            + (f" (task {self.task[0]} of {self.task[1]}; {self.shards_elsewhere} shards are other tasks')"
               if self.task[1] > 1 else ""),
            f"rows: {self.rows:,} ({self.rows_scored:,} scored in {self.seconds:.1f} s, "
            f"{self.docs_per_second:,.1f} docs/s"
            + (f", {self.rows_resumed:,} resumed from checkpoints" if self.rows_resumed else "") + ")",
        ]
        if self.embedded_of:
            lines.append(f"embedded: {self.embedded:,} of {self.embedded_of:,} scored documents "
                         f"({100 * self.embedded / self.embedded_of:.1f}%; the others were scored by the lexical "
                         "scorer alone or were blank)")
        total = int(self.histogram.sum())
        if total:
            lines.append("edu_score histogram:")
            peak = max(int(self.histogram.max()), 1)
            for i, count in enumerate(self.histogram):
                bar = "#" * int(round(30 * count / peak))
                lines.append(f"  {i / HISTOGRAM_BINS:.1f}-{(i + 1) / HISTOGRAM_BINS:.1f} {bar:<30} {count:,}")
            lines.append(
                f"above threshold {self.threshold:g}: {self.above_threshold:,} of {total:,} "
                f"({100 * self.above_threshold / total:.1f}%)"
            )
        lines += leased_lines(self.leased)
        for path, error in self.failures:
            lines.append(f"failed: {path}: {error}")
        return "\n".join(lines)

    def stats(self) -> dict:
        """Machine-readable statistics (``--stats-json``)."""
        done = [o for o in self.outcomes if o.status != "failed"]
        return {
            "command": "score",
            "task": {"index": self.task[0], "count": self.task[1], "shards_elsewhere": self.shards_elsewhere},
            "shards": {"scored": self.shards_scored, "skipped": self.shards_skipped,
                       "failed": len(self.failures), "redone": len(self.redone), "leased": len(self.leased)},
            "rows": {"total": self.rows, "scored": self.rows_scored, "skipped": self.rows_skipped,
                     "resumed": self.rows_resumed, "above_threshold": self.above_threshold},
            "bytes": sum(o.bytes_in for o in done),
            "tokens": sum(o.tokens for o in done),
            "seconds": round(self.seconds, 6),
            "docs_per_second": round(self.docs_per_second, 3),
            "threshold": self.threshold,
            # documents the model sent to its embedder (a cascade sends only the ones its lexical
            # scorer is unsure of or has not seen the like of); share: null when the model does not say
            "embedded": {"documents": self.embedded, "of": self.embedded_of,
                         "share": round(self.embedded / self.embedded_of, 6) if self.embedded_of else None},
            "histogram": {"bins": HISTOGRAM_BINS, "edges": [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)],
                          "counts": [int(c) for c in self.histogram]},
            "per_shard": [
                {"path": o.path, "name": o.name, "status": o.status, "rows": o.rows, "resumed": o.resumed,
                 "bytes": o.bytes_in, "tokens": o.tokens, "seconds": round(o.seconds, 6),
                 **({"redone": o.redone} if o.redone else {}), **({"error": o.message} if o.message else {})}
                for o in sorted(self.outcomes, key=lambda o: o.name)
            ],
            "failures": [{"path": p, "error": e} for p, e in self.failures],
        }
