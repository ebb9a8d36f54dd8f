"""phifilter: find the textbook-quality part of code and web corpora.

The public API, used by the CLI and the notebooks::

    from phifilter import score_shards, EduClassifier, Embedder
    summary = score_shards("data/shards/", "data/scored/")
"""

__version__ = "0.1.0"

from .chunking import DOC_MODES, DocEmbeddings  # noqa: E402
from .classifier import EduClassifier, default_model_path  # noqa: E402
from .corpus import Shard, find_shards, iter_batches  # noqa: E402
from .embcache import EmbeddingCache, EmbedSummary, embed_shards  # noqa: E402
from .embed import DEFAULT_EMBEDDER, Embedder  # noqa: E402
from .errors import InputError, ModelError, OutputError, PhifilterError  # noqa: E402
from .evaluate import EvalReport, evaluate_model  # noqa: E402
from .exclude import ExclusionSet, load_exclusions  # noqa: E402
from .hf_embed import MeanPoolEmbedder, make_embedder  # noqa: E402
from .label import LabelConfig, LabelSummary, compare_labels, label_file  # noqa: E402
from .pretrain import AblateConfig, run_ablation  # noqa: E402  (no torch until a run starts)
from .report import ReportConfig, ReportSummary, build_report  # noqa: E402
from .sample import SampleConfig, SampleSummary, sample_shards  # noqa: E402
from .score import ScoreConfig, ScoreSummary, score_shards  # noqa: E402
from .select import FilterSummary, filter_shards  # noqa: E402
from .suggest import SuggestSummary, suggest  # noqa: E402
from .train import TrainConfig, train_model  # noqa: E402

__all__ = [
    "AblateConfig",
    "suggest",
    "SuggestSummary",
    "make_embedder",
    "MeanPoolEmbedder",
    "evaluate_model",
    "EvalReport",
    "embed_shards",
    "EmbedSummary",
    "EmbeddingCache",
    "DocEmbeddings",
    "DOC_MODES",
    "DEFAULT_EMBEDDER",
    "EduClassifier",
    "Embedder",
    "ExclusionSet",
    "FilterSummary",
    "InputError",
    "LabelConfig",
    "LabelSummary",
    "ModelError",
    "OutputError",
    "PhifilterError",
    "ReportConfig",
    "ReportSummary",
    "SampleConfig",
    "SampleSummary",
    "ScoreConfig",
    "ScoreSummary",
    "Shard",
    "TrainConfig",
    "build_report",
    "compare_labels",
    "default_model_path",
    "filter_shards",
    "find_shards",
    "iter_batches",
    "label_file",
    "load_exclusions",
    "run_ablation",
    "sample_shards",
    "score_shards",
    "train_model",
]
