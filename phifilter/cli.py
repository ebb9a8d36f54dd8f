"""The `phifilter` command line: a thin click layer over the library.

Each command declares its options (those several commands share are decorators defined once,
below) and hands them to one library function, which does every check and all the work; the
command prints the summary it returns. Heavy modules (torch, sentence-transformers,
scikit-learn) are imported inside the commands, so `phifilter --help` is instant. Library
errors become what the user sees in one place, :func:`click_error`: a
:class:`~phifilter.errors.PhifilterError` is one `Error: ...` line and exit status 1, and an
:class:`~phifilter.errors.OptionError` (a bad option value, or options that clash) is shown as
click shows its own usage errors, with exit status 2.
"""

from __future__ import annotations

import sys

import click

from . import __version__, defaults
from .errors import OptionError, PhifilterError


def click_error(e: PhifilterError, ctx: click.Context) -> click.ClickException:
    """The one place a library error becomes what the user sees: a bad option value or a clash
    of options as click's usage errors (exit status 2), anything else as `Error: ...` (exit 1)."""
    if isinstance(e, OptionError):
        if e.option:
            return click.BadParameter(str(e), ctx=ctx, param_hint=e.option)
        return click.UsageError(str(e), ctx=ctx)
    return click.ClickException(str(e))


class PhifilterCommand(click.Command):
    """Library errors, while options are read or the command runs, become one clean line;
    Ctrl-C becomes a hint that a rerun resumes."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except PhifilterError as e:  # raised by an option's callback
            raise click_error(e, ctx) from None

    def invoke(self, ctx):
        previous = stop_on_sigterm()
        try:
            return super().invoke(ctx)
        except PhifilterError as e:
            raise click_error(e, ctx) from None
        except KeyboardInterrupt as e:
            message = "Interrupted: finished shards are kept; rerun the same command to resume."
            if isinstance(e, Terminated):
                message = "Terminated" + message.removeprefix("Interrupted")
            click.echo(message, err=True)
            sys.exit(143 if isinstance(e, Terminated) else 130)
        except (ImportError, MemoryError) as e:  # a module that cannot load (a memory limit, a broken install)
            raise click.ClickException(load_failure(e)) from None
        except Exception as e:  # a store failure that surfaced outside a RemotePath call (an open file's read)
            from .location import store_error

            err = store_error(e)
            if err is None:
                raise
            raise click_error(err, ctx) from None
        finally:
            if previous is not None:
                import signal

                signal.signal(signal.SIGTERM, previous)
                sys.unraisablehook = _hooks.pop() if _hooks else sys.__unraisablehook__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so it stops as on Ctrl-C: temporaries removed, locks
    released (on a store too, where a lock left behind blocks other machines until it expires)."""


def stop_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in the main thread; the previous handler, or None
    when the handler was not changed (not the main thread, or SIGTERM already handled)."""
    import signal

    def on_sigterm(signum, frame):
        raise Terminated()

    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return None
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        return None
    if sys.unraisablehook is not _redeliver_interrupt:
        _hooks.append(sys.unraisablehook)
        sys.unraisablehook = _redeliver_interrupt
    return previous


_hooks: list = []


def _redeliver_interrupt(unraisable) -> None:
    """A Ctrl-C or SIGTERM that lands inside a finalizer (``__del__``: a progress bar, a file) cannot
    propagate there; Python would print "Exception ignored ... Traceback" and go on as if nothing
    happened. Send the signal again instead, so it stops the command at the next instruction."""
    import os
    import signal
    import threading

    if isinstance(unraisable.exc_value, KeyboardInterrupt):  # sent from a thread a moment later: outside the finalizer
        sig = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        timer = threading.Timer(0.02, os.kill, (os.getpid(), sig))
        timer.daemon = True
        timer.start()
        return
    (_hooks[-1] if _hooks else sys.__unraisablehook__)(unraisable)


def load_failure(e: BaseException) -> str:
    """The one line for a module that could not be imported or memory that could not be had."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    hint = (f"the process may use at most {limit >> 20} MiB of address space (ulimit -v); raise the limit "
            "(torch and the embedding model map a few GiB) and rerun" if limit != resource.RLIM_INFINITY
            else "free memory or reinstall phifilter (pip install -e .), then rerun")
    what = f"cannot import {e.name}" if isinstance(e, ImportError) and e.name else (
        "out of memory" if isinstance(e, MemoryError) else "cannot load a module")
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return f"{what} ({text}); {hint}"


class PhifilterGroup(click.Group):
    """The `phifilter` group: every command it declares is a :class:`PhifilterCommand`."""

    command_class = PhifilterCommand


class OutputPath(click.Path):
    """click.Path for what a command writes: a store phifilter only reads (hf://) is refused while
    the options are read, as one Error line, before any work (the library refuses it too)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if value is not None:
            from .location import check_writable_store

            check_writable_store(value)
        return value


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which pass every range comparison)."""

    def convert(self, value, param, ctx):
        import math

        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


def echo_start(what: str, quiet: bool) -> None:
    """A first line before the slow start (imports, loading the model), on a terminal unless
    --quiet (a script reading stderr still gets one ``Error:`` line for bad input, nothing else)."""
    if not quiet and sys.stderr.isatty():
        click.echo(f"{what} (loading the model first: this takes a few seconds)", err=True)


def echo_summary(summary, quiet: bool) -> None:
    """What most commands print when they finish: the summary, unless --quiet; what -q still
    says of a shard job: the shards left to another run writing them (stderr)."""
    if not quiet:
        click.echo(str(summary))
        return
    for name, holder in getattr(summary, "leased", ()):
        click.echo(f"left to another run: {name} ({holder})", err=True)


def echo_json_or_text(to_dict, report, as_json: bool, quiet: bool = False, indent: int = 2) -> None:
    """--json prints what ``to_dict()`` returns; otherwise the report's text, unless --quiet."""
    if as_json:
        import json

        click.echo(json.dumps(to_dict(), indent=indent))
    else:
        echo_summary(report, quiet)


# Option parsing that needs the library: the callbacks hand the text to it and return its value.

