"""Turn finished runs into results.json, report.md and report.html (plots embedded, offline).

Statistics: every metric is summarised per arm as mean and sample standard deviation over
seeds. Filtered - random is a *paired* difference: seed s of both arms shares the initial
weights and the batch order, so the per-seed differences carry less noise than two
independent means; its 95% confidence interval is a t-interval over those differences
(undefined with one seed).
"""

from __future__ import annotations

import io
import math
import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..htmlpage import data_uri, escape, html_page, html_table, img
from . import data as D
from .config import AblateConfig, Preset
from .prune import arm_name, run_arms, split_arm

PASS_KEYS = ("humaneval_pass", "mbpp_pass")
ARM_COLOURS = {"filtered": "#1b9e77", "random": "#d95f02", "unfiltered": "#7570b3"}


def stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {
        "mean": float(v.mean()) if v.size else None,
        "std": float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else None),
        "seeds": [float(x) for x in v],
    }


def t_quantile(level: float, df: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(0.5 + level / 2, df))
    except ImportError:  # scipy comes with scikit-learn, but do not depend on it here
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
                 9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
        return table.get(df) or table[min(table, key=lambda k: abs(k - df))] if df <= 30 else 1.96


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """a - b paired by position (seed): mean, t-interval, and how often a was lower."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    out = {"mean": float(d.mean()) if d.size else None, "per_seed": [float(x) for x in d], "n": int(d.size),
           "lower_in": int((d < 0).sum()), "ci95": None, "method": "paired t-interval over seeds"}
    if d.size > 1:
        half = t_quantile(level, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
        out["ci95"] = [float(d.mean() - half), float(d.mean() + half)]
    return out


def _metric(run: dict, key: str):
    """Look up 'humaneval_loss', 'val_loss.random', 'humaneval_pass.pass@1', 'bigram.mbpp_loss'..."""
    value = run
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def summarise(runs: dict, bundle, config: AblateConfig, preset: Preset, steps: int, seeds: list[int],
              command: str | None = None) -> dict:
    from .sandbox import isolation_summary

    base_arms = list(config.arms)
    arms = run_arms(config.arms, config.prune_similar)
    manifest = bundle.manifest
    pass_keys = sorted({f"{p}.{k}" for r in runs.values() for p in PASS_KEYS for k in (r.get(p) or {})
                        if k.startswith("pass@")})
    metrics = ["humaneval_loss", "mbpp_loss", *[f"val_loss.{a}" for a in base_arms], *pass_keys,
               "bigram.humaneval_loss", "bigram.mbpp_loss", *[f"bigram.val_loss.{a}" for a in base_arms],
               "train_seconds"]
    results = {
        "command": command or "phifilter ablate (called from Python)",
        "versions": versions(),
        "preset": {"name": preset.name, "model": _plain(preset.model), "loop": _plain(preset.loop),
                   "parameters": next(iter(runs.values()))["parameters"] if runs else None},
        "config": _plain(config),
        "steps": steps,
        "tokens_per_run": steps * preset.tokens_per_step,
        "seeds": seeds,
        "sandbox": isolation_summary(),
        "data": manifest,
        "arms": {},
        "comparisons": {},
    }
    for arm in arms:
        arm_runs = [runs[(arm, s)] for s in seeds]
        entry = {}
        for m in metrics:
            values = [_metric(r, m) for r in arm_runs]
            if all(v is None for v in values):
                continue
            _set(entry, m, stats(values))
        base, tau = split_arm(arm)
        entry["own_val_loss"] = stats([_metric(r, f"val_loss.{base}") for r in arm_runs])
        info = manifest["arms"][arm]
        if base == "random":
            per_seed = [info["per_seed"][str(s)] for s in seeds]
            entry["train_docs"] = float(np.mean([p["train_docs"] for p in per_seed]))
            entry["train_tokens"] = float(np.mean([p["train_tokens"] for p in per_seed]))
            entry["similarity"] = _mean_distribution([p.get("similarity") for p in per_seed])
        else:
            entry["train_docs"], entry["train_tokens"] = info["train_docs"], info["train_tokens"]
            entry["similarity"] = info.get("similarity")
        if tau is not None:
            entry["tau"] = tau
            entry["removed_docs"] = info.get("removed_docs")
        entry["val_docs"], entry["val_tokens"] = info["val_docs"], info["val_tokens"]
        entry["epochs"] = results["tokens_per_run"] / entry["train_tokens"] if entry["train_tokens"] else None
        entry["curves"] = {str(s): runs[(arm, s)]["curve"] for s in seeds}
        results["arms"][arm] = entry
    for tau in [None, *sorted(set(config.prune_similar), reverse=True)]:
        fil = arm_name("filtered", tau)
        for other in ("random", "unfiltered"):
            if "filtered" in base_arms and other in base_arms:
                comp = {}
                for m in metrics:
                    if m == "train_seconds" or m.startswith("bigram."):
                        continue
                    a = [_metric(runs[(fil, s)], m) for s in seeds]
                    b = [_metric(runs[(arm_name(other, tau), s)], m) for s in seeds]
                    if None not in a and None not in b:
                        comp[m] = paired_difference(a, b)
                results["comparisons"][f"{fil}_minus_{arm_name(other, tau)}"] = comp
    return results


def _mean_distribution(parts: list) -> dict | None:
    """The mean over the random arm's seeds of each figure of its similarity distribution."""
    parts = [p for p in parts if p and p.get("docs")]
    if not parts:
        return None
    out = {k: float(np.mean([p[k] for p in parts])) for k in ("docs", "mean", "median", "p90", "p99", "max")}
    common = set.intersection(*(set(p["above"]) for p in parts))  # draws made with other TAUs lack some
    out["above"] = {t: float(np.mean([p["above"][t] for p in parts])) for t in parts[0]["above"] if t in common}
    return out


