"""`phifilter contamination`: how close is each document to an evaluation problem?

phi-1 (§5) checked that its gains were not memorised benchmark answers by measuring every
training document's similarity to every HumanEval problem two ways and pruning the most
similar. This module does the same for any corpus, against HumanEval and MBPP (shipped with
phifilter) and any other problem set given as JSON lines:

- **embedding**: cosine of the bundled embedder's vectors (all-MiniLM-L6-v2). A document is
  cut into chunks the way scoring cuts it (at top-level ``def``/``class`` boundaries, at most
  ``max_chunks`` chunks of 256 tokens) and its similarity is the *best chunk*'s: a solution
  planted in a long file fills one chunk and would be diluted by a whole-document mean, and a
  truncated document would hide everything after its first 256 tokens. A problem is embedded
  whole (prompt and reference solution; all fit in 256 tokens or nearly).
- **syntax**: :mod:`phifilter.syntax_sim`, names, literals, comments and docstrings ignored
  (``ast`` units; a token sequence for code that does not parse).

``max_similarity`` is the larger of the two, in [0, 1] (a negative cosine counts as 0), with
``nearest_problem`` and ``method`` (``embedding``, ``ast`` or ``tokens``) of the larger.

Output folder::

    contamination.json        settings (a rerun must match them)
    parts/p<shard>-<row>.parquet  one per batch of rows while the run is under way (resume)
    contamination.parquet     one row per document: id (when the input has one), shard, row,
                              max_similarity, nearest_problem, method, and both methods' figures
    contamination.md, .html   the distribution and the top matches side by side
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import InputError, OutputError

from .contamination_report import EMBEDDING_NEAR_COPY, SUMMARY_FILES, SYNTAX_NEAR_COPY  # noqa: F401 (re-exported)
from .contamination_run import PARTS, RESULT, log

SETTINGS = "contamination.json"
FORMAT = 1


@dataclass(frozen=True)
class EvalProblem:
    task_id: str
    text: str  # what is embedded: prompt + reference solution
    code: str  # what is parsed: the reference code


def shipped_problems(eval_dir=None) -> list[EvalProblem]:
    """HumanEval (164) and every MBPP problem (974): any of them in training data flatters a model.
    ``eval_dir``: another folder holding the two files (default: the copies shipped with phifilter)."""
    from .pretrain.evalsets import load_humaneval, load_mbpp

    out = [EvalProblem(p.task_id, p.reference, p.reference) for p in load_humaneval(eval_dir)]
    out += [EvalProblem(p.task_id, p.reference, p.solution) for p in load_mbpp(eval_dir, split="all")]
    return out


def read_eval_file(path: str | os.PathLike) -> list[EvalProblem]:
    """Problems from JSON lines: ``task_id`` plus HumanEval's ``prompt`` + ``canonical_solution``,
    or MBPP's ``code`` (with ``text``), or a plain ``solution`` (with an optional ``prompt``)."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable JSON-lines file ({e}); --eval wants one problem per line") from None
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not ("task_id" in row or "name" in row):
            raise InputError(f"{path}: line {n} has no task_id; each --eval line needs task_id and code")
        tid = str(row.get("task_id", row.get("name")))
        if "canonical_solution" in row:
            code = str(row.get("prompt", "")) + str(row["canonical_solution"])
            out.append(EvalProblem(tid, code, code))
        elif "code" in row or "solution" in row:
            code = str(row.get("code", row.get("solution")))
            text = str(row.get("text", row.get("prompt", "")))
            out.append(EvalProblem(tid, f"{text}\n{code}" if text else code, code))
        else:
            raise InputError(f"{path}: line {n} ({tid}) has none of canonical_solution, code or solution")
    if not out:
        raise InputError(f"{path}: holds no problems")
    return out


def load_problems(eval_files: Sequence[str | os.PathLike] = (), shipped: bool = True) -> list[EvalProblem]:
    problems = shipped_problems() if shipped else []
    for f in eval_files:
        problems += read_eval_file(f)
    if not problems:
        raise InputError("no evaluation problems: give --eval FILE or drop --no-shipped")
    return problems


