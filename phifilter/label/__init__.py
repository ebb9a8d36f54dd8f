"""LLM labelling of seed sets: rubrics, backends, the annotator with its cache, and agreement.

Heavy or optional pieces (transformers, scikit-learn) are imported only where used.
"""

from .agreement import Agreement, AgreementConfig, compare_labels
from .annotate import LabelConfig, LabelError, LabelSummary, default_cache_path, label_file
from .backends import BackendConfig, BackendError, OpenAIChatBackend, Reply, RetryableError, TransformersBackend
from .parse import ParsedReply, read_reply
from .prompt import Rubric, build_messages, load_rubric, parse_reply
from .standin import Canned, ChatRequest, StandinServer, heuristic_rating

__all__ = [
    "Agreement",
    "AgreementConfig",
    "BackendConfig",
    "BackendError",
    "Canned",
    "ChatRequest",
    "LabelConfig",
    "LabelError",
    "LabelSummary",
    "OpenAIChatBackend",
    "ParsedReply",
    "Reply",
    "RetryableError",
    "Rubric",
    "StandinServer",
    "TransformersBackend",
    "build_messages",
    "compare_labels",
    "default_cache_path",
    "heuristic_rating",
    "label_file",
    "load_rubric",
    "parse_reply",
    "read_reply",
]
