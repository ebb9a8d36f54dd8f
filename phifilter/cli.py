"""The `phifilter` command line: a thin click layer over the library.

Options are parsed here and handed to library functions; heavy modules (torch, sentence-
transformers, scikit-learn) are imported inside the commands, so `phifilter --help` is instant.
A :class:`~phifilter.errors.PhifilterError` becomes one `Error: ...` line and exit status 1.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import PhifilterError


class PhifilterGroup(click.Group):
    """Turns library errors into one clean line; Ctrl-C into a hint that a rerun resumes."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PhifilterError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted: finished shards are kept; rerun the same command to resume.", err=True)
            sys.exit(130)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange that also refuses nan and inf (which pass every range comparison)."""

    def convert(self, value, param, ctx):
        import math

        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


def _quiet_from_group(ctx, param, value):
    # `phifilter --quiet CMD` and `phifilter CMD --quiet` mean the same.
    return bool(value) or bool((ctx.find_root().obj or {}).get("quiet"))


quiet_option = click.option("-q", "--quiet", is_flag=True, callback=_quiet_from_group,
                            help="No progress bars or summary.")
text_column_option = click.option(
    "--text-column", default="text", show_default=True, help="Column holding the document text."
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
)


def _sha256_pins(ctx, param, values):
    """--embedder-sha256 FILE=HEX (repeatable) -> {FILE: hex} or None."""
    import re

    pins = {}
    for value in values:
        name, sep, digest = value.partition("=")
        digest = digest.strip().lower()
        if not sep or not name.strip() or "/" in name or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise click.BadParameter(f"{value!r}: expected FILE=HEX with a 64-digit SHA-256, "
                                     "e.g. model.safetensors=53aa5117...", param_hint="--embedder-sha256")
        pins[name.strip()] = digest
    return pins or None


def _storage_options(ctx, param, value):
    """--storage-options JSON -> handed to every fsspec filesystem this command opens."""
    if value is None:
        return None
    import json

    from .location import set_storage_options

    try:
        options = json.loads(value)
    except ValueError as e:
        raise click.BadParameter(f"not valid JSON ({e}); e.g. '{{\"anon\": true}}'", param_hint="--storage-options")
    if not isinstance(options, dict):
        raise click.BadParameter("expected a JSON object, e.g. '{\"anon\": true}'", param_hint="--storage-options")
    set_storage_options(options)
    return options


def _existing_location(ctx, param, value):
    """A local path that must exist, or a URL (checked when it is read)."""
    import os

    from .location import is_url

    if value is not None and not is_url(value) and not os.path.exists(value):
        raise click.BadParameter(f"Path '{value}' does not exist.", param=param)
    return value


def storage_options_option(f):
    """The shared --storage-options option: applied when parsed, not passed to the command."""
    return click.option(
        "--storage-options", default=None, metavar="JSON", expose_value=False, callback=_storage_options,
        help="fsspec options for URL inputs/outputs (s3://, gs://, hf://), e.g. '{\"anon\": true}' or "
             "'{\"s3\": {\"endpoint_url\": \"http://127.0.0.1:9000\"}}'. Credentials otherwise come from "
             "the store's usual environment (AWS_*, AWS_ENDPOINT_URL, ...).")(f)


stats_json_option = click.option(
    "--stats-json", default=None, type=click.Path(dir_okay=False),
    help="Also write the run's statistics here as JSON (rows, bytes, tokens, docs/s, histogram, per-shard timings, failures).")
embedder_revision_option = click.option(
    "--embedder-revision", default=None, help="Hub revision (commit hash) to load the embedder at.")
embedder_sha256_option = click.option(
    "--embedder-sha256", multiple=True, metavar="FILE=HEX", callback=_sha256_pins,
    help="Refuse an embedder whose FILE does not have this SHA-256; repeatable.")


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
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder (local or URL).")
@click.option("-m", "--model", type=click.Path(), default=None, help="Model folder (default: the bundled model).")
@click.option("--output-format", type=click.Choice(["parquet", "jsonl"]), default=None,
              help="Write every output shard in this format (default: the input's format and compression).")
@storage_options_option
@text_column_option
@click.option("--score-column", default="edu_score", show_default=True, help="Name of the added score column.")
@device_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Documents per embedder forward pass.")
@click.option("--read-batch-rows", default=None, type=click.IntRange(1),
              help="Rows per Arrow batch read (and output row group). Default: 2048; 2048 / max chunks for a chunking model.")
@click.option("--max-length", default=None, type=click.IntRange(8), help="Tokens read per document (default: the model's).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="On a bad shard: stop, or report it and score the rest.")
@click.option("--embeddings", default=None, metavar="PATH", callback=_existing_location,
              help="Embedding cache from `phifilter embed`: documents it holds (by --id-column) are not re-embedded.")
@click.option("--id-column", default="id", show_default=True, help="Document id column for --embeddings.")
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
@embedder_revision_option
@embedder_sha256_option
@click.option("--int-score-column", default=None, metavar="NAME",
              help="Also write NAME (int8): the expected 0-5 score rounded, FineWeb-Edu style (models trained by this version).")
@click.option("--task-index", default=None, type=click.IntRange(0),
              help="Partitioned run: this task's number, 0-based (default: $SLURM_ARRAY_TASK_ID, else 0).")
@click.option("--num-tasks", default=None, type=click.IntRange(1),
              help="Partitioned run: how many tasks share the shards (default: $SLURM_ARRAY_TASK_COUNT, else 1).")
@stats_json_option
@quiet_option
def score(inputs, output, model, output_format, text_column, score_column, device, batch_size, read_batch_rows, max_length,
          on_error, embeddings, id_column, devices, engine, ray_address, dtype, quantize, tokens_per_batch, num_threads,
          embedder_revision, embedder_sha256, task_index, num_tasks, stats_json, int_score_column, quiet):
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
    """
    from .scoring import ScoreConfig, score_shards

    cfg = ScoreConfig(
        text_column=text_column, score_column=score_column, device=device, embed_batch_size=batch_size,
        read_batch_rows=read_batch_rows, max_length=max_length, on_error=on_error,
        embeddings=embeddings, id_column=id_column,
        devices=devices, engine=engine, ray_address=ray_address, dtype=dtype, quantize=quantize,
        tokens_per_batch=tokens_per_batch, num_threads=num_threads,
        embedder_revision=embedder_revision, embedder_sha256=embedder_sha256, output_format=output_format,
        int_score_column=int_score_column,
        task_index=task_index, num_tasks=num_tasks, stats_json=stats_json,
    )
    summary = score_shards(list(inputs), output, model=model, config=cfg, progress=not quiet)
    if not quiet:
        click.echo(str(summary))
    elif summary.failures:
        for path, error in summary.failures:
            click.echo(f"failed: {path}: {error}", err=True)


