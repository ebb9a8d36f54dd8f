"""phifilter: find the textbook-quality part of code and web corpora.

The public API, used by the CLI and the notebooks::

    from phifilter import score_shards, EduClassifier, Embedder
    summary = score_shards("data/shards/", "data/scored/")
"""

__version__ = "0.1.0"

from .classifier import EduClassifier, default_model_path  # noqa: E402
from .corpus import Shard, find_shards, iter_batches  # noqa: E402
from .embed import DEFAULT_EMBEDDER, Embedder  # noqa: E402
from .errors import InputError, ModelError, OutputError, PhifilterError  # noqa: E402
from .pretrain import AblateConfig, run_ablation  # noqa: E402  (no torch until a run starts)
from .score import ScoreConfig, ScoreSummary, score_shards  # noqa: E402
from .select import FilterSummary, filter_shards  # noqa: E402
from .train import TrainConfig, train_model  # noqa: E402

__all__ = [
    "AblateConfig",
    "DEFAULT_EMBEDDER",
    "EduClassifier",
    "Embedder",
    "FilterSummary",
    "InputError",
    "ModelError",
    "OutputError",
    "PhifilterError",
    "ScoreConfig",
    "ScoreSummary",
    "Shard",
    "TrainConfig",
    "default_model_path",
    "filter_shards",
    "find_shards",
    "iter_batches",
    "run_ablation",
    "score_shards",
    "train_model",
]
