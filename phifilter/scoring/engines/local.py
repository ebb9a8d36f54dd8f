"""The local engine: every shard through the threaded flow in this process."""

from __future__ import annotations

from ..flow import score_shard_list
from ..summary import ScoreSummary


def score_locally(model, clf, shards, out_dir, cfg, on_rows=None) -> ScoreSummary:
    """Score ``shards`` with ``clf`` here; ``model`` (what other engines ship to workers) is unused."""
    summary = ScoreSummary(threshold=float(clf.threshold))
    score_shard_list(clf, shards, out_dir, cfg, summary.add, on_rows)
    return summary