@main.command()
@click.argument("output", type=click.Path())
@click.argument("inputs", nargs=-1)
@click.option("--score-column", default="edu_score", show_default=True, help="Name of the score column.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
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
    if as_json:
        import json

        click.echo(json.dumps(report.as_dict(), indent=1))
    else:
        click.echo(str(report))


@main.command()
@click.argument("labels", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@text_column_option
@click.option("--score-column", default=None, help="0-5 label column (default: llm_score, else score).")
@click.option("--positive-threshold", default=3, show_default=True, type=int, help="Scores at or above count as positive.")
@click.option("--threshold", default="auto", show_default=True,
              help="Decision threshold on edu_score, or 'auto' for the one that maximises cross-validated F1.")
@click.option("--n-estimators", default=300, show_default=True, type=click.IntRange(1), help="Trees in the forest.")
@click.option("--min-samples-leaf", default=3, show_default=True, type=click.IntRange(1), help="Smallest leaf of each tree.")
@click.option("--cv-folds", default=5, show_default=True, type=click.IntRange(0), help="Cross-validation folds (0: none).")
@click.option("--embedder", default=None, help="sentence-transformers name or folder (default: all-MiniLM-L6-v2).")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(8), help="Tokens read per document.")
@embedder_revision_option
@embedder_sha256_option
@device_option
@click.option("--random-state", "--seed", "random_state", default=0, show_default=True, type=int,
              help="Seed for folds and forest.")
@click.option("--head", type=click.Choice(["forest", "forest-regressor", "logistic", "ridge", "svr"]), default="forest",
              show_default=True, help="The embedding head: random forest classifier (the paper's), random forest "
                                      "regressor on the 0-5 score, logistic regression, or ridge / RBF support-vector "
                                      "regression on the 0-5 score. Nested-CV ROC AUC on the 2,371-row seed set "
                                      "(MiniLM chunk-mean): svr 0.912, logistic 0.887, ridge 0.886, forest 0.883; all "
                                      "score about 1.4 docs/s on 2 shared CPU cores, the embedder's cost "
                                      "(benchmarks/classifier_quality.md).")
@click.option("--doc-mode", type=click.Choice(["truncate", "chunk-mean", "chunk-weighted", "chunk-score-mean", "chunk-score-max"]),
              default="chunk-mean", show_default=True,
              help="Read the first --max-length tokens, or cut documents into chunks and combine their embeddings or scores.")
@click.option("--max-chunks", default=8, show_default=True, type=click.IntRange(1), help="Chunks read per document (chunk modes).")
@click.option("--features", default="mean", show_default=True, metavar="PARTS",
              help="What the head sees in chunk-mean/chunk-weighted mode: mean, first, max, length joined by '+', "
                   "e.g. mean+first.")
@click.option("--calibrate", is_flag=True, help="Isotonic calibration on out-of-fold scores: edu_score becomes a probability.")
@click.option("--lexical", type=click.Choice(["none", "fasttext"]), default="none", show_default=True,
              help="Add a fastText lexical scorer beside the embedding scorer; a logistic combiner fitted on their "
                   "out-of-fold scores gives edu_score.")
@click.option("--lexical-labels", type=click.Choice(["binary", "grades"]), default="binary", show_default=True,
              help="What the fastText scorer learns: score >= --positive-threshold (binary, the better stack member on "
                   "the seed set), or the six 0-5 grades.")
@click.option("--expensive-share", type=click.FloatRange(0, 1), default=None, metavar="SHARE",
              help="Cascade (needs --lexical): only this share of documents, the lexical scorer's most uncertain, "
                   "is embedded; the band is chosen on out-of-fold scores.")
@click.option("--target-precision", type=click.FloatRange(0, 1), default=None,
              help="Threshold: the lowest whose out-of-fold precision reaches this.")
@click.option("--target-share", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Threshold: keep this share of documents.")
@click.option("--target-token-share", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Threshold: keep this share of tokens.")
@click.option("--embeddings", default=None, metavar="PATH", callback=_existing_location,
              help="Embedding cache from `phifilter embed` (same --embedder, --max-length and chunking).")
@click.option("--id-column", default="id", show_default=True, help="Document id column for --embeddings.")
@quiet_option
@storage_options_option
def train(labels, output, text_column, score_column, positive_threshold, threshold, n_estimators, min_samples_leaf, cv_folds,
          embedder, max_length, device, random_state, head, doc_mode, max_chunks, features, calibrate, target_precision,
          target_share, target_token_share, embeddings, id_column, embedder_revision, embedder_sha256, lexical, lexical_labels,
          expensive_share, quiet):
    """Train a model folder from labelled Parquet (text + 0-5 score).

    Reports stratified cross-validated precision, recall, F1 and ROC AUC and stores them in
    the model folder and its model card (README.md). The threshold is the max out-of-fold F1
    one unless --threshold or one --target-* option says otherwise.

    \b
    Example:
      phifilter train labels.parquet -o my-model/
      phifilter embed labels.parquet -o emb/ --chunking chunk
      phifilter train labels.parquet -o m2/ --embeddings emb/ --doc-mode chunk-mean --head logistic --calibrate
      phifilter train labels.parquet -o m3/ --lexical fasttext --expensive-share 0.2
    """
    from .train import TrainConfig, train_model

    if threshold != "auto":
        try:
            threshold = float(threshold)
        except ValueError:
            threshold = float("nan")
        if not 0.0 <= threshold <= 1.0:  # also refuses nan
            raise click.BadParameter("expected 'auto' or a number in [0, 1]", param_hint="--threshold")
    cfg = TrainConfig(
        text_column=text_column, score_column=score_column, positive_threshold=positive_threshold,
        threshold=threshold, n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, cv_folds=cv_folds, embedder=embedder,
        max_length=max_length, device=device, random_state=random_state, head=head, doc_mode=doc_mode,
        max_chunks=max_chunks, features=features, calibrate=calibrate, target_precision=target_precision,
        target_share=target_share,
        target_token_share=target_token_share, embeddings=embeddings, id_column=id_column,
        embedder_revision=embedder_revision, embedder_sha256=embedder_sha256,
        lexical=None if lexical == "none" else lexical, expensive_share=expensive_share,
        lexical_params=None if lexical == "none" else {"labels": lexical_labels},
    )
    if sum(x is not None for x in (target_precision, target_share, target_token_share)) > 1 or (
            threshold != "auto" and any(x is not None for x in (target_precision, target_share, target_token_share))):
        raise click.UsageError("give at most one of --threshold, --target-precision, --target-share, --target-token-share")
    _, metrics = train_model(labels, output, cfg, progress=not quiet)
    if not quiet:
        click.echo(f"model written to {output}")
        click.echo(format_metrics(metrics))


def format_parts(meta: dict) -> list[str]:
    """`phifilter info` lines for a model made of parts (format 4): scorers, combiner weights, band."""
    scorers = meta.get("scorers")
    if not scorers:
        return ["parts: embedding + head (one scorer)"]
    parts = (meta.get("metrics") or {}).get("parts") or {}
    auc = lambda name: (parts.get(name) or {}).get("roc_auc")  # noqa: E731
    lines = ["parts:"]
    for s in scorers:
        what = s.get("kind") + (f" ({s.get('head')})" if s.get("head") else "")
        a = auc(s.get("name"))
        lines.append(f"  scorer {s.get('name')}: {what}" + (f", out-of-fold AUC {a:.3f}" if a is not None else ""))
    c = meta.get("combiner") or {}
    weights = ", ".join(f"{w:+.3f} x {n}" for n, w in zip(c.get("inputs", []), c.get("coef", [])))
    a = auc("combined")
    lines.append(f"  combiner: {c.get('kind')} on logits: {weights}, intercept {c.get('intercept', 0):+.3f}"
                 + (f"; out-of-fold AUC {a:.3f}" if a is not None else ""))
    cascade = meta.get("cascade")
    if cascade:
        lo, hi = cascade.get("band") or [None, None]
        fig = parts.get("cascade") or {}
        band = "empty" if lo is None else f"[{lo:.4f}, {hi:.4f}]"
        lines.append(f"  cascade: {cascade.get('cheap')} score band {band} is embedded "
                     f"(--expensive-share {cascade.get('expensive_share')}; out of fold: "
                     f"{100 * fig.get('share_embedded', 0):.1f}% embedded, {100 * fig.get('agreement', 0):.1f}% "
                     f"agreement with the full ensemble, AUC {fig.get('roc_auc') or 0:.3f})")
    else:
        lines.append("  cascade: none (every document is embedded)")
    return lines


def format_metrics(metrics: dict) -> str:
    if not metrics:
        return "no cross-validation (too few labels)"
    lines = [f"{metrics['cv_folds']}-fold cross-validated, threshold {metrics['threshold']} "
             f"({metrics.get('threshold_chosen_by', 'user')}):",
             f"  {'subset':<8} {'docs':>6} {'pos':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'AUC':>6}"]
    groups = [("all", metrics["overall"])] + sorted((metrics.get("per_domain") or {}).items())
    for name, m in groups:
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        lines.append(f"  {name:<8} {m['n']:>6} {m['positives']:>5} {m['precision']:>6.3f} "
                     f"{m['recall']:>6.3f} {m['f1']:>6.3f} {auc:>6}")
    docs = metrics.get("documents")
    if docs:
        lines.append(f"documents: {docs['chunked']} embedded in several chunks, {docs['truncated']} with text not read")
    return "\n".join(lines)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Embeddings folder to write.")
@click.option("--embedder", default=None, help="sentence-transformers name or folder, or mean-pool:FOLDER (default: all-MiniLM-L6-v2).")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(8), help="Tokens per document or chunk.")
@click.option("--chunking", type=click.Choice(["truncate", "chunk"]), default="truncate", show_default=True,
              help="One embedding per document (truncated), or one per chunk (for the chunk-* --doc-mode).")
@click.option("--max-chunks", default=8, show_default=True, type=click.IntRange(1), help="Chunks kept per document.")
@text_column_option
@click.option("--id-column", default="id", show_default=True, help="Document id column (absent: SHA-1 of the text).")
@device_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Texts per embedder forward pass.")
@quiet_option
@storage_options_option
@stats_json_option
def embed(inputs, output, embedder, max_length, chunking, max_chunks, text_column, id_column, device, batch_size, quiet,
          stats_json):
    """Write an embedding cache: a Parquet sidecar per shard, keyed by document id.

    train, evaluate and score read it with --embeddings, so retraining, re-thresholding or
    trying another head costs no new embedding pass. A rerun skips finished sidecars.

    \b
    Example:
      phifilter embed labels.parquet -o emb/ --chunking chunk
      phifilter train labels.parquet -o model/ --doc-mode chunk-mean --embeddings emb/
    """
    from .embcache import check_embed_inputs, embed_shards
    from .hf_embed import make_embedder

    check_embed_inputs(list(inputs), output, text_column)  # in its first second, not after loading the model
    emb = make_embedder(embedder, device=device, max_length=max_length, batch_size=batch_size)
    summary = embed_shards(list(inputs), output, emb, chunking=chunking, max_chunks=max_chunks,
                           text_column=text_column, id_column=id_column or None, progress=not quiet,
                           stats_json=stats_json)
    if not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("model", type=click.Path())
@click.argument("labels", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default=None, type=click.Path(file_okay=False),
              help="Folder for metrics.json, pr_curve.png and calibration.png (default: eval-LABELS_STEM/).")
@text_column_option
@click.option("--score-column", default=None, help="0-5 label column (default: llm_score, else score).")
@click.option("--embeddings", default=None, metavar="PATH", callback=_existing_location, help="Embedding cache from `phifilter embed`.")
@click.option("--id-column", default="id", show_default=True, help="Document id column for --embeddings.")
@click.option("--bootstrap", "n_bootstrap", default=1000, show_default=True, type=click.IntRange(0),
              help="Bootstrap resamples for the 95% confidence intervals (0: none).")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@quiet_option
@storage_options_option
def evaluate(model, labels, output, text_column, score_column, embeddings, id_column, n_bootstrap, seed, device,
             as_json, quiet):
    """Measure a model against labels it has not seen: precision, recall, F1, ROC/PR AUC, Spearman,
    confusion matrix and bootstrap confidence intervals, overall and per domain; PR and
    calibration plots are written as PNG files.

    \b
    Example:
      phifilter evaluate my-model/ heldout-labels.parquet -o eval/
    """
    import json
    from pathlib import Path

    from .evaluate import evaluate_model

    output = output or f"eval-{Path(labels).stem}"
    report = evaluate_model(model, labels, output, text_column=text_column, score_column=score_column,
                            embeddings=embeddings, id_column=id_column, n_bootstrap=n_bootstrap, seed=seed,
                            device=device, progress=not quiet)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif not quiet:
        click.echo(str(report))


@main.command()
@click.argument("model", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
@click.option("-n", "n", default=500, show_default=True, type=click.IntRange(1), help="Documents to suggest.")
@click.option("--random-share", default=0.1, show_default=True, type=click.FloatRange(0, 1),
              help="Share of -n drawn at random instead of by disagreement.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random share.")
@text_column_option
@click.option("--read-batch-rows", default=2048, show_default=True, type=click.IntRange(1), help="Rows per Arrow batch read.")
@device_option
@quiet_option
@storage_options_option
def suggest(model, inputs, output, n, random_share, seed, text_column, read_batch_rows, device, quiet):
    """Pick the documents most worth labelling next: where the forest's trees disagree most,
    plus a random share.

    \b
    Example:
      phifilter suggest my-model/ data/shards/ -n 500 -o next.parquet
      phifilter label next.parquet -o next-labels.parquet --model gpt-4o-mini
    """
    from .suggest import suggest as run_suggest

    summary = run_suggest(model, list(inputs), output, n=n, random_share=random_share, seed=seed,
                          text_column=text_column, read_batch_rows=read_batch_rows, device=device, progress=not quiet)
    if not quiet:
        click.echo(str(summary))


@main.command(name="filter")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threshold", type=FiniteFloatRange(0, 1), default=None, help="Keep rows with a score at or above this.")
@click.option("--top-fraction", type=FiniteFloatRange(0, 1, min_open=True), default=None,
              help="Keep this fraction of documents, best first.")
@click.option("--token-budget", default=None, type=click.IntRange(1), metavar="N",
              help="Keep the best documents up to N tokens (counted with --tokenizer).")
@click.option("--tokenizer", default=None, metavar="NAME",
              help="Tokenizer for --token-budget: a folder or tokenizer.json, or a hub id (default: the embedder's, all-MiniLM-L6-v2).")
@click.option("--score-column", default="edu_score", show_default=True, help="Column holding the scores.")
@click.option("--min-int-score", type=click.IntRange(0, 5), default=None, metavar="N",
              help="Keep rows whose int score (score --int-score-column) is at least N, FineWeb-Edu style.")
@click.option("--int-score-column", default="int_score", show_default=True, help="Column holding the int scores.")
@text_column_option
@storage_options_option
@stats_json_option
@quiet_option
def filter_(inputs, output, threshold, top_fraction, token_budget, tokenizer, score_column, min_int_score, int_score_column, text_column,
            stats_json, quiet):
    """Keep the best rows of scored shards (by threshold, top fraction, token budget or int score).

    \b
    Example:
      phifilter filter data/scored/ -o data/kept/ --threshold 0.5
      phifilter filter data/scored/ -o data/top10/ --top-fraction 0.1
      phifilter filter data/scored/ -o data/edu3/ --min-int-score 3
      phifilter filter data/scored/ -o data/best-1B/ --token-budget 1000000000
    """
    from .select import filter_shards

    if min_int_score is not None:
        if threshold is not None or top_fraction is not None or token_budget is not None:
            raise click.UsageError("give one of --threshold, --top-fraction, --token-budget or --min-int-score")
        threshold, score_column = min_int_score, int_score_column
    summary = filter_shards(list(inputs), output, threshold=threshold, top_fraction=top_fraction,
                            score_column=score_column, text_column=text_column, progress=not quiet,
                            token_budget=token_budget, tokenizer=tokenizer, stats_json=stats_json)
    if not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
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
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed.")
@click.option("--read-batch-rows", default=2048, show_default=True, type=click.IntRange(1), help="Rows per Arrow batch read.")
@storage_options_option
@stats_json_option
@quiet_option
def sample(inputs, output, n, text_column, stratify_by, allocation, max_chars, exclude, exclude_ngram, seed,
           read_batch_rows, stats_json, quiet):
    """Draw a uniform (optionally stratified) seed set from Parquet shards in one pass.

    Exact duplicates are drawn at most once; documents overlapping --exclude files (HumanEval,
    MBPP, ...) are never drawn. The same inputs and --seed give the same sample.

    \b
    Example:
      phifilter sample data/shards/ -n 5000 -o seed.parquet --stratify-by source --max-chars 2500 \\
          --exclude HumanEval.jsonl.gz --exclude mbpp.jsonl
    """
    from .sample import SampleConfig, sample_shards

    cfg = SampleConfig(n=n, text_column=text_column, stratify_by=stratify_by, allocation=allocation,
                       max_chars=max_chars, seed=seed, exclude=list(exclude), exclude_ngram=exclude_ngram,
                       read_batch_rows=read_batch_rows)
    summary = sample_shards(list(inputs), output, cfg, progress=not quiet, stats_json=stats_json)
    if not quiet:
        click.echo(str(summary))


def _price(value):
    if value is None:
        return None
    try:
        parts = [float(p) for p in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 0:
        raise click.BadParameter("expected a dollar price per million tokens, or PROMPT,COMPLETION", param_hint="--price-per-mtok")
    return (parts[0], parts[-1])


@main.command()
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
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
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed when --temperature > 0 (transformers).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads for the model (transformers; default: torch's). 1 is often fastest on a busy CPU.")
@click.option("--max-context", default=None, type=click.IntRange(64),
              help="Cap on the model's context in tokens (transformers); longer documents are cut to fit.")
@device_option
@click.option("--cache", default=None, type=click.Path(dir_okay=False),
              help="Answer cache (SQLite; default: OUTPUT stem + .cache.sqlite).")
@click.option("--dry-run", is_flag=True, help="Print requests, estimated tokens and cost; send nothing.")
@click.option("--price-per-mtok", default=None, help="Dollars per million tokens for --dry-run: PRICE or PROMPT,COMPLETION.")
@quiet_option
@storage_options_option
def label(input, output, backend, base_url, model, api_key_env, rubric, text_column, domain_column, prompt_style, max_chars,
          concurrency, timeout, retries, retry_delay, max_requests, temperature, max_tokens, repair, batch_size, seed,
          threads, max_context, device, cache, dry_run, price_per_mtok, quiet):
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
    import os

    from .label.annotate import LabelConfig, label_file

    cfg = LabelConfig(text_column=text_column, rubric=rubric, domain_column=domain_column, max_chars=max_chars,
                      cache=cache, max_requests=max_requests, retries=retries, retry_delay=retry_delay,
                      dry_run=dry_run, price_per_mtok=_price(price_per_mtok), repair=repair,
                      prompt_style=("compact" if backend == "transformers" else "standard")
                      if prompt_style == "auto" else prompt_style)
    if backend == "openai":
        from urllib.parse import urlsplit

        from .label.backends import OpenAIChatBackend

        api_key = os.environ.get(api_key_env) or None
        if api_key is None and not dry_run:
            host = urlsplit(base_url).hostname or ""
            if api_key_env != "OPENAI_API_KEY" or host.endswith(("openai.com", "openai.azure.com")):
                raise click.ClickException(f"the environment variable {api_key_env} is not set; "
                                           f"export the API key as {api_key_env} (or name another with --api-key-env)")
        make = lambda: OpenAIChatBackend(base_url, model, api_key=api_key, timeout=timeout,  # noqa: E731
                                         concurrency=concurrency, temperature=temperature, max_tokens=max_tokens)
        model_id = model
    else:
        from .label.backends import TransformersBackend
        from .label.local_model import resolve_local_model

        make = lambda: TransformersBackend(model, device=device, batch_size=batch_size,  # noqa: E731
                                           max_new_tokens=max_tokens or 256, temperature=temperature, seed=seed,
                                           threads=threads, context=max_context)
        model_id = resolve_local_model(model).model_id  # checks the path before anything is read or loaded
    summary = label_file(input, output, make, cfg, model_id=model_id, progress=not quiet,
                         echo=lambda line: click.echo(line, err=True))
    if dry_run or not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("a", type=click.Path(dir_okay=False))
@click.argument("b", type=click.Path(dir_okay=False))
@click.option("--id-column", default="id", show_default=True, help="Column pairing the rows ('' or absent: row order).")
@click.option("--score-column-a", default=None, help="Score column of A (default: llm_score, else score).")
@click.option("--score-column-b", default=None, help="Score column of B (default: llm_score, else score).")
@click.option("--positive-threshold", default=3, show_default=True, type=click.IntRange(0, 5),
              help="Scores at or above count as positive for the binary agreement.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@storage_options_option
def agreement(a, b, id_column, score_column_a, score_column_b, positive_threshold, as_json):
    """Compare two label sets of the same documents: agreement, weighted kappa, confusion matrix.

    \b
    Example:
      phifilter agreement labels-gpt4o.parquet labels-qwen.parquet
      phifilter agreement data/seed/edu_seed.parquet labels.parquet --score-column-a score
    """
    import json

    from .label.agreement import compare_labels

    result = compare_labels(a, b, column_a=score_column_a, column_b=score_column_b, id_column=id_column,
                            binary_threshold=positive_threshold)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else str(result))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--by", default=None, help="Column whose values get their own histogram and row (e.g. source).")
@text_column_option
@click.option("--score-column", default="edu_score", show_default=True, help="Column holding the scores.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Threshold to report on (default: the --model's decision threshold).")
@click.option("-m", "--model", type=click.Path(), default=None,
              help="Model folder whose threshold to use (default: the bundled model).")
@click.option("--samples", default=5, show_default=True, type=click.IntRange(0), help="Sample documents per score band.")
@click.option("--excerpt-chars", default=2000, show_default=True, type=click.IntRange(1),
              help="Characters shown of each sample document.")
@click.option("--title", default="phifilter score report", show_default=True, help="Page title.")
@click.option("--seed", "--random-state", "seed", default=0, show_default=True, type=int, help="Seed for the random samples.")
@click.option("--read-batch-rows", default=4096, show_default=True, type=click.IntRange(1), help="Rows per Arrow batch read.")
@storage_options_option
@stats_json_option
@quiet_option
def report(inputs, output, by, text_column, score_column, threshold, model, samples, excerpt_chars, title, seed,
           read_batch_rows, stats_json, quiet):
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

    cfg = ReportConfig(text_column=text_column, score_column=score_column, by=by, threshold=threshold, model=model,
                       samples_per_band=samples, excerpt_chars=excerpt_chars, title=title, seed=seed,
                       read_batch_rows=read_batch_rows)
    summary = build_report(list(inputs), output, cfg, progress=not quiet, stats_json=stats_json)
    if not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("model", required=False, type=click.Path())
@storage_options_option
def info(model):
    """Show a model folder's embedder, thresholds and metrics (default: the bundled model).

    \b
    Example:
      phifilter info my-model/
    """
    from .classifier import default_model_path, read_model_meta

    path = model or default_model_path()
    meta = read_model_meta(path)
    emb = meta.get("embedder", {})
    click.echo(f"model: {path}")
    click.echo(f"head: {meta.get('head')}; positive label: score >= {meta.get('positive_threshold')}; "
               f"threshold: {meta.get('threshold')}")
    features = (meta.get("params") or {}).get("features") or "mean"
    click.echo(f"documents: {meta.get('doc_mode') or 'truncate'}"
               + (f" (features {features})" if features != "mean" else "")
               + f"; calibration: {meta.get('calibration') or 'none'}")
    click.echo(f"embedder: {emb.get('name')} ({emb.get('dim')} dims, max {emb.get('max_length')} tokens)")
    td = meta.get("training_data", {})
    click.echo(f"trained on: {td.get('file')} ({td.get('rows')} rows, {td.get('positives')} positive)")
    for line in format_parts(meta):
        click.echo(line)
    click.echo(format_metrics(meta.get("metrics") or {}))


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Report folder (also holds data and checkpoints).")
@click.option("--preset", type=click.Choice(["micro", "tiny", "small", "base"]), default="tiny", show_default=True,
              help="Model size: micro (seconds), tiny (minutes on a CPU), small, base (~100M, GPU).")
@click.option("--tokens", default=None, help="Training tokens per run, e.g. 2.8M or 50M (default: the preset's).")
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="Runs per arm.")
@click.option("--seed", "--random-state", "seed", default=0, show_default=True, type=int, help="First seed.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Filtered arm: edu_score at or above this [default: 0.5].")
@click.option("--top-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Filtered arm: the best documents holding this share of the tokens.")
@click.option("--arms", default="filtered,random,unfiltered", show_default=True, help="Comma-separated arms to run.")
@click.option("--eval-dir", type=click.Path(file_okay=False), default=None,
              help="Folder with HumanEval.jsonl.gz and mbpp.jsonl (default: the copies shipped with phifilter).")
@click.option("--val-fraction", default=0.02, show_default=True, type=float, help="Documents held out for validation.")
@click.option("--pass-samples", default=4, show_default=True, type=click.IntRange(0),
              help="Completions sampled per problem for pass@k (0: skip pass@k).")
@click.option("--pass-problems", default=None, type=click.IntRange(1), help="Problems per benchmark for pass@k (default: all).")
@click.option("--max-new-tokens", default=128, show_default=True, type=click.IntRange(1), help="Tokens per sampled completion.")
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), help="Sampling temperature for pass@k.")
@text_column_option
@click.option("--score-column", default="edu_score", show_default=True)
@device_option
@click.option("--threads", default=None, type=click.IntRange(1),
              help="torch CPU threads (default: one per core; 1 is often faster on a busy machine).")
@click.option("--no-compile", is_flag=True, help="Do not torch.compile on CUDA.")
@click.option("--note", default=None, help="A sentence to print at the top of the report.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a model or loop setting of the preset, e.g. --set lr=1e-3 --set n_layer=2.")
@quiet_option
def ablate(inputs, output, preset, tokens, seeds, seed, threshold, top_fraction, arms, eval_dir, val_fraction,
           pass_samples, pass_problems, max_new_tokens, temperature, text_column, score_column, device, threads,
           no_compile, note, overrides, quiet):
    """Train small GPTs on filtered, random and unfiltered data and report which is better.

    INPUTS are scored shards (from `phifilter score`). The filtered arm keeps documents above
    the threshold (or the top fraction); the random arm is a random subset with as many tokens;
    the unfiltered arm is everything. Each arm trains for the same number of tokens, for every
    seed. HumanEval and MBPP are removed from the data first. Writes report.md, report.html and
    results.json; a rerun skips finished runs and resumes interrupted ones.

    \b
    Example:
      phifilter ablate data/scored/ -o reports/ablation/ --seeds 3
      phifilter ablate data/scored/ -o reports/gpu/ --preset small --tokens 200M --top-fraction 0.3
    """
    import json

    from .pretrain.ablate import run_ablation
    from .pretrain.config import AblateConfig, parse_tokens
    from .pretrain.ablation_report import command_line, verdict

    parsed = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--set")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    cfg = AblateConfig(
        preset=preset, tokens=parse_tokens(tokens) if tokens else None, seeds=seeds, seed=seed,
        threshold=threshold, top_fraction=top_fraction,
        arms=tuple(a.strip() for a in arms.split(",") if a.strip()), text_column=text_column,
        score_column=score_column, eval_dir=eval_dir, val_fraction=val_fraction, pass_samples=pass_samples,
        pass_problems=pass_problems, max_new_tokens=max_new_tokens, temperature=temperature, device=device,
        threads=threads, compile=not no_compile, overrides=parsed, note=note,
    )
    results = run_ablation(list(inputs), output, cfg, progress=not quiet, command=command_line())
    if not quiet:
        click.echo(verdict(results).replace("**", ""))
        click.echo(f"report: {output}/report.md, {output}/report.html, {output}/results.json")


if __name__ == "__main__":
    main()
