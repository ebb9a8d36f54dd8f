"""phifilter: find the textbook-quality part of code and web corpora.

The public API, used by the CLI and the notebooks::

    from phifilter import score_shards, EduClassifier, Embedder
    summary = score_shards("data/shards/", "data/scored/")

Names are imported from their modules on first use (PEP 562), so ``import phifilter`` and
``phifilter --help`` load neither numpy nor pyarrow, let alone torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "DOC_MODES": "chunking",
    "DocEmbeddings": "chunking",
    "EduClassifier": "classifier",
    "default_model_path": "classifier",
    "Shard": "corpus",
    "find_shards": "corpus",
    "iter_batches": "corpus",
    "EmbedConfig": "embcache",
    "EmbeddingCache": "embcache",
    "EmbedSummary": "embcache",
    "embed_shards": "embcache",
    "run_contamination": "contamination",
    "DEFAULT_EMBEDDER": "embed",
    "Embedder": "embed",
    "InputError": "errors",
    "ModelError": "errors",
    "OutputError": "errors",
    "OptionError": "errors",
    "PhifilterError": "errors",
    "EvalConfig": "evaluate",
    "EvalReport": "evaluate",
    "evaluate_model": "evaluate",
    "EnsembleScorer": "ensemble",
    "ExclusionSet": "exclude",
    "load_exclusions": "exclude",
    "FastTextScorer": "foreign",
    "HFScorer": "foreign",
    "MeanPoolEmbedder": "hf_embed",
    "make_embedder": "hf_embed",
    "AgreementConfig": "label",
    "BackendConfig": "label",
    "LabelConfig": "label",
    "LabelSummary": "label",
    "compare_labels": "label",
    "label_file": "label",
    "AblateConfig": "pretrain",
    "run_ablation": "pretrain",
    "ReportConfig": "report",
    "ReportSummary": "report",
    "build_report": "report",
    "SampleConfig": "sample",
    "SampleSummary": "sample",
    "sample_shards": "sample",
    "EnsembleConfig": "scorerset",
    "ScorerSet": "scorerset",
    "build_ensemble": "scorerset",
    "ScoreConfig": "scoring",
    "ScoreSummary": "scoring",
    "score_shards": "scoring",
    "FilterSummary": "select",
    "filter_shards": "select",
    "SuggestConfig": "suggest",
    "SuggestSummary": "suggest",
    "suggest": "suggest",
    "TrainConfig": "train",
    "train_model": "train",
}

if TYPE_CHECKING:  # static tools (IDEs, type checkers, docs) see the plain imports
    from .chunking import DOC_MODES, DocEmbeddings
    from .classifier import EduClassifier, default_model_path
    from .contamination import run_contamination
    from .corpus import Shard, find_shards, iter_batches
    from .embcache import EmbedConfig, EmbeddingCache, EmbedSummary, embed_shards
    from .embed import DEFAULT_EMBEDDER, Embedder
    from .errors import InputError, ModelError, OptionError, OutputError, PhifilterError
    from .evaluate import EvalConfig, EvalReport, evaluate_model
    from .ensemble import EnsembleScorer
    from .exclude import ExclusionSet, load_exclusions
    from .foreign import FastTextScorer, HFScorer
    from .hf_embed import MeanPoolEmbedder, make_embedder
    from .label import AgreementConfig, BackendConfig, LabelConfig, LabelSummary, compare_labels, label_file
    from .pretrain import AblateConfig, run_ablation
    from .report import ReportConfig, ReportSummary, build_report
    from .sample import SampleConfig, SampleSummary, sample_shards
    from .scorerset import EnsembleConfig, ScorerSet, build_ensemble
    from .scoring import ScoreConfig, ScoreSummary, score_shards
    from .select import FilterSummary, filter_shards
    from .suggest import SuggestConfig, SuggestSummary, suggest
    from .train import TrainConfig, train_model


__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'phifilter' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