def _quiet_from_group(ctx, param, value):
    # `phifilter --quiet CMD` and `phifilter CMD --quiet` mean the same.
    return bool(value) or bool((ctx.find_root().obj or {}).get("quiet"))


def _sha256_pins(ctx, param, values):
    """--embedder-sha256 FILE=HEX (repeatable) -> {FILE: hex} or None."""
    if not values:
        return None
    from .embed import parse_sha256_pins

    return parse_sha256_pins(values)


def _price(ctx, param, value):
    """--price-per-mtok PRICE or PROMPT,COMPLETION -> (prompt, completion) dollars, or None."""
    from .label.annotate import parse_price

    return parse_price(value)


def _tokens(ctx, param, value):
    """ablate --tokens 2.8M -> 2_800_000, or None (the preset's)."""
    from .pretrain.config import parse_tokens

    return parse_tokens(value) if value else None


def _arms(ctx, param, value):
    """A comma-separated list -> a tuple: ablate --arms 'filtered,random' -> ('filtered', 'random')
    (also --similarity-methods)."""
    return tuple(a.strip() for a in value.split(",") if a.strip())


def _overrides(ctx, param, values):
    """ablate --set KEY=VALUE (repeatable) -> {key: value}."""
    from .pretrain.config import parse_overrides

    return parse_overrides(values)


def _eval_output(ctx, param, value):
    """evaluate -o, by default eval-LABELS_STEM/ in the working folder (LABELS is read first:
    click reads the arguments given before the options left at their defaults)."""
    if value is not None:
        return value
    from .evaluate import default_output_dir

    return default_output_dir(ctx.params["labels"])


def _storage_options(ctx, param, value):
    """--storage-options JSON -> handed to every fsspec filesystem this command opens."""
    from .location import parse_storage_options

    return parse_storage_options(value)


def _existing_location(ctx, param, value):
    """A local path that must exist, or a URL (checked when it is read)."""
    from .location import store_of

    if value is not None and store_of(value).lacks(value):
        raise click.BadParameter(f"Path '{value}' does not exist.", param=param)
    return value


# Options that several commands share, defined once (the order in --help is the order of the
# decorators, so a group is used only where its options sit together).

inputs_argument = click.argument("inputs", nargs=-1, required=True)
quiet_option = click.option("-q", "--quiet", is_flag=True, callback=_quiet_from_group,
                            help="No progress bars or summary.")
text_column_option = click.option(
    "--text-column", default="text", show_default=True, help="Column holding the document text."
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
)
label_column_option = click.option(
    "--score-column", default=None, help="0-5 label column (default: llm_score, else score).")
stats_json_option = click.option(
    "--stats-json", default=None, type=OutputPath(dir_okay=False),
    help="Also write the run's statistics here as JSON (rows, bytes, tokens, docs/s, histogram, per-shard timings, failures).")


def output_option(help: str, folder: bool = True):
    """The required -o/--output: a folder, or a file (``folder=False``)."""
    kind = OutputPath(file_okay=False) if folder else OutputPath(dir_okay=False)
    return click.option("-o", "--output", required=True, type=kind, help=help)


def model_option(help: str):
    return click.option("-m", "--model", type=click.Path(), default=None, help=help)


def score_column_option(help: str | None = "Column holding the scores."):
    return click.option("--score-column", default="edu_score", show_default=True, help=help)


def seed_option(help: str, *names: str, dest: str = "seed"):
    return click.option(*(names or ("--seed",)), dest, default=0, show_default=True, type=int, help=help)


def read_batch_rows_option(default: int):
    return click.option("--read-batch-rows", default=default, show_default=True, type=click.IntRange(1),
                        help="Rows per Arrow batch read.")


def json_option(help: str = "Print the figures as JSON."):
    return click.option("--json", "as_json", is_flag=True, help=help)


def storage_options_option(f):
    """The shared --storage-options option: applied when parsed, not passed to the command."""
    return click.option(
        "--storage-options", default=None, metavar="JSON", expose_value=False, callback=_storage_options,
        help="fsspec options for URL inputs/outputs (s3://, gs://, hf://), e.g. '{\"anon\": true}' or "
             "'{\"s3\": {\"endpoint_url\": \"http://127.0.0.1:9000\"}}'. Credentials otherwise come from "
             "the store's usual environment (AWS_*, AWS_ENDPOINT_URL, ...).")(f)


def embeddings_options(help: str):
    """--embeddings (a cache from `phifilter embed`) and the --id-column it is keyed by."""
    def decorate(f):
        f = click.option("--id-column", default="id", show_default=True, help="Document id column for --embeddings.")(f)
        return click.option("--embeddings", default=None, metavar="PATH", callback=_existing_location, help=help)(f)
    return decorate


def embedder_pin_options(f):
    """--embedder-revision and --embedder-sha256: load exactly the embedder the user checked."""
    f = click.option("--embedder-sha256", multiple=True, metavar="FILE=HEX", callback=_sha256_pins,
                     help="Refuse an embedder whose FILE does not have this SHA-256; repeatable.")(f)
    return click.option("--embedder-revision", default=None, help="Hub revision (commit hash) to load the embedder at.")(f)


def task_options(f):
    """--task-index/--num-tasks: this task's share of a partitioned run (Slurm arrays, Kubernetes Jobs)."""
    f = click.option("--num-tasks", default=None, type=click.IntRange(1),
                     help="Partitioned run: how many tasks share the shards (default: $SLURM_ARRAY_TASK_COUNT, else 1).")(f)
    return click.option("--task-index", default=None, type=click.IntRange(0),
                        help="Partitioned run: this task's number, 0-based (default: $SLURM_ARRAY_TASK_ID, else 0).")(f)


