"""phifilter inside a datatrove pipeline: a step that scores, a step that filters.

``pip install 'phifilter[datatrove]'``, then::

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from phifilter.datatrove import EduFilter, EduScorer

    LocalPipelineExecutor(pipeline=[
        JsonlReader("data/in/"),
        EduScorer(),                      # the bundled model -> doc.metadata["edu_score"]
        EduFilter(threshold=0.5),         # keep edu_score >= 0.5
        JsonlWriter("data/out/"),
    ], tasks=4).run()

:class:`EduScorer` takes any model ``phifilter score --model`` takes: None (the bundled
model), a model folder, an ensemble folder, a Hugging Face folder (``[hf:]DIR[#LABEL]``),
``fasttext:PATH#LABEL``, or ``{column: spec}`` for several scores at once (one metadata key
each). Documents are scored in batches of ``batch_size`` with the same model code as
``phifilter score``, so the scores equal its scores (``tests/test_datatrove.py`` checks it in a
real ``LocalPipelineExecutor`` pipeline, within 1e-4). The model is loaded once per task, when
the step first runs, so the step pickles small for datatrove's worker processes.
"""

from __future__ import annotations

try:
    from datatrove.pipeline.base import PipelineStep
    from datatrove.pipeline.filters.base_filter import BaseFilter
except ImportError as e:  # an optional extra
    raise ImportError("phifilter.datatrove needs datatrove: pip install 'phifilter[datatrove]'") from e


class EduScorer(PipelineStep):
    """Adds ``doc.metadata[column]`` (float) to every Document: its phifilter score."""

    name = "phifilter score"
    type = "🔢 - SCORER"

    def __init__(self, model=None, column: str = "edu_score", batch_size: int = 256, device: str = "auto",
                 max_length: int | None = None):
        super().__init__()
        self.model, self.column, self.batch_size = model, column, int(batch_size)
        self.device, self.max_length = device, max_length
        self._scorer = None

    def __getstate__(self):  # datatrove ships steps to its workers: without the loaded model
        state = dict(self.__dict__)
        state["_scorer"] = None
        return state

    def scorer(self):
        """The loaded model (a ScorerSet for foreign or several scorers), loaded on first use."""
        if self._scorer is None:
            from .scorerset import plan_models
            from .scoring.config import ScoreConfig
            from .scoring.model import ready_model

            cfg = ScoreConfig(device=self.device, max_length=self.max_length)
            self._scorer = ready_model(plan_models(self.model, self.column), cfg)
        return self._scorer

    def score(self, texts: list[str]) -> dict:
        """{column: float32 scores} for ``texts``: one column, or one per member of a ScorerSet."""
        import numpy as np

        clf = self.scorer()
        members = getattr(clf, "members", None)
        if members is None:
            return {self.column: np.asarray(clf.edu_score(texts), np.float32)}
        return {name: np.asarray(m.edu_score(texts), np.float32) for name, m in members}

    def run(self, data, rank: int = 0, world_size: int = 1):
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from self._scored(batch)
                batch = []
        if batch:
            yield from self._scored(batch)

    def _scored(self, docs):
        with self.track_time(unit="batch"):
            columns = self.score([d.text or "" for d in docs])
        for i, doc in enumerate(docs):
            for name, values in columns.items():
                doc.metadata[name] = float(values[i])
            self.stat_update("scored")
            yield doc


class EduFilter(BaseFilter):
    """Keeps Documents whose ``metadata[column]`` is at least ``threshold`` (put EduScorer first)."""

    name = "phifilter filter"

    def __init__(self, threshold: float = 0.5, column: str = "edu_score", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.threshold, self.column = float(threshold), column

    def filter(self, doc) -> bool | tuple[bool, str]:
        value = doc.metadata.get(self.column)
        if value is None:
            raise ValueError(f"document {doc.id}: no metadata {self.column!r}; put EduScorer(column="
                             f"{self.column!r}) before EduFilter in the pipeline")
        return True if float(value) >= self.threshold else (False, f"{self.column} < {self.threshold:g}")
