"""The summary of a contamination audit: the distribution of ``max_similarity`` (and of each
method's own figure), how many documents pass each threshold, and the top matches, each
document excerpt beside the problem it matched (Markdown and a self-contained HTML page)."""

from __future__ import annotations

from pathlib import Path

# Documented thresholds (docs/howto/contamination.md): measured on installed library code and
# on renamed HumanEval solutions (tests/test_contamination.py checks both sides).
SYNTAX_NEAR_COPY = 0.8
EMBEDDING_NEAR_COPY = 0.9
SUMMARY_FILES = ("contamination.md", "contamination.html")

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
HIST_BINS = 20
EXCERPT_LINES = 60
EXCERPT_CHARS = 4000


def distribution(values) -> dict:
    """Quantiles, a 20-bin histogram over [0, 1] and counts above each threshold."""
    import numpy as np

    from .histogram import histogram

    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.5, 0.9, 0.99, 1.0])
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "max": float(q[3]), "histogram": histogram(v, HIST_BINS).tolist(),
            "above": {str(t): int((v > t).sum()) for t in THRESHOLDS}}


def summarise(table, shards, problems, text_column: str, top: int) -> dict:
    import numpy as np

    cols = {name: table.column(name).to_pylist() for name in table.column_names}
    sims = np.asarray(cols["max_similarity"], dtype=np.float64)
    methods: dict[str, int] = {}
    for m in cols["method"]:
        methods[str(m)] = methods.get(str(m), 0) + 1
    order = np.argsort(-sims, kind="stable")[: max(0, top)]
    code = {p.task_id: p.code for p in problems}
    texts = _texts_at(shards, [(cols["shard"][i], cols["row"][i]) for i in order], text_column)
    matches = []
    for i in order:
        i = int(i)
        text = texts.get((cols["shard"][i], cols["row"][i]), "")
        matches.append({
            "shard": cols["shard"][i], "row": cols["row"][i],
            "id": cols[table.column_names[0]][i] if table.column_names[0] != "shard" else None,
            "max_similarity": float(sims[i]), "nearest_problem": cols["nearest_problem"][i],
            "method": cols["method"][i], "embedding_similarity": cols["embedding_similarity"][i],
            "syntax_similarity": cols["syntax_similarity"][i],
            "lines": [cols["match_first_line"][i], cols["match_last_line"][i]],
            "excerpt": excerpt(text, cols["match_first_line"][i], cols["match_last_line"][i]),
            "problem_code": code.get(cols["nearest_problem"][i], ""),
        })
    return {"documents": len(sims), "problems": len(problems), "methods": methods,
            "max_similarity": distribution(sims),
            "embedding_similarity": distribution(cols["embedding_similarity"]),
            "syntax_similarity": distribution(cols["syntax_similarity"]),
            "thresholds": {"syntax_near_copy": SYNTAX_NEAR_COPY, "embedding_near_copy": EMBEDDING_NEAR_COPY},
            "top": matches}


def excerpt(text: str, first: int | None, last: int | None) -> str:
    lines = text.splitlines()
    a = max(0, (first or 1) - 1)
    b = min(len(lines), (last or a + EXCERPT_LINES), a + EXCERPT_LINES)
    return "\n".join(lines[a:b])[:EXCERPT_CHARS]


def _texts_at(shards, keys, text_column: str) -> dict:
    """The texts of the (shard name, row) pairs, read back from the inputs."""
    from .corpus import iter_batches, texts_from_array

    wanted: dict[str, set] = {}
    for shard, row in keys:
        wanted.setdefault(shard, set()).add(row)
    out = {}
    for s in shards:
        rows = wanted.get(str(s.name))
        if not rows:
            continue
        start = 0
        for batch in iter_batches(s.path, columns=[text_column]):
            n = batch.num_rows
            hit = [r for r in rows if start <= r < start + n]
            if hit:
                texts = texts_from_array(batch.column(text_column))
                out.update({(str(s.name), r): texts[r - start] for r in hit})
            start += n
            if start > max(rows):
                break
    return out


# ---------------------------------------------------------------------------------------------
# rendering


def _dist_rows(summary: dict) -> list[list[str]]:
    rows = []
    for key in ("max_similarity", "embedding_similarity", "syntax_similarity"):
        d = summary[key]
        if not d.get("n"):
            continue
        rows.append([key, f"{d['mean']:.3f}", f"{d['median']:.3f}", f"{d['p90']:.3f}", f"{d['p99']:.3f}",
                     f"{d['max']:.3f}", *[f"{d['above'][str(t)]:,}" for t in THRESHOLDS]])
    return rows


