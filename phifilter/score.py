"""Compatibility names: `phifilter score` now lives in the :mod:`phifilter.scoring` package.

Kept so code written against ``phifilter.score`` keeps working; new code imports from
:mod:`phifilter.scoring` (or ``from phifilter import score_shards``).
"""

from __future__ import annotations

from .devices import parse_devices
from .scoring.config import ScoreConfig
from .scoring.flow import output_schema
from .scoring.model import apply_throughput_options, checkpoint_key, default_read_batch_rows, load_model
from .scoring.run import score_shards
from .scoring.summary import HISTOGRAM_BINS, ScoreSummary

__all__ = [
    "HISTOGRAM_BINS", "ScoreConfig", "ScoreSummary", "apply_throughput_options", "checkpoint_key",
    "default_read_batch_rows", "load_model", "output_schema", "parse_devices", "score_shards",
]
