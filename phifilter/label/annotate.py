"""Label a Parquet file of documents with an LLM: prompts, concurrency, retries, cache, output.

The flow of :func:`label_file`:

1. Read the input (every column), pick a rubric per row (``--rubric``, or per the ``domain``
   column), hash each (document, rubric) pair and look it up in the cache. Identical pairs are
   asked once.
2. ``dry_run``: report what would be sent (requests, estimated tokens and cost; the
   summary's ``report``) and stop.
3. Otherwise send the missing pairs to the backend from a bounded pool of threads. Failures
   that may pass are retried with exponential backoff and full jitter, waiting at least as
   long as a ``Retry-After`` header asks. Each answer is committed to the cache as it arrives.
   With ``repair``, an answer in which no score can be read gets one short follow-up question
   (cached like any answer, under its own key). A local model's backend may cut a document to
   fit its context (``fit``); the cut is cached with the answer.
4. Write the output atomically: every input column plus ``llm_score`` (int8, 0-5 or null),
   ``llm_reason``, ``llm_model``, ``rubric_sha``, ``llm_parse`` (how the score was read:
   strict, fallback or none; see :mod:`phifilter.label.parse`), ``llm_repaired`` and
   ``llm_cut_at``. Scores are read from the cached raw replies by the current parser, which
   refuses a score that only echoes the document (counted in the summary as ``echoed``).

Stopping: ``max_requests`` stops sending after that many requests (repair re-asks included;
0 writes the output from the cache alone, without loading a model) and still writes the
output (rows never asked have null ``llm_model`` and ``rubric_sha``). A failure that survives
every retry, or Ctrl-C, stops sending, waits for the requests already in flight (their answers
are paid for, so they are kept), and leaves no output file; the cache keeps every answer, and
rerunning the same command asks only for what is missing.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import random
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from ..corpus import ShardWriter, check_text_column, iter_batches, open_parquet, texts_from_array
from ..location import as_location, store_of
from ..errors import InputError, OptionError, OutputError, PhifilterError
from .backends import BackendConfig, BackendError, Reply, RetryableError, prompt_style_for
from .cache import LabelCache
from .parse import NONE, PARSE_KINDS, STRICT, ParsedReply, read_reply
from .prompt import (
    CHARS_PER_TOKEN,
    REPAIR_QUESTION,
    Rubric,
    build_messages,
    document_sha,
    load_rubric,
    repair_messages,
    repair_sha,
)

OUTPUT_COLUMNS = ("llm_score", "llm_reason", "llm_model", "rubric_sha", "llm_parse", "llm_repaired", "llm_cut_at")
DOMAIN_RUBRICS = {"code": "code", "web": "web"}
DEFAULT_COMPLETION_TOKENS = 200  # per reply, for estimates when the cache has no history


class LabelError(PhifilterError):
    """Labelling stopped on an error that retries did not cure; answers so far are cached."""


@dataclass
class LabelConfig:
    """Options of `phifilter label`; ``backend`` says which model answers, unless :func:`label_file`
    is given a backend object."""

    text_column: str = "text"
    rubric: str = "auto"  # code, web, a file path, or auto: per row from domain_column
    domain_column: str = "domain"
    max_chars: int | None = None  # cut longer documents at a line break before sending
    cache: str | None = None  # default: <output stem>.cache.sqlite next to the output
    max_requests: int | None = None  # stop after sending this many requests (repairs included)
    retries: int = 5  # further attempts after the first, per request
    retry_delay: float = 1.0  # first backoff in seconds; doubles each attempt
    max_retry_delay: float = 60.0  # cap on one backoff (a longer Retry-After is still honoured)
    max_retry_after: float = 600.0  # a server asking to wait longer (a spent quota) stops the run
    dry_run: bool = False
    price_per_mtok: tuple[float, float] | None = None  # (prompt, completion) dollars per 1M tokens
    seed: int = 0  # for the jitter only
    repair: bool = False  # ask once more, briefly, when an answer has no readable score
    prompt_style: str = "standard"  # standard, compact (document first, question last: small local models), or
    # auto: compact for a local model (backend.kind transformers), else standard
    backend: BackendConfig | None = None  # what label_file builds the backend from when given none

    @classmethod
    def from_options(cls, **options) -> "LabelConfig":
        """`phifilter label`'s options in one config: the backend's (``backend`` names its kind,
        ``seed`` is its sampling seed) go into :attr:`backend`, the others into the config."""
        names = {f.name for f in dataclasses.fields(BackendConfig)} - {"kind"}
        backend = BackendConfig(kind=options.pop("backend", "openai"),
                                **{k: options[k] for k in names if k in options})
        return cls(backend=backend, **{k: v for k, v in options.items() if k not in names})


def parse_price(value: str | None) -> tuple[float, float] | None:
    """``--price-per-mtok``: 'PRICE' or 'PROMPT,COMPLETION' dollars per million tokens -> (prompt, completion)."""
    if value is None:
        return None
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 0:
        raise OptionError("expected a dollar price per million tokens, or PROMPT,COMPLETION", option="--price-per-mtok")
    return (parts[0], parts[-1])


@dataclass
class LabelSummary:
    """What a labelling run did; ``str()`` is what the CLI prints."""

    input: str
    output: str
    cache: str
    model: str
    rows: int = 0
    bytes_in: int = 0  # UTF-8 bytes of the input's texts (before --max-chars)
    blank: int = 0  # empty texts: never sent, llm_score null
    unique: int = 0  # distinct (document, rubric) pairs to label
    cached: int = 0  # of those, found in the cache before this run
    sent: int = 0  # documents sent this run (first attempts)
    answered: int = 0  # answers received and cached this run
    retries: int = 0  # extra attempts after failures
    unparsed: int = 0  # answers this run in which no score could be read (before any repair)
    repairs_sent: int = 0  # repair re-asks sent this run
    parses: dict = field(default_factory=dict)  # llm_parse value -> rows, in the output
    repaired: int = 0  # rows whose score came from a repair answer, in the output
    echoed: int = 0  # rows left without a score because their answer's only score echoed the document
    cut: int = 0  # rows whose document was cut to fit the model's context, in the output
    remaining: int = 0  # pairs still unlabelled when the run ended
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    per_rubric: dict = field(default_factory=dict)  # rubric name -> rows
    scores: dict = field(default_factory=dict)  # score (or None) -> rows, in the output
    stopped: str | None = None  # why the run stopped early
    written: bool = False
    retry_waits: list = field(default_factory=list)  # seconds waited before each retry
    report: list = field(default_factory=list)  # the dry run's lines

    def stats(self, failure: str | None = None) -> dict:
        """Machine-readable statistics (``--stats-json``); ``failure``: why the run stopped with an error."""
        from ..stats import rate

        status = "failed" if failure else "labelled"
        return {
            "command": "label", "input": self.input, "output": self.output, "cache": self.cache, "model": self.model,
            "seconds": round(self.seconds, 6),
            "shards": {"read": 1, "failed": int(bool(failure))},
            "rows": {"in": self.rows, "blank": self.blank, "unique": self.unique, "cached": self.cached,
                     "sent": self.sent, "answered": self.answered, "remaining": self.remaining,
                     "unparsed": self.unparsed, "repaired": self.repaired, "echoed": self.echoed,
                     "cut": self.cut},
            "bytes": {"in": self.bytes_in},
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "requests": {"sent": self.sent, "repairs_sent": self.repairs_sent, "retries": self.retries},
            "docs_per_second": rate(self.rows, self.seconds),
            "answers_per_second": rate(self.answered, self.seconds),
            "scores": {"null" if k is None else str(k): v for k, v in sorted(
                self.scores.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
            "parses": dict(sorted(self.parses.items())), "per_rubric": dict(sorted(self.per_rubric.items())),
            "stopped": self.stopped, "written": self.written,
            "per_shard": [{"path": self.input, "name": PurePosixPath(str(self.input)).name, "status": status,
                           "rows": self.rows, "bytes": self.bytes_in,
                           "tokens": self.prompt_tokens + self.completion_tokens, "seconds": round(self.seconds, 6),
                           **({"error": failure} if failure else {})}],
            "failures": [{"path": self.input, "error": failure}] if failure else [],
        }


    def __str__(self) -> str:
        if self.report:
            return "\n".join(self.report)
        lines = [
            f"{self.rows:,} rows, {self.unique:,} distinct documents to label ({self.blank:,} blank), "
            f"{self.cached:,} already in the cache {self.cache}",
            f"sent {self.sent:,} requests to {self.model}: {self.answered:,} answered, {self.retries:,} retries, "
            f"{self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion tokens in {self.seconds:.1f}s",
        ]
        if self.parses:
            kinds = ", ".join(f"{k} {self.parses.get(k, 0):,}" for k in PARSE_KINDS)
            lines.append(f"answer formats of {self.model}: {kinds}"
                         + (f" ({self.repaired:,} scored by the repair re-ask)" if self.repaired else ""))
        if self.repairs_sent:
            lines.append(f"repair re-asks sent this run: {self.repairs_sent:,}")
        if self.echoed:
            lines.append(f"{self.echoed:,} answers stated only a score that their document itself contains "
                         "(an echo, not a verdict): llm_score null, llm_parse none"
                         + ("" if self.repairs_sent else "; --repair asks those again"))
        if self.cut:
            lines.append(f"{self.cut:,} documents were cut to fit the model's context (see llm_cut_at)")
        if self.scores:
            hist = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.scores.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
            lines.append(f"llm_score counts: {hist}")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; {self.remaining:,} documents not labelled yet "
                         "(rerun the same command to continue)")
        if self.written:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


@dataclass
class _Job:
    """One distinct (document, rubric) pair to send, or the repair re-ask of its answer."""

    doc_sha: str
    rubric: Rubric
    messages: list[dict]
    text: str = ""  # the document as sent (after --max-chars)
    first_reply: str | None = None  # set for a repair re-ask: the answer being repaired

    @property
    def repair(self) -> bool:
        return self.first_reply is not None

    @property
    def key(self) -> tuple[str, str]:
        return (self.doc_sha, repair_sha(self.rubric.sha) if self.repair else self.rubric.sha)

    def build(self, document: str) -> list[dict]:
        """The messages for this job with ``document`` in place of the text (for cutting to fit)."""
        messages = build_messages(document, self.rubric)
        return repair_messages(messages, self.first_reply) if self.repair else messages

    def repair_job(self, reply: str) -> "_Job":
        return _Job(self.doc_sha, self.rubric, repair_messages(self.messages, reply), self.text, reply)

    @property
    def prompt_chars(self) -> int:
        return sum(len(m["content"]) for m in self.messages)


class _Stopped(Exception):
    """Raised inside a worker that gives up because the run is stopping."""


def default_cache_path(output: str | os.PathLike) -> Path:
    """``<output stem>.cache.sqlite`` beside the output (a URL beside a URL output)."""
    out = as_location(output)
    return out.with_name(PurePosixPath(out.name).stem + ".cache.sqlite")


def label_file(input: str | os.PathLike, output: str | os.PathLike, backend=None, config: LabelConfig | None = None,
               model_id: str | None = None, progress: bool = True, echo=None,
               stats_json: str | os.PathLike | None = None) -> LabelSummary:
    """Label ``input`` (Parquet) into ``output`` (Parquet); see the module docstring.

    ``backend`` is an :class:`~phifilter.label.backends.OpenAIChatBackend` or
    :class:`~phifilter.label.backends.TransformersBackend`, or a zero-argument callable that
    builds one (so a dry run never loads a model or needs a key); ``model_id`` names the model
    in the cache when ``backend`` is such a callable. Without one, the backend is built from
    ``config.backend`` (a :class:`~phifilter.label.backends.BackendConfig`). ``echo`` receives lines for the user
    (default: print to stderr).

    ``input``, ``output`` and ``config.cache`` may be local paths or URLs (``s3://...``). A cache
    on a store (the default for a URL output: beside it) is worked on as a local copy, merged
    with the published one, locked and published back (:mod:`phifilter.label.stored`); a URL
    output is written to a temporary key and published whole. ``stats_json``: also write the
    run's statistics there (:meth:`LabelSummary.stats`), a local path or a URL.
    """
    cfg = config or LabelConfig()
    if backend is None and cfg.backend is not None:  # nothing is loaded or sent yet (see backend_factory)
        backend, model_id = cfg.backend.factory(dry_run=cfg.dry_run)
    if cfg.prompt_style == "auto":
        cfg = dataclasses.replace(cfg, prompt_style=prompt_style_for(cfg.backend.kind if cfg.backend else "openai"))
    echo = echo or (lambda line: print(line, file=sys.stderr))
    started = time.monotonic()
    input, output = as_location(input), as_location(output)
    cache_path = _check_paths(input, output, cfg)
    from ..outputs import has_column
    from ..shardjob import claim_output

    # an existing labels file is replaced only if label wrote it (it has label's rubric_sha column);
    # --stats-json is never the paid answers (the cache) nor an input
    claim_output(output, "labels", [input], has_column("rubric_sha"), stats_json, others=[cache_path])
    if model_id is None:
        model_id = getattr(backend, "model_id", None)
    if not model_id:
        raise OptionError("no model given (--model)")
    table = _read_input(input, cfg)
    summary, row_keys, jobs = _plan(table, input, output, cache_path, model_id, cfg, echo)
    failure = None
    try:
        _label_and_write(table, output, cache_path, backend, model_id, cfg, summary, row_keys, jobs, progress, echo)
    except LabelError as e:
        failure = str(e)
        raise
    finally:
        summary.seconds = time.monotonic() - started
        if stats_json is not None and not cfg.dry_run and (failure is not None or summary.written):
            from ..stats import write_stats

            write_stats(stats_json, summary.stats(failure))
    return summary


def _check_paths(input, output, cfg: LabelConfig):
    """The cache's location, once the output and the cache are known to be neither the input
    nor each other, and the output a Parquet file in a folder that exists."""
    if output.suffix != ".parquet":
        raise OutputError(f"{output}: the labels are one Parquet file; give a name ending in .parquet")
    if output.resolve() == input.resolve():
        raise OutputError(f"{output}: is the input file; choose another --output (inputs are never overwritten)")
    if store_of(output).lacks(output.parent, folder=True):
        raise OutputError(f"{output}: folder {output.parent} does not exist; create it or choose another --output")
    cache_path = as_location(cfg.cache) if cfg.cache else default_cache_path(output)
    if cache_path.resolve() in (input.resolve(), output.resolve()):
        raise OutputError(f"{cache_path}: the cache may not be the input or output file")
    return cache_path


def _plan(table: pa.Table, input, output, cache_path, model_id: str, cfg: LabelConfig, echo):
    """(summary, each row's (document, rubric) key or None for a blank row, one job per key)."""
    replaced = [c for c in OUTPUT_COLUMNS if c in table.column_names]
    if replaced:
        echo(f"note: {input} already has {', '.join(replaced)}; the output replaces them (the input is unchanged)")
    texts = texts_from_array(table.column(cfg.text_column))
    text_bytes = sum(len(t.encode("utf-8", "replace")) for t in texts)
    if cfg.max_chars:
        from ..chunking import excerpt

        texts = [excerpt(t, cfg.max_chars) for t in texts]
    rubrics = _rubrics_per_row(table, cfg, input, echo)

    summary = LabelSummary(input=str(input), output=str(output), cache=str(cache_path), model=model_id, rows=len(texts),
                           bytes_in=text_bytes)
    row_keys: list[tuple[str, str] | None] = []
    jobs: dict[tuple[str, str], _Job] = {}
    for text, rubric in zip(texts, rubrics):
        summary.per_rubric[rubric.name] = summary.per_rubric.get(rubric.name, 0) + 1
        if not text.strip():
            summary.blank += 1
            row_keys.append(None)
            continue
        key = (document_sha(text), rubric.sha)
        row_keys.append(key)
        if key not in jobs:
            jobs[key] = _Job(key[0], rubric, build_messages(text, rubric), text)
    summary.unique = len(jobs)
    return summary, row_keys, jobs


def _label_and_write(table: pa.Table, output, cache_path, backend, model_id: str, cfg: LabelConfig,
                     summary: LabelSummary, row_keys: list, jobs: dict, progress: bool, echo) -> None:
    """Under the store locks: answer every job from the cache or the backend, publish a stored
    cache, and write the output (not for a dry run)."""
    stored = None
    local = store_of(cache_path).working_copy(cache_path, "label", file=True)
    if local != cache_path:  # SQLite needs a local file: a store's cache is worked on in a copy
        from .stored import StoredCache

        stored = StoredCache(cache_path, local, notice=echo)
        stored.prepare()
    locks = _store_locks(cache_path, output) if not cfg.dry_run else []
    with contextlib.ExitStack() as held:
        for lock in locks:
            held.enter_context(lock)
        if not cfg.dry_run:  # under the store locks: what a killed run left of the outputs they guard
            from ..atomic import TMP_MARK, remove_stale_siblings

            for path in (cache_path, output):  # (locally only those whose process is gone)
                remove_stale_siblings(path, marks=(TMP_MARK,))
        local_existed = stored is not None and stored.local.exists()
        with LabelCache(stored.local if stored else cache_path, notice=echo) as cache:
            if stored is not None:
                merged = stored.fetch(cache)
                if merged and local_existed:
                    echo(f"note: {merged:,} answers from {cache_path} merged into the local copy {stored.local}")
            try:
                written = _label_with_cache(cache, jobs, backend, model_id, cfg, summary, progress, stored)
            finally:
                if stored is not None and not cfg.dry_run:
                    stored.publish(cache)  # every answer paid for, on success, error or Ctrl-C
        if stored is not None and (not cfg.dry_run or not local_existed):
            stored.discard_local()  # published (or, for a dry run, only a copy of what is published)
        if written is not None:
            answers, repaired = written
            _write_output(table, output, cfg, row_keys, answers, model_id, summary, jobs, repaired)


def _label_with_cache(cache: LabelCache, jobs: dict, backend, model_id: str, cfg: LabelConfig,
                      summary: LabelSummary, progress: bool, stored) -> tuple[dict, dict] | None:
    """Look up, send what is missing; (answers, repair answers) to write, or None for a dry run."""
    found = cache.get_many(list(jobs), model_id)
    summary.cached = len(found)
    missing = [job for key, job in jobs.items() if key not in found]
    repairs = _repairs_missing(jobs, found, cache, model_id) if cfg.repair else []
    if cfg.dry_run:
        summary.remaining = len(missing)
        summary.report = dry_run_report(missing, found, summary, cfg, repairs)
        return None
    if cfg.max_requests == 0 and (missing or repairs):
        summary.stopped = "--max-requests 0: output written from the cache alone"
        missing, repairs = [], []
    if callable(backend) and not hasattr(backend, "complete"):
        backend = backend() if missing or repairs else None
    if missing or repairs:
        tick = (lambda: stored.publish_if_due(cache)) if stored is not None else None
        _run_jobs(missing, backend, cache, model_id, cfg, summary, progress, repairs, tick)
    answers = cache.get_many(list(jobs), model_id)
    # Repair answers are used whenever the cache has them (they were paid for), --repair or not.
    repaired = cache.get_many([j.repair_job("").key for j in jobs.values()], model_id)
    summary.remaining = len(jobs) - len(answers)
    return answers, repaired


def _store_locks(cache_path, output) -> list:
    """The locks a run holds on the cache and the output: on a store the lock objects
    ``.<name>.lock`` beside each, so two runs never both write either (every publish checks
    them); none locally (:meth:`phifilter.location.LocalStore.file_locks`)."""
    return store_of(cache_path).file_locks(cache_path) + store_of(output).file_locks(output)


def _read_input(path: Path, cfg: LabelConfig) -> pa.Table:
    pf = open_parquet(path)
    check_text_column(pf.schema_arrow, cfg.text_column, path)
    batches = list(iter_batches(path, parquet_file=pf))
    table = pa.Table.from_batches(batches, schema=pf.schema_arrow) if batches else pf.schema_arrow.empty_table()
    if table.num_rows == 0:
        raise InputError(f"{path}: has no rows to label")
    return table


def _rubrics_per_row(table: pa.Table, cfg: LabelConfig, path: Path, echo) -> list[Rubric]:
    n = table.num_rows
    if cfg.rubric != "auto":
        rubric = load_rubric(cfg.rubric, cfg.prompt_style)
        return [rubric] * n
    if cfg.domain_column not in table.column_names:
        echo(f"note: {path} has no '{cfg.domain_column}' column; using the code rubric for every row "
             "(choose with --rubric code|web|PATH)")
        return [load_rubric("code", cfg.prompt_style)] * n
    loaded = {name: load_rubric(name, cfg.prompt_style) for name in set(DOMAIN_RUBRICS.values())}
    out = []
    nulls = 0
    for i, domain in enumerate(table.column(cfg.domain_column).to_pylist()):
        if domain is None:  # like a missing column: the phi-1 (code) question
            nulls += 1
            out.append(loaded["code"])
            continue
        name = DOMAIN_RUBRICS.get(str(domain).strip().lower())
        if name is None:
            raise InputError(
                f"{path}: row {i} has {cfg.domain_column}={domain!r}, which has no rubric (auto knows "
                f"{', '.join(DOMAIN_RUBRICS)}); choose one with --rubric code|web|PATH"
            )
        out.append(loaded[name])
    if nulls:
        echo(f"note: {nulls:,} rows of {path} have no '{cfg.domain_column}'; using the code rubric for them")
    return out


def _needs_repair(parsed: ParsedReply, reply: str | None) -> bool:
    # Only a real reply can be repaired: an empty one (or a prompt that did not fit) has nothing
    # to follow up on.
    return parsed.score is None and bool((reply or "").strip())


def _repairs_missing(jobs: dict, found: dict, cache: LabelCache, model_id: str) -> list[_Job]:
    """Repair re-asks still owed: cached answers without a score and without a cached repair."""
    owed = [jobs[key].repair_job(a.reply) for key, a in found.items()
            if _needs_repair(read_reply(a.reply or "", jobs[key].text), a.reply)]
    done = cache.get_many([j.key for j in owed], model_id)
    return [j for j in owed if j.key not in done]


# ---------------------------------------------------------------------------------------------
# sending


def _run_jobs(jobs: list[_Job], backend, cache: LabelCache, model_id: str, cfg: LabelConfig,
              summary: LabelSummary, progress: bool, repairs: list[_Job] = (), tick=None) -> None:
    """Send ``jobs`` (and the owed ``repairs``), caching each answer as it arrives; ``tick()`` is
    called on this thread after each round of answers (a cache on a store publishes from it)."""
    if cfg.max_requests is not None and len(jobs) > cfg.max_requests:
        jobs = jobs[: cfg.max_requests]
        summary.stopped = f"--max-requests {cfg.max_requests} reached"
    _Sender(backend, cache, model_id, cfg, summary).run(jobs, list(repairs), progress, tick)


class _Sender:
    """Sends batches of jobs to a backend from a thread pool (``concurrency`` batches in flight),
    retries what may be retried, and caches each answer on the calling thread as it arrives."""

    def __init__(self, backend, cache: LabelCache, model_id: str, cfg: LabelConfig, summary: LabelSummary):
        self.backend, self.cache, self.model_id, self.cfg, self.summary = backend, cache, model_id, cfg, summary
        self.batch_size = max(1, int(getattr(backend, "batch_size", 1)))
        self.concurrency = max(1, int(getattr(backend, "concurrency", 1)))
        self.fit = getattr(backend, "fit", None)
        self.stop = threading.Event()
        self.rng = random.Random(cfg.seed)
        self.rng_lock = threading.Lock()
        self.waits_lock = threading.Lock()
        self.batches: collections.deque[list[_Job]] = collections.deque()
        self.in_flight: dict[Future, list[_Job]] = {}
        self.error: BaseException | None = None
        self.pool = self.bar = None

    def ask(self, batch: list[_Job]) -> list[Reply]:
        """One batch's replies (on a pool thread), retried with backoff as ``cfg`` says."""
        # A local model cuts each document to fit its context; the cut is kept with the answer.
        if self.fit is not None:
            prepared = [self.fit(job.text, job.build) for job in batch]
        else:
            prepared = [(job.messages, None) for job in batch]
        attempt = 0
        while True:
            if self.stop.is_set():
                raise _Stopped()
            try:
                replies = self.backend.complete([messages for messages, _ in prepared])
                if len(replies) != len(batch):
                    raise BackendError(f"backend returned {len(replies)} replies for {len(batch)} prompts")
                for reply, (_, cut_at) in zip(replies, prepared):
                    reply.cut_at = cut_at
                return replies
            except RetryableError as e:
                self._wait_before_retry(e, attempt)
                attempt += 1

    def _wait_before_retry(self, e: RetryableError, attempt: int) -> None:
        cfg = self.cfg
        if attempt >= cfg.retries:
            raise LabelError(f"{e} (gave up after {attempt + 1} attempts)") from None
        if e.retry_after is not None and e.retry_after > cfg.max_retry_after:
            raise LabelError(f"{e}; the server asks to wait {e.retry_after:,.0f}s (a spent quota?): "
                             "rerun later") from None
        with self.rng_lock:
            jitter = self.rng.uniform(0.5, 1.0)
        delay = min(cfg.max_retry_delay, cfg.retry_delay * 2**attempt) * jitter
        if e.retry_after is not None:
            delay = max(delay, e.retry_after)
        with self.waits_lock:
            self.summary.retries += 1
            self.summary.retry_waits.append(delay)
        if self.stop.wait(delay):
            raise _Stopped() from None

    def fill(self) -> None:
        """Submit batches until ``concurrency`` are in flight (or --max-requests is reached)."""
        cfg, summary = self.cfg, self.summary
        while not self.stop.is_set() and len(self.in_flight) < self.concurrency and self.batches:
            batch = self.batches.popleft()
            if cfg.max_requests is not None:
                room = cfg.max_requests - summary.sent - summary.repairs_sent
                if room < len(batch):
                    summary.stopped = f"--max-requests {cfg.max_requests} reached"
                    batch = batch[: max(0, room)]
                    self.batches.clear()
                    if not batch:
                        return
            self.in_flight[self.pool.submit(self.ask, batch)] = batch
            n_repairs = sum(job.repair for job in batch)
            summary.sent += len(batch) - n_repairs
            summary.repairs_sent += n_repairs

    def collect(self, done) -> None:
        """Cache the answers of the finished batches ``done``; queue the repairs they call for."""
        for fut in done:
            batch = self.in_flight.pop(fut)
            try:
                replies = fut.result()
            except _Stopped:
                continue
            except Exception as e:  # noqa: BLE001 - any failure stops the run, first one reported
                if self.error is None:
                    self.error = e
                self.stop.set()
                continue
            follow_ups = []
            for job, reply in zip(batch, replies):
                parsed = _store(job, reply, self.cache, self.model_id, self.summary)
                if self.cfg.repair and not job.repair and _needs_repair(parsed, reply.text):
                    follow_ups.append(job.repair_job(reply.text))
            if follow_ups:
                # Next in line: a document is done when its repair is, so a stop or a kill leaves
                # whole labels behind rather than many answers waiting for their repair.
                self.batches.appendleft(follow_ups)
                self.bar.total += len(follow_ups)
            self.bar.update(len(batch))
            if self.summary.retries:
                self.bar.set_postfix_str(f"{self.summary.retries} retries", refresh=False)

    def run(self, jobs: list[_Job], owed: list[_Job], progress: bool, tick) -> None:
        """Send every batch and wait for every answer; then raise what stopped the run, if anything."""
        from tqdm.auto import tqdm

        # Repairs owed from an earlier run go first; new ones are sent next as answers arrive.
        size = self.batch_size
        self.batches.extend(owed[i : i + size] for i in range(0, len(owed), size))
        self.batches.extend(jobs[i : i + size] for i in range(0, len(jobs), size))
        self.bar = tqdm(total=len(jobs) + len(owed), unit="doc", desc="labelling", disable=not progress)
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="phifilter-label")
        # The first Ctrl-C only sets a flag: requests already sent will be paid for, so the loop
        # stops sending, waits for them and caches their answers. A second Ctrl-C abandons them.
        interrupted = threading.Event()
        previous_handler = _install_sigint(interrupted, self.stop)
        try:
            self._loop(interrupted, tick)
        finally:
            _restore_sigint(previous_handler)
            self.bar.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
        self._raise_outcome(interrupted)

    def _loop(self, interrupted: threading.Event, tick) -> None:
        self.fill()
        told = False
        while self.in_flight:
            done, _ = wait(list(self.in_flight), timeout=0.2, return_when=FIRST_COMPLETED)
            self.collect(done)
            self.fill()
            if tick is not None and done:
                tick()
            if interrupted.is_set() and not told and self.in_flight:
                told = True
                print(f"\nInterrupted: waiting for {len(self.in_flight)} request(s) in flight so their answers are "
                      "kept (Ctrl-C again to abandon them)", file=sys.stderr)

    def _raise_outcome(self, interrupted: threading.Event) -> None:
        summary, cache, error = self.summary, self.cache, self.error
        if interrupted.is_set():
            print(f"Interrupted: {summary.cached + summary.answered:,} of {summary.unique:,} documents are labelled "
                  f"and kept in {cache.path}", file=sys.stderr)
            raise KeyboardInterrupt
        if error is not None:
            labelled = summary.cached + summary.answered
            if isinstance(error, PhifilterError):
                raise type(error)(f"{error}\n{labelled:,} of {summary.unique:,} documents are labelled and kept in "
                                  f"{cache.path}; rerun the same command to continue") from None
            raise error


def _install_sigint(interrupted: threading.Event, stop: threading.Event):
    import signal

    def on_sigint(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        stop.set()

    try:
        return signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C keeps its default behaviour
        return None


def _restore_sigint(previous) -> None:
    import signal

    if previous is not None:
        signal.signal(signal.SIGINT, previous)


def _store(job: _Job, reply: Reply, cache: LabelCache, model_id: str, summary: LabelSummary) -> ParsedReply:
    parsed = read_reply(reply.text, job.text)
    reason = parsed.reason
    if reply.note and not reason:
        reason = reply.note
    key = job.key
    cache.put(key[0], key[1], model_id, parsed.score, reason, reply.text, job.prompt_chars,
              reply.prompt_tokens, reply.completion_tokens, getattr(reply, "cut_at", None))
    if not job.repair:
        summary.answered += 1
        summary.unparsed += parsed.score is None
    summary.prompt_tokens += reply.prompt_tokens or 0
    summary.completion_tokens += reply.completion_tokens or 0
    return parsed


# ---------------------------------------------------------------------------------------------
# dry run


def dry_run_report(missing: list[_Job], found: dict, summary: LabelSummary, cfg: LabelConfig,
                   repairs: list[_Job] = ()) -> list[str]:
    """Lines describing what a real run would send, with token (and cost) estimates.

    Characters per token and tokens per reply are measured from earlier answers of the same
    model in the cache when there are any; otherwise 4 characters per token and
    200 tokens per reply are assumed. With ``repair``, the re-asks owed for cached answers
    without a score are counted exactly, and those for new answers at the share of cached
    answers that had no score (every new answer when the cache has none: an upper bound).
    """
    history = [a for a in found.values() if a.prompt_tokens and a.prompt_chars]
    if history:
        chars_per_token = sum(a.prompt_chars for a in history) / sum(a.prompt_tokens for a in history)
        per_reply = sum(a.completion_tokens or 0 for a in history) / len(history)
        basis = f"measured from {len(history):,} cached answers"
    else:
        chars_per_token, per_reply = CHARS_PER_TOKEN, DEFAULT_COMPLETION_TOKENS
        basis = f"assuming {CHARS_PER_TOKEN:g} characters per token and {DEFAULT_COMPLETION_TOKENS} tokens per reply"
    n = len(missing)
    if cfg.max_requests is not None:
        n = min(n, cfg.max_requests)
    send = missing[:n]
    prompt_tokens = sum(int(job.prompt_chars / chars_per_token) + 8 for job in send)
    completion_tokens = int(per_reply * n)
    by_rubric: dict[str, int] = {}
    for job in send:
        by_rubric[job.rubric.name] = by_rubric.get(job.rubric.name, 0) + 1
    lines = [
        f"dry run: {summary.rows:,} rows, {summary.unique:,} distinct documents ({summary.blank:,} blank), "
        f"{summary.cached:,} already in the cache {summary.cache}",
        f"would send {n:,} requests to {summary.model}"
        + (f" ({', '.join(f'{k}: {v:,}' for k, v in sorted(by_rubric.items()))})" if by_rubric else ""),
        f"estimated tokens: {prompt_tokens:,} prompt + {completion_tokens:,} completion ({basis})",
    ]
    if cfg.repair:
        replied = [a for a in found.values() if (a.reply or "").strip()]
        if replied:
            rate = sum(a.score is None for a in replied) / len(replied)
            how = f"{rate:.0%} of {len(replied):,} cached answers had no score"
        else:
            rate, how = 1.0, "an upper bound: every new answer"
        # A repair prompt is the first prompt, the first reply and the short question.
        question = len(REPAIR_QUESTION) / chars_per_token + 12
        owed_prompt = sum(int(job.prompt_chars / chars_per_token) + 12 for job in repairs)
        new_prompt = sum(int(job.prompt_chars / chars_per_token) + 8 for job in send) + n * (per_reply + question)
        r_prompt = int(owed_prompt + rate * new_prompt)
        r_completion = int(per_reply * (len(repairs) + rate * n))
        lines.append(f"repair re-asks (--repair): {len(repairs):,} owed for cached answers without a score "
                     f"+ about {rate * n:,.0f} for new answers ({how}); estimated tokens: "
                     f"{r_prompt:,} prompt + {r_completion:,} completion")
        prompt_tokens += r_prompt
        completion_tokens += r_completion
    if cfg.price_per_mtok is not None:
        p_in, p_out = cfg.price_per_mtok
        cost_in, cost_out = prompt_tokens * p_in / 1e6, completion_tokens * p_out / 1e6
        lines.append(f"estimated cost: ${cost_in + cost_out:,.2f} (${cost_in:,.2f} prompt + ${cost_out:,.2f} completion "
                     f"at ${p_in:g} / ${p_out:g} per million tokens{', repairs included' if cfg.repair else ''})")
    return lines


# ---------------------------------------------------------------------------------------------
# output


def _read_answer(job: _Job, answer, repair) -> tuple[ParsedReply, bool]:
    """How the row's score reads from the cached raw replies: (parsed, from the repair answer)."""
    if answer.reply is None:  # cannot happen with this cache format; keep what was stored
        return ParsedReply(answer.score, answer.reason or "", NONE if answer.score is None else STRICT), False
    parsed = read_reply(answer.reply, job.text)
    if not parsed.reason and answer.reason:  # an empty reply: the stored reason says why
        parsed = ParsedReply(parsed.score, answer.reason, parsed.parse)
    if parsed.score is None and repair is not None and repair.reply is not None:
        second = read_reply(repair.reply, job.text)
        if second.score is not None:
            # The justification is the first answer's; the score comes from the repair answer.
            return ParsedReply(second.score, parsed.reason, second.parse), True
    return parsed, False


def _write_output(table: pa.Table, output: Path, cfg: LabelConfig, row_keys, answers: dict, model_id: str,
                  summary: LabelSummary, jobs: dict, repairs: dict) -> None:
    scores, reasons, models, shas, parses, repaired, cuts = [], [], [], [], [], [], []
    for key in row_keys:
        answer = answers.get(key) if key is not None else None
        if answer is None:
            scores.append(None)
            reasons.append("empty document, not sent" if key is None else None)
            models.append(None)
            shas.append(None)
            parses.append(None)
            repaired.append(None)
            cuts.append(None)
        else:
            job = jobs[key]
            parsed, from_repair = _read_answer(job, answer, repairs.get(job.repair_job("").key))
            scores.append(parsed.score)
            reasons.append(parsed.reason)
            models.append(model_id)
            shas.append(key[1])
            parses.append(parsed.parse)
            repaired.append(from_repair)
            cuts.append(answer.cut_at)
            summary.parses[parsed.parse] = summary.parses.get(parsed.parse, 0) + 1
            summary.repaired += from_repair
            summary.echoed += parsed.echo
            summary.cut += answer.cut_at is not None
        summary.scores[scores[-1]] = summary.scores.get(scores[-1], 0) + 1
    keep = [c for c in table.column_names if c not in OUTPUT_COLUMNS]
    out = table.select(keep)
    if cfg.max_chars:
        # The text column holds what the model read, so training sees the same excerpts.
        idx = out.column_names.index(cfg.text_column)
        text_type = table.schema.field(cfg.text_column).type
        if pa.types.is_dictionary(text_type):
            text_type = text_type.value_type
        out = out.set_column(idx, cfg.text_column, pa.array(_excerpts(table, cfg), type=text_type))
    out = out.append_column("llm_score", pa.array(scores, type=pa.int8()))
    out = out.append_column("llm_reason", pa.array(reasons, type=pa.string()))
    out = out.append_column("llm_model", pa.array(models, type=pa.string()))
    out = out.append_column("rubric_sha", pa.array(shas, type=pa.string()))
    out = out.append_column("llm_parse", pa.array(parses, type=pa.string()))
    out = out.append_column("llm_repaired", pa.array(repaired, type=pa.bool_()))
    out = out.append_column("llm_cut_at", pa.array(cuts, type=pa.int32()))
    schema = out.schema.remove_metadata()
    from ..sample import remove_stale_temporary

    remove_stale_temporary(output)
    with ShardWriter(output, schema) as writer:
        for batch in out.cast(schema).to_batches(max_chunksize=4096):
            writer.write_batch(batch)
    summary.written = True


def _excerpts(table: pa.Table, cfg: LabelConfig) -> list[str | None]:
    from ..chunking import excerpt

    column = table.column(cfg.text_column)
    nulls = column.is_null().to_pylist()
    # texts_from_array replaces invalid UTF-8 (as score does) instead of raising after every paid request
    return [None if null else excerpt(t, cfg.max_chars) for null, t in zip(nulls, texts_from_array(column))]