class Matcher:
    """Every document of a batch against every problem, by embedding and by syntax."""

    def __init__(self, problems: Sequence[EvalProblem], embedder=None, max_chunks: int = 8,
                 methods: Sequence[str] = ("embedding", "syntax")):
        from .syntax_sim import SyntaxIndex

        self.problems = list(problems)
        self.methods = tuple(methods)
        self.max_chunks = max_chunks
        self.index = SyntaxIndex([p.code for p in self.problems]) if "syntax" in self.methods else None
        self.embedder = embedder
        self._vectors = None
        self.seconds = {"syntax": 0.0, "embedding": 0.0}
        self.chunks = 0

    def _problem_vectors(self):
        if self._vectors is None:
            from .embed import Embedder

            self.embedder = self.embedder or Embedder()
            self._vectors = _unit_rows(self.embedder.encode([p.text for p in self.problems]))
        return self._vectors

    def embedding_best(self, texts: Sequence[str]):
        """Per text: (best cosine, problem index, first line, last line of the best chunk)."""
        import numpy as np

        from .chunking import layout_documents

        vectors = self._problem_vectors()
        chunk_texts, owner = layout_documents(self.embedder, texts, chunking="chunk", max_chunks=self.max_chunks)[:2]
        self.chunks += len(chunk_texts)
        step = 256
        parts = [self.embedder.encode(chunk_texts[i : i + step]) for i in range(0, len(chunk_texts), step)]
        if not parts:
            return [(0.0, -1, None, None)] * len(texts)
        docs_vectors = np.concatenate(parts)
        sims = _unit_rows(docs_vectors) @ vectors.T  # chunks x problems
        best_p = sims.argmax(axis=1)
        best = sims[np.arange(len(sims)), best_p]
        out = [(0.0, -1, None, None)] * len(texts)
        for c, d in enumerate(owner):
            if best[c] > out[d][0]:
                first, last = _line_span(texts[d], chunk_texts[c])
                out[d] = (float(min(1.0, best[c])), int(best_p[c]), first, last)
        return out

    def match(self, texts: Sequence[str]) -> dict:
        """Columns for a batch of documents (see the module docstring)."""
        from .syntax_sim import NO_MATCH, units_of_all

        n = len(texts)
        began = time.monotonic()
        syn = self.index.match_documents(units_of_all(texts)) if self.index else [NO_MATCH] * n
        self.seconds["syntax"] += time.monotonic() - began
        began = time.monotonic()
        emb = self.embedding_best(texts) if "embedding" in self.methods and n else [(0.0, -1, None, None)] * n
        self.seconds["embedding"] += time.monotonic() - began
        name = lambda i: self.problems[i].task_id if i >= 0 else None  # noqa: E731
        cols = {k: [] for k in ("max_similarity", "nearest_problem", "method", "match_first_line",
                                "match_last_line", "embedding_similarity", "embedding_problem",
                                "syntax_similarity", "syntax_problem", "syntax_method")}
        for s, (e, ep, ef, el) in zip(syn, emb):
            use_syntax = s.similarity > e
            best = max(s.similarity, e)
            cols["max_similarity"].append(best)
            cols["nearest_problem"].append((name(s.problem) if use_syntax else name(ep)) if best > 0 else None)
            cols["method"].append((s.kind if use_syntax else "embedding") if best > 0 else None)
            cols["match_first_line"].append(s.first_line if use_syntax else ef)
            cols["match_last_line"].append(s.last_line if use_syntax else el)
            cols["embedding_similarity"].append(e)
            cols["embedding_problem"].append(name(ep))
            cols["syntax_similarity"].append(s.similarity)
            cols["syntax_problem"].append(name(s.problem))
            cols["syntax_method"].append(s.kind)
        return cols


