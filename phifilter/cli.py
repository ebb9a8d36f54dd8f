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


quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bars or summary.")
text_column_option = click.option(
    "--text-column", default="text", show_default=True, help="Column holding the document text."
)
device_option = click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."
)


@click.group(cls=PhifilterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="phifilter")
def main():
    """Find the textbook-quality part of code and web corpora.

    \b
    The pipeline:  sample -> label -> train -> score -> filter -> ablate / report
    Start with:    phifilter score SHARDS/ -o SCORED/   (uses the bundled model)
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("-m", "--model", type=click.Path(), default=None, help="Model folder (default: the bundled model).")
@text_column_option
@click.option("--score-column", default="edu_score", show_default=True, help="Name of the added score column.")
@device_option
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1), help="Documents per embedder forward pass.")
@click.option("--read-batch-rows", default=2048, show_default=True, type=click.IntRange(1), help="Rows per Arrow batch read (and output row group).")
@click.option("--max-length", default=None, type=click.IntRange(8), help="Tokens read per document (default: the model's).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="On a bad shard: stop, or report it and score the rest.")
@quiet_option
def score(inputs, output, model, text_column, score_column, device, batch_size, read_batch_rows, max_length, on_error, quiet):
    """Score Parquet shards: each output shard is its input plus an edu_score column.

    INPUTS are Parquet files, folders (searched recursively for *.parquet) or globs. Output
    shards keep their relative names. A rerun skips finished shards and redoes partial ones.

    \b
    Example:
      phifilter score data/shards/ -o data/scored/
      phifilter score 'data/**/part-*.parquet' -o scored/ --device cuda --batch-size 512
    """
    from .score import ScoreConfig, score_shards

    cfg = ScoreConfig(
        text_column=text_column, score_column=score_column, device=device, embed_batch_size=batch_size,
        read_batch_rows=read_batch_rows, max_length=max_length, on_error=on_error,
    )
    summary = score_shards(list(inputs), output, model=model, config=cfg, progress=not quiet)
    if not quiet:
        click.echo(str(summary))
    elif summary.failures:
        for path, error in summary.failures:
            click.echo(f"failed: {path}: {error}", err=True)


@main.command()
@click.argument("labels", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@text_column_option
@click.option("--score-column", default=None, help="0-5 label column (default: score, else llm_score).")
@click.option("--positive-threshold", default=3, show_default=True, type=int, help="Scores at or above count as positive.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="Decision threshold on edu_score.")
@click.option("--n-estimators", default=500, show_default=True, type=click.IntRange(1), help="Trees in the forest.")
@click.option("--cv-folds", default=5, show_default=True, type=click.IntRange(0), help="Cross-validation folds (0: none).")
@click.option("--embedder", default=None, help="sentence-transformers name or folder (default: all-MiniLM-L6-v2).")
@click.option("--max-length", default=256, show_default=True, type=click.IntRange(8), help="Tokens read per document.")
@device_option
@click.option("--random-state", default=0, show_default=True, type=int, help="Seed for folds and forest.")
@quiet_option
def train(labels, output, text_column, score_column, positive_threshold, threshold, n_estimators, cv_folds,
          embedder, max_length, device, random_state, quiet):
    """Train a model folder from labelled Parquet (text + 0-5 score).

    Reports stratified cross-validated precision, recall, F1 and ROC AUC and stores them in
    the model folder and its model card (README.md).

    \b
    Example:
      phifilter train labels.parquet -o my-model/
    """
    from .train import TrainConfig, train_model

    cfg = TrainConfig(
        text_column=text_column, score_column=score_column, positive_threshold=positive_threshold,
        threshold=threshold, n_estimators=n_estimators, cv_folds=cv_folds, embedder=embedder,
        max_length=max_length, device=device, random_state=random_state,
    )
    _, metrics = train_model(labels, output, cfg, progress=not quiet)
    if not quiet:
        click.echo(f"model written to {output}")
        click.echo(format_metrics(metrics))


def format_metrics(metrics: dict) -> str:
    if not metrics:
        return "no cross-validation (too few labels)"
    lines = [f"{metrics['cv_folds']}-fold cross-validated, threshold {metrics['threshold']}:",
             f"  {'subset':<8} {'docs':>6} {'pos':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'AUC':>6}"]
    groups = [("all", metrics["overall"])] + sorted((metrics.get("per_domain") or {}).items())
    for name, m in groups:
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        lines.append(f"  {name:<8} {m['n']:>6} {m['positives']:>5} {m['precision']:>6.3f} "
                     f"{m['recall']:>6.3f} {m['f1']:>6.3f} {auc:>6}")
    return "\n".join(lines)


@main.command(name="filter")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Keep rows with a score at or above this.")
@click.option("--top-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Keep this fraction of documents, best first.")
@click.option("--score-column", default="edu_score", show_default=True)
@text_column_option
@quiet_option
def filter_(inputs, output, threshold, top_fraction, score_column, text_column, quiet):
    """Keep the best rows of scored shards (by threshold or top fraction).

    \b
    Example:
      phifilter filter data/scored/ -o data/kept/ --threshold 0.5
      phifilter filter data/scored/ -o data/top10/ --top-fraction 0.1
    """
    from .select import filter_shards

    summary = filter_shards(list(inputs), output, threshold=threshold, top_fraction=top_fraction,
                            score_column=score_column, text_column=text_column, progress=not quiet)
    if not quiet:
        click.echo(str(summary))


@main.command()
@click.argument("model", required=False, type=click.Path())
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
    click.echo(f"embedder: {emb.get('name')} ({emb.get('dim')} dims, max {emb.get('max_length')} tokens)")
    td = meta.get("training_data", {})
    click.echo(f"trained on: {td.get('file')} ({td.get('rows')} rows, {td.get('positives')} positive)")
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
    from .pretrain.report import command_line, verdict

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