DIST_HEADER = ["figure", "mean", "median", "p90", "p99", "max", *[f"> {t:g}" for t in THRESHOLDS]]


def _intro(summary: dict) -> str:
    t = summary["thresholds"]
    return (f"{summary['documents']:,} documents compared with {summary['problems']:,} evaluation problems. "
            f"`max_similarity` is the larger of the embedding cosine (best chunk) and the syntax similarity "
            f"(names, literals, comments and docstrings ignored). A syntax similarity above "
            f"{t['syntax_near_copy']:g} or an embedding cosine above {t['embedding_near_copy']:g} marks a "
            "near copy (docs/howto/contamination.md says how these were measured). Matched by: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["methods"].items())) + ".")


def render_markdown(summary: dict) -> str:
    lines = ["# Contamination audit", "", _intro(summary), "", "## Distribution", "",
             "| " + " | ".join(DIST_HEADER) + " |", "|" + "---|" * len(DIST_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _dist_rows(summary)]
    hist = summary["max_similarity"].get("histogram") or []
    if hist:
        lines += ["", "Histogram of `max_similarity` (bins of 0.05):", "", "```"]
        peak = max(hist) or 1
        lines += [f"{i / HIST_BINS:4.2f}-{(i + 1) / HIST_BINS:4.2f} {c:>8,} {'#' * round(40 * c / peak)}"
                  for i, c in enumerate(hist)]
        lines.append("```")
    lines += ["", f"## Top {len(summary['top'])} matches", ""]
    for m in summary["top"]:
        ident = f"id {m['id']}" if m["id"] is not None else f"{m['shard']} row {m['row']}"
        lines += [f"### {ident}: {m['max_similarity']:.3f} {m['method']} → {m['nearest_problem']}", "",
                  f"embedding {m['embedding_similarity']:.3f}, syntax {m['syntax_similarity']:.3f}; "
                  f"document lines {m['lines'][0]}-{m['lines'][1]}", "",
                  "<table><tr><th>document</th><th>problem</th></tr><tr><td>", "", "```python", m["excerpt"], "```",
                  "", "</td><td>", "", "```python", m["problem_code"].strip("\n"), "```", "", "</td></tr></table>", ""]
    return "\n".join(lines)


def _histogram_html(summary: dict) -> str:
    from .htmlpage import figure_img, new_figure

    hist = summary["max_similarity"].get("histogram")
    if not hist:
        return ""
    try:
        fig = new_figure(7.5, 3.0)
    except ImportError:
        return ""
    ax = fig.add_subplot()
    ax.bar([(i + 0.5) / HIST_BINS for i in range(HIST_BINS)], hist, width=1 / HIST_BINS, color="#1b9e77",
           edgecolor="white")
    ax.set_yscale("symlog")
    ax.set_xlabel("max_similarity")
    ax.set_ylabel("documents")
    return figure_img(fig, "histogram of max_similarity")


def render_html(summary: dict) -> str:
    from .htmlpage import escape, html_page, html_table

    body = ["<h1>Contamination audit</h1>", f"<p class=\"lead\">{escape(_intro(summary)).replace('`', '')}</p>",
            "<h2>Distribution</h2>", html_table(DIST_HEADER, _dist_rows(summary)), _histogram_html(summary),
            f"<h2>Top {len(summary['top'])} matches</h2>"]
    for m in summary["top"]:
        ident = f"id {m['id']}" if m["id"] is not None else f"{m['shard']} row {m['row']}"
        body.append(f"<h3>{escape(ident)}: <span class=\"score\">{m['max_similarity']:.3f}</span> "
                    f"{escape(m['method'])} → {escape(m['nearest_problem'])}</h3>"
                    f"<p class=\"note\">embedding {m['embedding_similarity']:.3f}, syntax "
                    f"{m['syntax_similarity']:.3f}; document lines {m['lines'][0]}-{m['lines'][1]}</p>"
                    "<table style=\"width:100%;table-layout:fixed\"><tr><th>document</th><th>problem</th></tr>"
                    f"<tr><td style=\"text-align:left;vertical-align:top\"><pre>{escape(m['excerpt'])}</pre></td>"
                    f"<td style=\"text-align:left;vertical-align:top\"><pre>{escape(m['problem_code'])}</pre></td>"
                    "</tr></table>")
    return html_page("phifilter contamination audit", "\n".join(body))


def write_summary(summary: dict, out: Path) -> None:
    from .atomic import write_text

    write_text(out / "contamination.md", render_markdown(summary))
    write_text(out / "contamination.html", render_html(summary))