def _unit_rows(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _line_span(text: str, chunk: str) -> tuple[int | None, int | None]:
    at = text.find(chunk[:400]) if chunk else -1
    if at < 0:
        return None, None
    first = text.count("\n", 0, at) + 1
    return first, first + chunk.rstrip("\n").count("\n")


# ---------------------------------------------------------------------------------------------
# the command


def _is_ours(out: Path, p: Path) -> bool:
    rel = p.relative_to(out)
    if not (out / SETTINGS).is_file():
        return False
    if rel.parts[0] == PARTS:
        return len(rel.parts) == 2 and rel.name.startswith("p") and rel.suffix == ".parquet"
    return len(rel.parts) == 1 and rel.name in (SETTINGS, RESULT, *SUMMARY_FILES)


def _settings(shards, problems, methods, max_chunks, batch_rows, text_column, id_column) -> dict:
    from .provenance import fingerprint

    digest = hashlib.sha256()
    for p in problems:
        digest.update(json.dumps([p.task_id, p.text, p.code]).encode())
    return {"format": FORMAT, "inputs": [[str(s.path), fingerprint(s.path)] for s in shards],
            "problems": len(problems), "problems_sha256": digest.hexdigest(), "methods": list(methods),
            "max_chunks": max_chunks, "batch_rows": batch_rows, "text_column": text_column,
            "id_column": id_column}


def _check_settings(out: Path, settings: dict) -> None:
    path = out / SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings if not old or old.get(k) != json.loads(json.dumps(settings[k])))
            raise OutputError(f"{out}: holds a contamination audit with other settings ({', '.join(changed)}); "
                              "rerun with the same inputs and options, or choose another -o folder")
        return
    from .atomic import write_json

    write_json(path, settings, indent=1)


def run_contamination(inputs, output_dir, eval_files: Sequence[str] = (), shipped: bool = True,
                      methods: Sequence[str] = ("embedding", "syntax"), max_chunks: int = 8,
                      batch_rows: int = 512, text_column: str = "text", id_column: str = "id",
                      device: str = "auto", top: int = 20, progress: bool = False,
                      stats_json=None) -> dict:
    """Audit ``inputs`` (shards) against the evaluation problems; write the output folder."""
    from .corpus import OutputLock, find_shards
    from .location import store_of
    from .outputs import claim_folder

    started = time.monotonic()
    methods = tuple(methods)
    if not methods or set(methods) - {"embedding", "syntax"}:
        raise InputError(f"--methods {','.join(methods)}: choose embedding, syntax or both")
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    shards = find_shards(specs)
    out = claim_folder(output_dir, lambda p: _is_ours(Path(output_dir), p), "a contamination audit", inputs=specs)
    store_of(out).needs_local(output_dir, "the contamination audit writes a local folder; copy it to the store after")
    problems = load_problems(eval_files, shipped)
    out.mkdir(parents=True, exist_ok=True)
    with OutputLock(out):
        from .atomic import remove_stale_temporaries

        remove_stale_temporaries(out)
        remove_stale_temporaries(out / PARTS) if (out / PARTS).is_dir() else None
        _check_settings(out, _settings(shards, problems, methods, max_chunks, batch_rows, text_column, id_column))
        stats = {"command": "contamination", "output": str(out), "problems": len(problems),
                 "methods": list(methods), "stages": {}}
        from .contamination_run import audit_shards, finish

        matcher = Matcher(problems, _embedder(device) if "embedding" in methods else None, max_chunks, methods)
        audit_shards(shards, out, matcher, batch_rows, text_column, id_column, progress, stats)
        summary = finish(shards, out, problems, text_column, top, stats)
    stats["seconds"] = round(time.monotonic() - started, 6)
    computed = stats["rows"]["computed"]
    stats["seconds_per_document"] = (round(stats["stages"]["match_seconds"] / computed, 6) if computed else None)
    if stats_json is not None:
        from .stats import rate, write_stats

        stats["docs_per_second"] = rate(computed, stats["stages"]["match_seconds"])
        write_stats(stats_json, stats)
    summary["stats"] = stats
    return summary


def _embedder(device: str):
    from .embed import Embedder

    return Embedder(device=device)