def _plain(obj):
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


def _set(d: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# text


def fmt(s: dict | None, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    if len(s["seeds"]) > 1:
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def verdict(results: dict) -> str:
    comp = results["comparisons"].get("filtered_minus_random", {}).get("humaneval_loss")
    if not comp:
        return "No filtered-vs-random comparison (both arms are needed)."
    fa, ra = results["arms"]["filtered"]["humaneval_loss"], results["arms"]["random"]["humaneval_loss"]
    n = comp["n"]
    text = (f"HumanEval loss (nats per token, lower is better): filtered {fmt(fa)} vs random {fmt(ra)} "
            f"over {n} seed{'s' if n != 1 else ''}. Filtered − random = {comp['mean']:+.3f}")
    if comp["ci95"]:
        lo, hi = comp["ci95"]
        text += f" (95% CI {lo:+.3f} to {hi:+.3f}, paired by seed)"
    text += f"; filtered was lower in {comp['lower_in']} of {n} seed{'s' if n != 1 else ''}. "
    if comp["ci95"] and comp["ci95"][1] < 0:
        text += "**Filtered beat random**: the whole interval is below zero."
    elif comp["ci95"] and comp["ci95"][0] > 0:
        text += "**Random beat filtered**: the whole interval is above zero."
    elif comp["ci95"]:
        text += "**No clear winner**: the interval includes zero; more seeds or tokens are needed."
    else:
        text += "One seed gives no confidence interval; run --seeds 3 or more before drawing conclusions."
    return text


def blocks(results: dict) -> list[tuple]:
    """The report as ('h', level, text) / ('p', text) / ('table', headers, rows) / ('pre', text) /
    ('img', name) blocks, rendered to Markdown and HTML by the functions below."""
    out: list[tuple] = [("h", 1, "phifilter ablation: filtered vs random vs unfiltered"), ("p", verdict(results))]
    if results["config"].get("note"):
        out.append(("p", f"Note: {results['config']['note']}"))
    return out + _setup_blocks(results) + _result_blocks(results) + _comparison_blocks(results) + _closing_blocks(results)


def _setup_blocks(results: dict) -> list[tuple]:
    """The model, the arms, the corpus and each arm's data."""
    arms = list(results["arms"])
    data, preset = results["data"], results["preset"]
    model = preset["model"]
    sel = data["selection"]
    rule = (f"top {100 * sel['top_fraction']:.0f}% of training tokens by edu_score (cut-off {data['score_cutoff']:.4f})"
            if "top_fraction" in sel else f"edu_score >= {sel['threshold']:g}")
    params = preset["parameters"]
    out = [
        ("h", 2, "Setup"),
        ("p", f"Model: preset `{preset['name']}`, {params:,} parameters ({model['n_layer']} layer{'s' if model['n_layer'] != 1 else ''}, d_model "
              f"{model['d_model']}, {model['n_head']} heads, context {model['context']}, {model['positions']} "
              f"positions, tied embeddings), byte-level BPE of {model['vocab_size']:,} ids trained on the "
              f"training documents. Every run: {results['steps']:,} steps, {results['tokens_per_run']:,} "
              f"training tokens, AdamW lr {preset['loop']['lr']:g} with warmup and cosine decay. "
              f"Seeds: {', '.join(map(str, results['seeds']))}."),
        ("p", f"Arms: **filtered** = {rule}; **random** = a random subset of the same number of training "
              "tokens, drawn afresh for each seed; **unfiltered** = every training document. All arms train "
              "for the same number of tokens. Validation documents "
              f"({100 * results['config']['val_fraction']:g}% of documents) were held out before the arms "
              "were drawn, so no model trained on any arm's validation split."),
        ("p", f"Corpus: {data['docs']['input']:,} documents; removed for overlap with HumanEval/MBPP: "
              f"{data['docs']['removed_exact']:,} exact matches and {data['docs']['removed_ngram']:,} by "
              f"13-gram overlap. Sandbox for pass@k: {results['sandbox']}."),
        ("h", 2, "Data per arm"),
        ("table", ["arm", "train docs", "train tokens", "val docs", "val tokens", "epochs at budget"],
         [[a, f"{results['arms'][a]['train_docs']:,.0f}", f"{results['arms'][a]['train_tokens']:,.0f}",
           f"{results['arms'][a]['val_docs']:,}", f"{results['arms'][a]['val_tokens']:,}",
           f"{results['arms'][a]['epochs']:.2f}" if results['arms'][a]['epochs'] else "n/a"] for a in arms]),
    ]
    if "random" in arms:
        out.append(("p", "Random arm documents and tokens are means over its per-seed draws."))
    return out


def _result_blocks(results: dict) -> list[tuple]:
    """Each arm's losses and pass@k, mean and std over seeds."""
    arms = list(results["arms"])
    n = len(results["seeds"])
    pass_cols = sorted({k for a in arms for p in PASS_KEYS for k in results["arms"][a].get(p, {})})
    headers = ["arm", "HumanEval loss", "MBPP loss", "own val loss"]
    headers += [f"{p.split('_')[0].replace('humaneval', 'HumanEval').replace('mbpp', 'MBPP')} {k}"
                for p in PASS_KEYS for k in pass_cols if any(k in results["arms"][a].get(p, {}) for a in arms)]
    rows = []
    for a in arms:
        r = results["arms"][a]
        row = [a, fmt(r.get("humaneval_loss")), fmt(r.get("mbpp_loss")), fmt(r.get("own_val_loss"))]
        for p in PASS_KEYS:
            for k in pass_cols:
                if any(k in results["arms"][x].get(p, {}) for x in arms):
                    row.append(fmt(r.get(p, {}).get(k), 4))
        rows.append(row)
    return [("h", 2, f"Results (mean ± sample std over {n} seed{'s' if n != 1 else ''})"),
            ("table", headers, rows),
            ("p", "Losses are nats per token on prompt + reference solution (HumanEval: all 164 problems; "
                  "MBPP: test split, task ids 11-510). pass@k by sampling completions and running the "
                  "problems' tests in the sandbox; at tiny scale it is expected to be near zero and the "
                  "loss is the signal.")]


def _comparison_blocks(results: dict) -> list[tuple]:
    """Paired differences, similarity to the benchmarks, each model on every split, and the bigram baseline."""
    arms = list(results["arms"])
    base_arms = [a for a in arms if split_arm(a)[1] is None]
    out = [("h", 2, "Filtered − other arms (paired by seed; negative losses favour filtered)"),
           ("table", ["comparison", "metric", "mean difference", "95% CI", "per seed", "filtered lower in"],
            [[name.replace("_", " "), m, f"{c['mean']:+.4f}",
              f"{c['ci95'][0]:+.4f} to {c['ci95'][1]:+.4f}" if c["ci95"] else "n/a (one seed)",
              ", ".join(f"{x:+.3f}" for x in c["per_seed"]), f"{c['lower_in']} of {c['n']}"]
             for name, comp in results["comparisons"].items() for m, c in comp.items()
             if m in ("humaneval_loss", "mbpp_loss") or m.startswith("val_loss")])]

    out += similarity_blocks(results)
    out += [("h", 2, "Each model on every arm's validation split"),
            ("p", "Rows: the arm a model trained on; columns: the validation split it is scored on "
                  "(nats per token, mean ± std over seeds). A filtered model may do worse on general code "
                  "than an unfiltered one: that is the price of specialising."),
            ("table", ["trained on \\ scored on", *base_arms],
             [[a, *[fmt(results["arms"][a].get("val_loss", {}).get(b)) for b in base_arms]] for a in arms])]

    out += [("h", 2, "Count-based bigram baseline"),
            ("p", "A count-based bigram model with Dirichlet smoothing towards the unigram, fitted on as "
                  "many tokens as each GPT saw (random windows of the arm's training file; smoothing tuned "
                  "on 5% of them held out). A GPT that does not beat it has learned little beyond token "
                  "pair statistics."),
            ("table", ["arm", "bigram HumanEval loss", "bigram MBPP loss", "bigram own val loss",
                       "GPT HumanEval loss", "GPT own val loss"],
             [[a, fmt(results["arms"][a].get("bigram", {}).get("humaneval_loss")),
               fmt(results["arms"][a].get("bigram", {}).get("mbpp_loss")),
               fmt(results["arms"][a].get("bigram", {}).get("val_loss", {}).get(split_arm(a)[0])),
               fmt(results["arms"][a].get("humaneval_loss")), fmt(results["arms"][a].get("own_val_loss"))]
              for a in arms])]

    return out


def _closing_blocks(results: dict) -> list[tuple]:
    """Loss curves, training time, the command that reproduces the run, package versions."""
    arms = list(results["arms"])
    return [("h", 2, "Loss curves"), ("img", "loss_curves.png"),
            ("p", "Validation loss on each arm's own split during training (thin lines: seeds; thick: mean)."),
            ("h", 2, "Training time"),
            ("table", ["arm", "seconds per run"], [[a, fmt(results["arms"][a].get("train_seconds"), 1)] for a in arms]),
            ("h", 2, "Reproduce"), ("pre", results["command"]),
            ("h", 2, "Versions"),
            ("table", ["package", "version"], [[k, str(v)] for k, v in results["versions"].items()])]


def similarity_blocks(results: dict) -> list[tuple]:
    """Each arm's similarity to the benchmarks and, with --prune-similar, phi-1's table:
    filtered − random after removing the documents above each threshold."""
    arms = results["arms"]
    taus = sorted({a["tau"] for a in arms.values() if a.get("tau") is not None}, reverse=True)
    cols = sorted({t for a in arms.values() for t in ((a.get("similarity") or {}).get("above") or {})}, key=float)
    out: list[tuple] = [
        ("h", 2, "Similarity of each arm's training documents to HumanEval/MBPP"),
        ("p", f"`max_similarity` per document by {_methods_text(results['data'].get('similarity_methods'))} "
              "(`phifilter contamination`; HumanEval and all 974 MBPP problems). Random arms: means over "
              "their per-seed draws. Documents already removed for 13-gram overlap are not in any arm."),
        ("table", ["arm", "docs", "mean", "median", "p90", "p99", "max", *[f"> {t}" for t in cols]],
         [[a, f"{d['docs']:,.0f}", f"{d['mean']:.3f}", f"{d['median']:.3f}", f"{d['p90']:.3f}", f"{d['p99']:.3f}",
           f"{d['max']:.3f}", *[f"{d['above'][t]:,.0f}" if t in d["above"] else "" for t in cols]]
          for a, e in arms.items() if (d := e.get("similarity")) and d.get("docs")])]
    if not taus or "random" not in arms:
        return out
    rows = []
    for tau in [None, *taus]:
        fil, rnd = arm_name("filtered", tau), arm_name("random", tau)
        comp = results["comparisons"].get(f"{fil}_minus_{rnd}", {})
        row = ["none" if tau is None else f"{tau:g}", f"{arms[fil]['train_docs']:,.0f}",
               "0" if tau is None else f"{arms[fil].get('removed_docs') or 0:,}",
               fmt(arms[fil].get("humaneval_loss")), fmt(arms[rnd].get("humaneval_loss"))]
        for m in ("humaneval_loss", "mbpp_loss"):
            c = comp.get(m)
            row.append("n/a" if not c else f"{c['mean']:+.3f}" + (
                f" ({c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f})" if c["ci95"] else "") + f", lower in {c['lower_in']}/{c['n']}")
        rows.append(row)
    out += [("h", 2, "Pruned: filtered − random without the documents most like the benchmarks"),
            ("p", "As phi-1's §5: for each threshold, every arm loses its training documents with "
                  "`max_similarity` above it (the random arm draws from the pruned pool, sized by the pruned "
                  "filtered arm), and the models are trained again. If filtered still beats random once the "
                  "documents most like HumanEval are gone, its gain is not copied answers. Differences are "
                  "paired by seed with 95% t-intervals; negative favours filtered."),
            ("table", ["prune above", "filtered docs", "removed from filtered", "filtered HumanEval loss",
                       "random HumanEval loss", "filtered − random HumanEval", "filtered − random MBPP"], rows)]
    return out


def _methods_text(methods) -> str:
    parts = {"embedding": "the embedding cosine of the best chunk",
             "syntax": "the syntax-tree similarity (names, literals, comments and docstrings ignored)"}
    named = [parts[m] for m in sorted(methods or []) if m in parts]
    if not named:
        return "an unrecorded method"
    return named[0] if len(named) == 1 else f"the larger of {named[0]} and {named[1]}"


def render_markdown(bl: list[tuple]) -> str:
    lines = []
    for b in bl:
        if b[0] == "h":
            lines += ["#" * b[1] + " " + b[2], ""]
        elif b[0] == "p":
            lines += [b[1], ""]
        elif b[0] == "pre":
            lines += ["```", b[1], "```", ""]
        elif b[0] == "img":
            lines += [f"![loss curves]({b[1]})", ""]
        elif b[0] == "table":
            headers, rows = b[1], b[2]
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "|".join("---" for _ in headers) + "|")
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _inline(text: str) -> str:
    """HTML-escape, then the two Markdown inline forms the report uses: **bold** and `code`."""
    import re

    text = escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(bl: list[tuple], images: dict[str, bytes]) -> str:
    """The blocks as a page made of :mod:`phifilter.htmlpage`'s pieces (the `report` command's look)."""
    body = []
    for b in bl:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "pre":
            body.append(f"<pre>{escape(b[1])}</pre>")
        elif b[0] == "img" and b[1] in images:
            body.append(img(data_uri(images[b[1]]), "loss curves"))
        elif b[0] == "table":
            body.append(html_table(b[1], b[2], cell=lambda c: _inline(str(c))))
    return html_page("phifilter ablation", "\n".join(body))


def loss_curves_png(results: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display; the figure only goes to bytes
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for arm, entry in results["arms"].items():
        colour = ARM_COLOURS.get(arm)
        for ax, key in zip(axes, ("val_loss", "train_loss")):
            series = [c for c in entry["curves"].values() if c]
            for curve in series:
                ax.plot([p["tokens"] for p in curve], [p[key] for p in curve], color=colour, alpha=0.3, lw=0.8)
            if series:
                n = min(len(c) for c in series)
                mean = np.mean([[p[key] for p in c[:n]] for c in series], axis=0)
                ax.plot([p["tokens"] for p in series[0][:n]], mean, color=colour, lw=2, label=arm)
    axes[0].set_title("validation loss (own split)")
    axes[1].set_title("training loss")
    for ax in axes:
        ax.set_xlabel("training tokens")
        ax.set_ylabel("nats per token")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(results: dict, out: Path) -> None:
    try:
        png = loss_curves_png(results)
    except ImportError:  # matplotlib is an optional extra; the numbers matter more than the plot
        png = None
    bl = blocks(results)
    if png is None:
        bl = [("p", "(No loss curves: matplotlib is not installed; `pip install phifilter[ablate]`.)")
              if b[0] == "img" else b for b in bl]
    D.write_json(out / "results.json", results, strict=True)
    files = {"report.md": render_markdown(bl).encode("utf-8"),
             "report.html": render_html(bl, {"loss_curves.png": png} if png else {}).encode("utf-8")}
    if png:
        files["loss_curves.png"] = png
    from ..atomic import write_bytes

    for name, content in files.items():
        write_bytes(out / name, content)


def command_line() -> str:
    """The command as typed, for the report (quoted so it can be pasted back)."""
    return " ".join(shlex.quote(a) for a in ["phifilter", *sys.argv[1:]])


def versions() -> dict:
    """The library versions a run used (the report's provenance table)."""
    import importlib.metadata as md
    import platform

    from .. import __version__

    out = {"phifilter": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "numpy", "tokenizers", "safetensors", "pyarrow", "matplotlib"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out
