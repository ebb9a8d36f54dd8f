"""`phifilter score` as a package: shards in, the same shards plus a score column out.

Imports run one way, top to bottom:

- :mod:`.run` (``score_shards``): checks every input, takes the output lock, drives the
  progress bar, picks an engine; the only module that knows about all the others.
- :mod:`.engines` ``local`` / ``processes`` / ``ray``: spread shards over threads, worker
  processes or a Ray cluster; each runs :func:`.flow.score_shard_list` and returns a
  :class:`.summary.ScoreSummary`.
- :mod:`.flow`: read -> model stages -> write for a list of shards, over :class:`.batch.Batch`.
- :mod:`.model`: loading the model, its speed knobs, the stages it declares, its identity.
- :mod:`.batch`, :mod:`.summary`, :mod:`.config`: the small types everything above shares.
"""

from .config import ScoreConfig
from .run import score_shards
from .summary import ScoreSummary, ShardOutcome

__all__ = ["ScoreConfig", "ScoreSummary", "ShardOutcome", "score_shards"]
