"""The options of one scoring run (:class:`ScoreConfig`) and their checks."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Sequence

from ..defaults import EMBED_BATCH_SIZE
from ..errors import OptionError

ENGINES = ("local", "ray")
ON_ERROR = ("raise", "skip")


@dataclass
class ScoreConfig:
    """Options of `phifilter score` (the defaults suit a CPU; raise batch sizes on a GPU)."""

    text_column: str = "text"
    score_column: str = "edu_score"
    int_score_column: str | None = None  # FineWeb-Edu style: the expected 0-5 score, rounded (int8)
    # rows per Arrow batch read (and per output row group); None: 2048, or 2048 / max_chunks
    # for a chunking model, so a batch holds about as many texts to embed either way
    read_batch_rows: int | None = None
    embed_batch_size: int = EMBED_BATCH_SIZE  # documents per forward pass of the embedder
    max_length: int | None = None  # None: the model's own
    device: str = "auto"
    on_error: str = "raise"  # or "skip": report a bad shard and go on with the rest
    # Embedding cache (`phifilter embed`): documents whose id it holds are not embedded again.
    embeddings: str | None = None
    id_column: str = "id"
    # -- throughput knobs (docs/scaling.md) --
    dtype: str = "auto"  # embedder dtype: auto (float16 on CUDA), float32, float16, bfloat16
    tokens_per_batch: int | None = None  # token budget per forward pass (None: embed_batch_size * max_length)
    quantize: str | None = None  # "int8": dynamic int8 Linear layers (CPU only; scores change slightly)
    num_threads: int | None = None  # torch intra-op threads (None: one per core)
    devices: str | Sequence[str] | None = None  # "cuda:0,cuda:1", "all", "cpu,cpu": one worker process each
    engine: str = "local"  # or "ray"
    ray_address: str | None = None  # join this Ray cluster (None: start a local one)
    pipeline_depth: int = 2  # items queued between two pipeline stages
    tensor_forest: bool | None = None  # forest as tensors on the embedder's device (None: on CUDA only)
    embedder_revision: str | None = None  # hub revision to load the embedder at (default: the model's)
    embedder_sha256: dict | None = None  # {file: sha256} the embedder's files must match
    # -- partitioned runs (docs/scaling.md): this task scores its fixed share of the shards --
    task_index: int | None = None  # 0-based; None: $SLURM_ARRAY_TASK_ID, else 0
    num_tasks: int | None = None  # None: $SLURM_ARRAY_TASK_COUNT, else 1
    stats_json: str | None = None  # write the run statistics here (JSON)
    output_format: str | None = None  # None: each output keeps its input's format; "parquet" or "jsonl"

    def with_options(self, **options) -> "ScoreConfig":
        """A copy with ``options`` applied; the caller's config is never changed."""
        for key in options:
            if key not in {f.name for f in dataclasses.fields(self)}:
                raise TypeError(f"score_shards() got an unexpected option {key!r}")
        return dataclasses.replace(self, **options)

    def check(self) -> None:
        """Refuse impossible option values before any work."""
        if self.on_error not in ON_ERROR:
            raise OptionError(f"--on-error {self.on_error}: expected 'raise' or 'skip'", "--on-error")
        if self.engine not in ENGINES:
            raise OptionError(f"--engine {self.engine}: expected 'local' or 'ray'", "--engine")
        if self.output_format not in (None, "parquet", "jsonl"):
            raise OptionError(f"--output-format {self.output_format}: expected 'parquet' or 'jsonl'", "--output-format")


def partition_of(cfg: ScoreConfig, environ=os.environ) -> tuple[int, int]:
    """(task index, number of tasks): the options, else Slurm's array variables, else (0, 1)."""
    from .partition import task_of

    return task_of(cfg.task_index, cfg.num_tasks, environ)