@click.group(cls=PhifilterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phifilter")
@click.option("-v", "--verbose", count=True, help="Log more: -v for INFO, -vv for DEBUG (to stderr).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or summaries in any command; only warnings are logged.")
@click.pass_context
def main(ctx, verbose, quiet):
    """Find the textbook-quality part of code and web corpora.

    \b
    The pipeline:  sample -> label -> train -> score -> filter -> ablate / report
    Start with:    phifilter score SHARDS/ -o SCORED/   (uses the bundled model)
                   phifilter report SCORED/ -o report.html

    \b
    Example:
      phifilter score examples/shards/ -o scored/
      phifilter -v report scored/ -o report.html --by source
    Shell completion (bash):  eval "$(_PHIFILTER_COMPLETE=bash_source phifilter)"
    """
    import logging

    ctx.obj = {"quiet": quiet, "verbose": verbose}
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("phifilter").setLevel(level)


@main.command()
@inputs_argument
@output_option("Output folder (local or URL).")
@click.option("-m", "--model", "models", multiple=True, metavar="[NAME=]SPEC",
              help="Scorer (repeatable: one column NAME each, one pass). SPEC: a model folder (default, or 'bundled': the "
                   "bundled model), an ensemble folder, a Hugging Face folder [hf:]DIR[#LABEL] or fasttext:PATH#LABEL. "
                   "A bare SPEC writes --score-column. A Hugging Face regression scorer NAME also writes "
                   "NAME_int_score (round(clip(score, 0, 5)), int8).")
@click.option("--output-format", type=click.Choice(["parquet", "jsonl"]), default=None,
              help="Write every output shard in this format (default: the input's format and compression).")
@storage_options_option
@text_column_option
@score_column_option("Name of the added score column.")
@device_option
@click.option("--batch-size", default=defaults.EMBED_BATCH_SIZE, show_default=True, type=click.IntRange(1), help="Documents per embedder forward pass.")
@click.option("--read-batch-rows", default=None, type=click.IntRange(1),
              help="Rows per Arrow batch read (and output row group). Default: 2048; 2048 / max chunks for a chunking model.")
@click.option("--max-length", default=None, type=click.IntRange(8), help="Tokens read per document (default: the model's).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="On a bad shard: stop, or report it and score the rest.")
@embeddings_options("Embedding cache from `phifilter embed`: documents it holds (by --id-column) are not re-embedded.")
@click.option("--devices", default=None, metavar="LIST",
              help="One worker process per device over the shards: cuda:0,cuda:1,... or 'all' (GPUs) or cpu,cpu.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="'ray' scores on a Ray cluster (pip install 'phifilter[ray]'); see docs/scaling.md.")
@click.option("--ray-address", default=None, help="Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True,
              help="Embedder precision (auto: float16 on CUDA, float32 on CPU).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="CPU only: dynamic int8 Linear layers (faster; scores change slightly, see benchmarks/README.md).")
@click.option("--tokens-per-batch", default=None, type=click.IntRange(1),
              help="Token budget per forward pass (default: batch size x max length).")
@click.option("--num-threads", default=None, type=click.IntRange(1), help="Torch CPU threads (default: one per core).")
@embedder_pin_options
@click.option("--int-score-column", default=None, metavar="NAME",
              help="Also write NAME (int8): the expected 0-5 score rounded, FineWeb-Edu style (models trained by this version).")
@task_options
@stats_json_option
@quiet_option
def score(inputs, output, models, batch_size, quiet, **options):
    """Score shards: each output shard is its input plus an edu_score column.

    INPUTS are Parquet, JSON Lines (.jsonl, .json, optionally .gz/.zst/.bz2) or save_to_disk
    files, folders (searched recursively) or globs, local or URLs (s3://, gs://, hf://). Output
    shards keep their relative names and format. A rerun skips finished shards and redoes
    partial ones, and those made from another input, model or columns. --task-index/--num-tasks
    split the shards between independent tasks (Slurm arrays, Kubernetes Jobs; see docs/scaling.md).

    \b
    Example:
      phifilter score data/shards/ -o data/scored/
      phifilter score s3://bucket/corpus/ -o s3://bucket/scored/
      phifilter score 'data/*.jsonl.zst' -o scored/ --output-format parquet
      phifilter score 'data/**/part-*.parquet' -o scored/ --device cuda --batch-size 512
      phifilter score data/shards/ -o data/scored/ --devices all
      phifilter score data/shards/ -o data/scored/ --int-score-column int_score
      phifilter score s3like/shards/ -o scored/ --engine ray --ray-address auto
      phifilter score data/shards/ -o data/scored/ --task-index 3 --num-tasks 8
      phifilter score data/shards/ -o scored/ -m edu_score=my-model/ -m fineweb_edu=fineweb-edu-classifier/ \
          -m dclm=fasttext:openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin#hq
    """
    echo_start("scoring", quiet)
    from .scoring import ScoreConfig, score_shards

    cfg = ScoreConfig(embed_batch_size=batch_size, **options)
    summary = score_shards(list(inputs), output, model=list(models) or None, config=cfg, progress=not quiet)
    echo_summary(summary, quiet)  # with -q: the shards left to another run writing them
    if quiet:  # ... and the shards that failed
        for path, error in summary.failures:
            click.echo(f"failed: {path}: {error}", err=True)


@main.command()
@click.argument("output", type=click.Path())
@click.argument("inputs", nargs=-1)
@score_column_option("Name of the score column.")
@json_option("Print the status as JSON.")
@storage_options_option
def status(output, inputs, score_column, as_json):
    """Say which shards of a `score` output folder are done, partial, stale or missing.

    Give the INPUTS too to account for every input shard (and to find outputs of a changed
    input). Safe to run while tasks are writing; writes nothing. Exit status 0 either way.

    \b
    Example:
      phifilter status data/scored/ data/shards/
    """
    from .scoring.status import scoring_status

    report = scoring_status(output, list(inputs), score_column=score_column)
    echo_json_or_text(report.as_dict, report, as_json, indent=1)


@main.command()
@click.argument("labels", type=click.Path())
@output_option("Model folder to write.")
@text_column_option
@label_column_option
@click.option("--positive-threshold", default=3, show_default=True, type=int, help="Scores at or above count as positive.")
@click.option("--threshold", default="auto", show_default=True,
              help="Decision threshold on edu_score, or 'auto' for the one that maximises cross-validated F1.")
@click.option("--n-estimators", default=300, show_default=True, type=click.IntRange(1), help="Trees in the forest.")
@click.option("--min-samples-leaf", default=3, show_default=True, type=click.IntRange(1), help="Smallest leaf of each tree.")
@click.option("--cv-folds", default=5, show_default=True, type=click.IntRange(0), help="Cross-validation folds (0: none).")
@click.option("--embedder", default=None, help="sentence-transformers name or folder (default: all-MiniLM-L6-v2).")
@click.option("--max-length", default=defaults.MAX_LENGTH, show_default=True, type=click.IntRange(8), help="Tokens read per document.")
@embedder_pin_options
@device_option
@seed_option("Seed for folds and forest.", "--random-state", "--seed", dest="random_state")
@click.option("--recipe", type=click.Choice(["default", "paper"]), default="default", show_default=True,
              help="default: the bundled model's recipe (fastText lexical scorer + MiniLM chunk-mean SVR head, stacked, "
                   "cascade embedding 20% plus the unfamiliar documents). paper: phi-1's (embedding + random forest, "
                   "every document embedded). --head, --lexical and --expensive-share override the recipe's choice.")
@click.option("--head", type=click.Choice(["forest", "forest-regressor", "logistic", "ridge", "svr"]), default=None,
              help="The embedding head (default: the recipe's, svr or forest): random forest classifier (the paper's), random forest "
                                      "regressor on the 0-5 score, logistic regression, or ridge / RBF support-vector "
                                      "regression on the 0-5 score. Nested-CV ROC AUC on seed rounds 1-3 (2,371 rows; "
                                      "MiniLM chunk-mean): svr 0.912, logistic 0.887, ridge 0.886, forest 0.883; all "
                                      "score about 1.4 docs/s on 2 shared CPU cores, the embedder's cost "
                                      "(benchmarks/classifier_quality.md).")
@click.option("--doc-mode", type=click.Choice(["truncate", "chunk-mean", "chunk-weighted", "chunk-score-mean", "chunk-score-max"]),
              default="chunk-mean", show_default=True,
              help="Read the first --max-length tokens, or cut documents into chunks and combine their embeddings or scores.")
@click.option("--max-chunks", default=defaults.MAX_CHUNKS, show_default=True, type=click.IntRange(1), help="Chunks read per document (chunk modes).")
@click.option("--max-chars", type=click.IntRange(0), default=None, metavar="N",
              help="Characters of each document the embedder reads: the first N, cut at a line break, before any "
                   "chunking; 0: the whole document (up to --max-chunks chunks). Default: the recipe's (default: 2500, "
                   "the length of the seed set's labelled excerpts, which the fastText scorer reads too; paper: 0).")
@click.option("--features", default="mean", show_default=True, metavar="PARTS",
              help="What the head sees in chunk-mean/chunk-weighted mode: mean, first, max, length joined by '+', "
                   "e.g. mean+first.")
@click.option("--calibrate", is_flag=True, help="Isotonic calibration on out-of-fold scores: edu_score becomes a probability.")
@click.option("--lexical", type=click.Choice(["none", "fasttext"]), default=None,
              help="(default: the recipe's) A fastText lexical scorer beside the embedding scorer; a logistic combiner fitted on their "
                   "out-of-fold scores gives edu_score.")
@click.option("--lexical-labels", type=click.Choice(["binary", "grades"]), default="binary", show_default=True,
              help="What the fastText scorer learns: score >= --positive-threshold (binary, the better stack member on "
                   "the seed set), or the six 0-5 grades.")
@click.option("--expensive-share", type=click.FloatRange(0, 1), default=None, metavar="SHARE",
              help="Cascade (needs --lexical; default recipe: 0.2): only this share of documents, the lexical scorer's "
                   "most uncertain, is embedded; the band is chosen on out-of-fold scores.")
@click.option("--novelty-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None, metavar="SHARE",
              help="Cascade novelty rule (default recipe: 0.05): documents whose share of tokens unseen by the lexical "
                   "scorer exceeds what this share of the training documents have (out of fold) are embedded too.")
@click.option("--target-precision", type=click.FloatRange(0, 1), default=None,
              help="Threshold: the lowest whose out-of-fold precision reaches this.")
@click.option("--target-share", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Threshold: keep this share of documents.")
@click.option("--target-token-share", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Threshold: keep this share of tokens.")
@embeddings_options("Embedding cache from `phifilter embed` (same --embedder, --max-length and chunking).")
@quiet_option
@storage_options_option
def train(labels, output, recipe, lexical, lexical_labels, quiet, **options):
    """Train a model folder from labelled Parquet (text + 0-5 score).

    Reports stratified cross-validated precision, recall, F1 and ROC AUC and stores them in
    the model folder and its model card (README.md). The threshold is the max out-of-fold F1
    one unless --threshold or one --target-* option says otherwise.

    With no options it trains the bundled model's recipe; --recipe paper trains phi-1's forest.

    \b
    Example:
      phifilter train labels.parquet -o my-model/
      phifilter train labels.parquet -o forest/ --recipe paper
      phifilter embed labels.parquet -o emb/ --chunking chunk
      phifilter train labels.parquet -o m2/ --embeddings emb/ --recipe paper --head logistic --calibrate
    """
    echo_start("training", quiet)
    from .modelinfo import format_metrics
    from .train import TrainConfig, train_model

    cfg = TrainConfig.from_recipe(recipe, lexical=lexical, lexical_labels=lexical_labels, **options)
    _, metrics = train_model(labels, output, cfg, progress=not quiet)
    echo_summary(f"model written to {output}\n{format_metrics(metrics)}", quiet)


@main.command()
@inputs_argument
@output_option("Embeddings folder to write.")
@click.option("--embedder", default=None, help="sentence-transformers name or folder, or mean-pool:FOLDER (default: all-MiniLM-L6-v2).")
@click.option("--max-length", default=defaults.MAX_LENGTH, show_default=True, type=click.IntRange(8), help="Tokens per document or chunk.")
@click.option("--chunking", type=click.Choice(["truncate", "chunk"]), default="truncate", show_default=True,
              help="One embedding per document (truncated), or one per chunk (for the chunk-* --doc-mode).")
@click.option("--max-chunks", default=defaults.MAX_CHUNKS, show_default=True, type=click.IntRange(1), help="Chunks kept per document.")
@text_column_option
@click.option("--id-column", default="id", show_default=True, help="Document id column (absent: SHA-1 of the text).")
@device_option
@click.option("--batch-size", default=defaults.EMBED_BATCH_SIZE, show_default=True, type=click.IntRange(1), help="Texts per embedder forward pass.")
@quiet_option
@storage_options_option
@task_options
@stats_json_option
def embed(inputs, output, quiet, stats_json, **options):
    """Write an embedding cache: a Parquet sidecar per shard, keyed by document id.

    train, evaluate and score read it with --embeddings, so retraining, re-thresholding or
    trying another head costs no new embedding pass. A rerun skips finished sidecars.
    --task-index/--num-tasks split the shards between independent tasks, as for score.

    \b
    Example:
      phifilter embed labels.parquet -o emb/ --chunking chunk
      phifilter train labels.parquet -o model/ --doc-mode chunk-mean --embeddings emb/
      phifilter embed data/shards/ -o emb/ --task-index 0 --num-tasks 4
    """
    from .embcache import EmbedConfig, embed_corpus

    cfg = EmbedConfig(**options)
    echo_summary(embed_corpus(list(inputs), output, cfg, progress=not quiet, stats_json=stats_json), quiet)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default=None, type=OutputPath(file_okay=False), callback=_eval_output,
              help="Folder for metrics.json, pr_curve.png and calibration.png (default: eval-LABELS_STEM/).")
@text_column_option
@label_column_option
@embeddings_options("Embedding cache from `phifilter embed`.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True, type=click.IntRange(0),
              help="Bootstrap resamples for the 95% confidence intervals (0: none).")
@seed_option("Bootstrap seed.")
@device_option
@json_option()
@quiet_option
@storage_options_option
def evaluate(model, labels, output, as_json, quiet, **options):
    """Measure a model against labels it has not seen: precision, recall, F1, ROC/PR AUC, Spearman,
    confusion matrix and bootstrap confidence intervals, overall and per domain; PR and
    calibration plots are written as PNG files.

    \b
    Example:
      phifilter evaluate my-model/ heldout-labels.parquet -o eval/
    """
    echo_start("evaluating", quiet)
    from .evaluate import EvalConfig, evaluate_model

    cfg = EvalConfig(**options)
    report = evaluate_model(model, labels, output, cfg, progress=not quiet)
    echo_json_or_text(report.to_dict, report, as_json, quiet=quiet)


@main.command()
@click.argument("model", type=click.Path())
@inputs_argument
@output_option("Parquet file to write.", folder=False)
@click.option("-n", "n", default=500, show_default=True, type=click.IntRange(1), help="Documents to suggest.")
@click.option("--random-share", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of -n drawn at random instead of by disagreement.")
@seed_option("Seed of the random share.")
@text_column_option
@read_batch_rows_option(2048)
@device_option
@quiet_option
@storage_options_option
def suggest(model, inputs, output, quiet, **options):
    """Pick the documents most worth labelling next: where the forest's trees disagree most,
    plus a random share.

    \b
    Example:
      phifilter suggest my-model/ data/shards/ -n 500 -o next.parquet
      phifilter label next.parquet -o next-labels.parquet --model gpt-4o-mini
    """
    from .suggest import SuggestConfig, suggest as run_suggest

    cfg = SuggestConfig(**options)
    echo_summary(run_suggest(model, list(inputs), output, cfg, progress=not quiet), quiet)


@main.command(name="filter")
@inputs_argument
@output_option("Output folder.")
@click.option("--threshold", type=FiniteFloatRange(), default=None,
              help="Keep rows with a score at or above this (edu_score is in [0, 1]; other scorers have their own scale).")
@click.option("--top-fraction", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="Keep this fraction of documents, best first.")
@click.option("--token-budget", default=None, type=click.IntRange(1), metavar="N",
              help="Keep the best documents up to N tokens (counted with --tokenizer).")
@click.option("--tokenizer", default=None, metavar="NAME",
              help="Tokenizer for --token-budget: a folder or tokenizer.json, or a hub id (default: the embedder's, all-MiniLM-L6-v2).")
@score_column_option()
@click.option("--min-int-score", type=click.IntRange(0, 5), default=None, metavar="N",
              help="Keep rows whose int score (score --int-score-column) is at least N, FineWeb-Edu style.")
@click.option("--int-score-column", default="int_score", show_default=True, help="Column holding the int scores.")
@click.option("--min-bucket", type=click.IntRange(0, 19), default=None, metavar="B",
              help="Keep rows whose ensemble bucket (0-19, `phifilter ensemble`) is at least B.")
@click.option("--bucket-column", default=None, metavar="NAME",
              help="Column holding the ensemble buckets (default: the --score-column name + _bucket).")
@click.option("--sample-by-score", default=None, metavar="LO:HI",
              help="Keep each row with probability clip((score - LO) / (HI - LO), 0, 1), drawn from its text's "
                   "hash (deterministic); prints the expected token share (tokens of --tokenizer).")
@text_column_option
@storage_options_option
@task_options
@stats_json_option
@quiet_option
def filter_(inputs, output, quiet, **options):
    """Keep the best rows of scored shards (by threshold, top fraction, token budget or int score).

    --task-index/--num-tasks split the shards between independent tasks, as for score (not with
    --top-fraction or --token-budget, whose boundary documents are kept in corpus order).

    \b
    Example:
      phifilter filter data/scored/ -o data/kept/ --threshold 0.5
      phifilter filter data/scored/ -o data/top10/ --top-fraction 0.1
      phifilter filter data/scored/ -o data/edu3/ --min-int-score 3
      phifilter filter data/scored/ -o data/best-1B/ --token-budget 1000000000
      phifilter filter data/scored/ -o data/ens12/ --score-column ens --min-bucket 12
      phifilter filter data/scored/ -o data/soft/ --sample-by-score 0.2:0.8
      phifilter filter data/scored/ -o data/kept/ --threshold 0.5 --task-index 0 --num-tasks 4
    """
    from .select import filter_shards

    echo_summary(filter_shards(list(inputs), output, progress=not quiet, **options), quiet)


@main.command()
@inputs_argument
@output_option("The ensemble's model folder.")
@click.option("--member", "members", multiple=True, required=True, metavar="NAME=SPEC",
              help="A member scorer (repeatable): SPEC as for `score --model` (or 'bundled': the bundled model).")
@click.option("--combine", "combine_rule", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="How the members' percentile positions combine (Nemotron-CC: max).")
@click.option("--sample", default=10_000, show_default=True, type=click.IntRange(20),
              help="Reference documents read (the first ones, in corpus order).")
@text_column_option
@device_option
@click.option("--batch-size", "embed_batch_size", default=64, show_default=True, type=click.IntRange(1),
              help="Documents per forward pass.")
@click.option("--max-length", default=None, type=click.IntRange(8), help="Tokens read per document (default: each model's).")
@quiet_option
def ensemble(inputs, output, members, quiet, **options):
    """Fit an ensemble (Nemotron-CC style): percentile buckets of each member, combined.

    Each member scores the reference documents; its 5%-percentiles become 20 buckets. A
    document's ensemble score is the max (or mean) of its members' positions in [0, 20), its
    bucket the integer part (0-19). The folder works with `score --model NAME=DIR` (columns NAME
    and NAME_bucket) and `filter --min-bucket`.

    \b
    Example:
      phifilter ensemble data/shards/ -o ens/ --member edu=bundled --member dclm=fasttext:dclm.bin#hq
      phifilter score data/shards/ -o scored/ --model ens=ens/
      phifilter filter scored/ -o kept/ --score-column ens --min-bucket 15
    """
    from .scorerset import EnsembleConfig, build_ensemble

    meta = build_ensemble(list(inputs), output, EnsembleConfig(members=tuple(members), **options))
    if not quiet:
        click.echo(f"ensemble of {len(meta['members'])} ({meta['combine']}) fitted on "
                   f"{meta['reference']['documents']} documents -> {output}")
        for m in meta["members"]:
            q = m["quantiles"]
            click.echo(f"  {m['name']}: q5 {q[1]:.4g}  q50 {q[10]:.4g}  q95 {q[19]:.4g}")


@main.command()
@inputs_argument
@output_option("Parquet file to write.", folder=False)
@click.option("-n", "n", default=5000, show_default=True, type=click.IntRange(1), help="Documents to draw.")
@text_column_option
@click.option("--stratify-by", default=None, help="Column whose values are sampled separately (e.g. source).")
@click.option("--allocation", type=click.Choice(["proportional", "equal"]), default="proportional", show_default=True,
              help="With --stratify-by: share -n in proportion to each value's documents, or equally.")
@click.option("--max-chars", default=None, type=click.IntRange(1), help="Cut longer documents at a line break.")
@click.option("--exclude", multiple=True, type=click.Path(dir_okay=False),
              help="Evaluation file (.jsonl[.gz], .json, .parquet) whose texts must not be drawn; repeatable.")
@click.option("--exclude-ngram", default=13, show_default=True, type=click.IntRange(4),
              help="Words in a run shared with an excluded text that rule a document out.")
@seed_option("Sampling seed.")
@read_batch_rows_option(2048)
@storage_options_option
@stats_json_option
@quiet_option
def sample(inputs, output, exclude, stats_json, quiet, **options):
    """Draw a uniform (optionally stratified) seed set from Parquet shards in one pass.

    Exact duplicates are drawn at most once; documents overlapping --exclude files (HumanEval,
    MBPP, ...) are never drawn. The same inputs and --seed give the same sample.

    \b
    Example:
      phifilter sample data/shards/ -n 5000 -o seed.parquet --stratify-by source --max-chars 2500 \\
          --exclude HumanEval.jsonl.gz --exclude mbpp.jsonl
    """
    from .sample import SampleConfig, sample_shards

    cfg = SampleConfig(exclude=list(exclude), **options)
    echo_summary(sample_shards(list(inputs), output, cfg, progress=not quiet, stats_json=stats_json), quiet)


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@output_option("Parquet file to write (a local path or a URL: s3://, gs://, ...).", folder=False)
@click.option("--backend", type=click.Choice(["openai", "transformers"]), default="openai", show_default=True,
              help="An OpenAI-compatible endpoint, or a local model (a GGUF file or a transformers folder).")
@click.option("--base-url", default="https://api.openai.com/v1", show_default=True,
              help="Endpoint root (vLLM: http://host:8000/v1, Ollama: http://localhost:11434/v1).")
@click.option("--model", required=True,
              help="Model name the endpoint serves; transformers: a .gguf file, a folder holding one, or a model folder.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (never printed or stored).")
@click.option("--rubric", default="auto", show_default=True,
              help="code, web, a rubric file, or auto (per row from the domain column; code without one).")
@text_column_option
@click.option("--domain-column", default="domain", show_default=True, help="Column that --rubric auto reads.")
@click.option("--prompt-style", type=click.Choice(["auto", "standard", "compact"]), default="auto", show_default=True,
              help="standard: rubric first, a reason, then the score line; compact: document first, rubric, then "
                   "only the score line (suits small local models). auto: compact for transformers, else standard.")
@click.option("--max-chars", default=None, type=click.IntRange(1), help="Cut longer documents at a line break first.")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1), help="Requests in flight at once.")
@click.option("--timeout", default=60.0, show_default=True, type=FiniteFloatRange(0, min_open=True),
              help="Seconds to wait for a reply before retrying.")
@click.option("--retries", default=5, show_default=True, type=click.IntRange(0), help="Retries per request.")
@click.option("--retry-delay", default=1.0, show_default=True, type=FiniteFloatRange(0),
              help="First backoff in seconds (doubles per retry, with jitter; Retry-After wins if longer).")
@click.option("--max-requests", default=None, type=click.IntRange(0), help="Send at most this many requests (repairs included), then stop cleanly; 0 rewrites the output from the cache.")
@click.option("--temperature", default=0.0, show_default=True, type=FiniteFloatRange(0),
              help="Sampling temperature; 0 is greedy, deterministic decoding (transformers).")
@click.option("--max-tokens", "--max-new-tokens", "max_tokens", default=None, type=click.IntRange(1),
              help="Cap on reply tokens (openai: not sent unless given; transformers: default 256).")
@click.option("--repair", is_flag=True,
              help="When a reply has no readable score, ask once more for just the score line (cached, counted in --dry-run).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Prompts per generate call (transformers).")
@seed_option("Sampling seed when --temperature > 0 (transformers).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads for the model (transformers; default: torch's). 1 is often fastest on a busy CPU.")
@click.option("--max-context", default=None, type=click.IntRange(64),
              help="Cap on the model's context in tokens (transformers); longer documents are cut to fit.")
@device_option
@click.option("--cache", default=None, type=OutputPath(dir_okay=False),
              help="Answer cache (SQLite; default: OUTPUT stem + .cache.sqlite). On a store (s3://...) a local "
                   "copy is used, locked and published back.")
@click.option("--dry-run", is_flag=True, help="Print requests, estimated tokens and cost; send nothing.")
@click.option("--price-per-mtok", default=None, callback=_price,
              help="Dollars per million tokens for --dry-run: PRICE or PROMPT,COMPLETION.")
@quiet_option
@storage_options_option
@stats_json_option
def label(input, output, quiet, stats_json, **options):
    """Rate each document's educational value 0-5 with an LLM (resumable, cached).

    Every answer is cached as it arrives (keyed by document, rubric and model), so a rerun
    after a crash or Ctrl-C asks only for what is missing. The output has every input column
    plus llm_score (0-5 or null when no score could be read from the reply), llm_reason,
    llm_model, rubric_sha, llm_parse (strict, fallback or none), llm_repaired and llm_cut_at.

    \b
    Example:
      export OPENAI_API_KEY=...
      phifilter label seed.parquet -o labels.parquet --model gpt-4o-mini --dry-run --price-per-mtok 0.15,0.6
      phifilter label seed.parquet -o labels.parquet --model gpt-4o-mini --concurrency 16
      phifilter label seed.parquet -o labels.parquet --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
      phifilter label seed.parquet -o labels.parquet --backend transformers --model ./my-llm/ --device cuda
      phifilter label seed.parquet -o labels.parquet --backend transformers --model SmolLM2-135M-Instruct.Q4_1.gguf --repair
    """
    from .label.annotate import LabelConfig, label_file

    cfg = LabelConfig.from_options(**options)
    summary = label_file(input, output, config=cfg, progress=not quiet, echo=lambda line: click.echo(line, err=True),
                         stats_json=stats_json)
    if cfg.dry_run or not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--id-column", default="id", show_default=True, help="Column pairing the rows ('' or absent: row order).")
@click.option("--score-column-a", "column_a", default=None, help="Score column of A (default: llm_score, else score).")
@click.option("--score-column-b", "column_b", default=None, help="Score column of B (default: llm_score, else score).")
@click.option("--positive-threshold", "binary_threshold", default=3, show_default=True, type=click.IntRange(0, 5),
              help="Scores at or above count as positive for the binary agreement.")
@json_option()
@storage_options_option
def agreement(a, b, as_json, **options):
    """Compare two label sets of the same documents: agreement, weighted kappa, confusion matrix.

    \b
    Example:
      phifilter agreement labels-gpt4o.parquet labels-qwen.parquet
      phifilter agreement data/seed/edu_seed.parquet labels.parquet --score-column-a score
    """
    from .label.agreement import AgreementConfig, compare_labels

    result = compare_labels(a, b, AgreementConfig(**options))
    echo_json_or_text(result.to_dict, result, as_json)


@main.command()
@inputs_argument
@output_option("HTML file to write.", folder=False)
@click.option("--by", default=None, help="Column whose values get their own histogram and row (e.g. source).")
@text_column_option
@score_column_option()
@click.option("--threshold", type=FiniteFloatRange(), default=None,
              help="Threshold to report on, within the column's range (its run record's: [0, 1] for a "
                   "probability, 0-5 for a regression); default: the decision threshold its run record gives.")
@model_option("Model folder whose threshold to use (default: the bundled model).")
@click.option("--samples", "samples_per_band", default=5, show_default=True, type=click.IntRange(0),
              help="Sample documents per score band.")
@click.option("--excerpt-chars", default=2000, show_default=True, type=click.IntRange(1),
              help="Characters shown of each sample document.")
@click.option("--title", default="phifilter score report", show_default=True, help="Page title.")
@seed_option("Seed for the random samples.", "--seed", "--random-state")
@read_batch_rows_option(4096)
@storage_options_option
@stats_json_option
@quiet_option
def report(inputs, output, stats_json, quiet, **options):
    """Write a self-contained HTML report on scored shards (histograms, kept shares, token budget, samples).

    Reads only the score, text and --by columns, in batches, so any corpus size fits in
    memory. The page has no scripts and loads nothing from the network. Tokens are
    estimated as UTF-8 bytes / 4.

    \b
    Example:
      phifilter report data/scored/ -o report.html --by source
      phifilter report data/scored/ -o report.html --model my-model/
    """
    from .report import ReportConfig, build_report

    cfg = ReportConfig(**options)
    echo_summary(build_report(list(inputs), output, cfg, progress=not quiet, stats_json=stats_json), quiet)


@main.command()
@click.argument("model", required=False, type=click.Path())
@storage_options_option
def info(model):
    """Show a model folder's embedder, thresholds and metrics (default: the bundled model).

    \b
    Example:
      phifilter info my-model/
    """
    from .modelinfo import describe_model

    click.echo(describe_model(model))


@main.command()
@inputs_argument
@output_option("Output folder: contamination.parquet, contamination.md, contamination.html.")
@click.option("--eval", "eval_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="More problems as JSON lines (task_id + prompt/canonical_solution, code or solution); repeatable.")
@click.option("--no-shipped", is_flag=True, help="Leave out the shipped HumanEval and MBPP (then give --eval).")
@click.option("--methods", default="embedding,syntax", show_default=True,
              help="Comma-separated: embedding (MiniLM cosine), syntax (names and literals ignored).")
@click.option("--max-chunks", default=8, show_default=True, type=click.IntRange(1),
              help="Chunks of 256 tokens embedded per document (syntax always reads the whole document).")
@click.option("--batch-rows", default=512, show_default=True, type=click.IntRange(1),
              help="Documents per part file (the unit a rerun resumes from).")
@click.option("--id-column", default="id", show_default=True, help="Copied to the output when the input has it.")
@click.option("--top", default=20, show_default=True, type=click.IntRange(0), help="Top matches shown in the summary.")
@text_column_option
@device_option
@stats_json_option
@quiet_option
def contamination(inputs, output, eval_files, no_shipped, methods, max_chunks, batch_rows, id_column, top,
                  text_column, device, stats_json, quiet):
    """Measure each document's similarity to HumanEval, MBPP and other evaluation problems.

    Two methods, as phi-1 audited its data: the embedding cosine of the document's best chunk,
    and a syntax-tree similarity that ignores names, literals, comments and docstrings (a token
    sequence for code that does not parse). max_similarity is the larger, with the nearest
    problem and the method. A rerun resumes; `phifilter ablate --prune-similar` uses the figure.

    \b
    Example:
      phifilter contamination data/pool/ -o audit/
      phifilter contamination data/pool/ -o audit/ --eval my_benchmark.jsonl --methods syntax
    """
    from .contamination import run_contamination

    summary = run_contamination(
        list(inputs), output, eval_files=eval_files, shipped=not no_shipped,
        methods=[m.strip() for m in methods.split(",") if m.strip()], max_chunks=max_chunks,
        batch_rows=batch_rows, text_column=text_column, id_column=id_column, device=device, top=top,
        progress=not quiet, stats_json=stats_json)
    if not quiet:
        d = summary["max_similarity"]
        if d.get("n"):
            click.echo(f"{summary['documents']:,} documents: max_similarity median {d['median']:.3f}, "
                       f"p99 {d['p99']:.3f}, max {d['max']:.3f}; above 0.8: {d['above']['0.8']:,}, "
                       f"above 0.9: {d['above']['0.9']:,}")
        click.echo(f"wrote {output}/contamination.parquet, contamination.md, contamination.html")


@main.command()
@inputs_argument
@output_option("Report folder (also holds data and checkpoints); a URL (s3://...) gets the report files, "
               "data and checkpoints stay in a local folder in phifilter's cache.")
@click.option("--preset", type=click.Choice(["micro", "tiny", "small", "base"]), default="tiny", show_default=True,
              help="Model size: micro (seconds), tiny (minutes on a CPU), small, base (~100M, GPU).")
@click.option("--tokens", default=None, callback=_tokens,
              help="Training tokens per run, e.g. 2.8M or 50M (default: the preset's).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="Runs per arm.")
@seed_option("First seed.", "--seed", "--random-state")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Filtered arm: edu_score at or above this [default: 0.5].")
@click.option("--top-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Filtered arm: the best documents holding this share of the tokens.")
@click.option("--arms", default="filtered,random,unfiltered", show_default=True, callback=_arms,
              help="Comma-separated arms to run.")
@click.option("--eval-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with HumanEval.jsonl.gz and mbpp.jsonl (default: the copies shipped with phifilter).")
@click.option("--val-fraction", default=0.02, show_default=True, type=float, help="Documents held out for validation.")
@click.option("--pass-samples", default=4, show_default=True, type=click.IntRange(0),
              help="Completions sampled per problem for pass@k (0: skip pass@k).")
@click.option("--pass-problems", default=None, type=click.IntRange(1), help="Problems per benchmark for pass@k (default: all).")
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(1), help="Tokens per sampled completion.")
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), help="Sampling temperature for pass@k.")
@text_column_option
@score_column_option(None)
@device_option
@click.option("--threads", default=None, type=click.IntRange(1),
              help="torch CPU threads (default: one per core; 1 is often faster on a busy machine).")
@click.option("--no-compile", "compile", is_flag=True, flag_value=False, default=True, help="Do not torch.compile on CUDA.")
@click.option("--note", default=None, help="A sentence to print at the top of the report.")
@click.option("--prune-similar", "prune_similar", multiple=True, type=click.FloatRange(0, 1, max_open=True),
              metavar="TAU", help="Also train every arm without the documents whose max_similarity to a HumanEval/MBPP "
                                  "problem exceeds TAU (phi-1's pruning; see `phifilter contamination`); repeatable.")
@click.option("--similarity-from", type=click.Path(exists=True), default=None, metavar="DIR",
              help="Take max_similarity from this `phifilter contamination` output of the same inputs "
                   "(default: measured here, cached in the data folder).")
@click.option("--similarity-methods", default="syntax", show_default=True, callback=_arms,
              help="How ablate measures max_similarity itself: syntax, embedding or both, comma-separated "
                   "(embedding costs ~2 CPU-seconds a document; on a CPU prefer an audit: --similarity-from).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_overrides,
              help="Override a model or loop setting of the preset, e.g. --set lr=1e-3 --set n_layer=2.")
@storage_options_option
@stats_json_option
@quiet_option
def ablate(inputs, output, stats_json, quiet, **options):
    """Train small GPTs on filtered, random and unfiltered data and report which is better.

    INPUTS are scored shards (from `phifilter score`). The filtered arm keeps documents above
    the threshold (or the top fraction); the random arm is a random subset with as many tokens;
    the unfiltered arm is everything. Each arm trains for the same number of tokens, for every
    seed. HumanEval and MBPP are removed from the data first. Writes report.md, report.html and
    results.json; a rerun skips finished runs and resumes interrupted ones. INPUTS and OUTPUT may
    be URLs (s3://, gs://, ...).

    \b
    Example:
      phifilter ablate data/scored/ -o reports/ablation/ --seeds 3
      phifilter ablate data/scored/ -o reports/gpu/ --preset small --tokens 200M --top-fraction 0.3
    """
    from .pretrain.ablate import run_ablation
    from .pretrain.ablation_report import command_line, verdict
    from .pretrain.config import AblateConfig

    cfg = AblateConfig(**options)
    results = run_ablation(list(inputs), output, cfg, progress=not quiet, command=command_line(), stats_json=stats_json)
    if not quiet:
        click.echo(verdict(results).replace("**", ""))
        click.echo(f"report: {output}/report.md, {output}/report.html, {output}/results.json")


if __name__ == "__main__":
    main()
