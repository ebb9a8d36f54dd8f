"""`phifilter report`: streaming statistics, escaping, self-containment, and a real browser render."""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from phifilter.errors import InputError, OutputError
from phifilter.htmlpage import figure_to_data_uri, html_page, new_figure
from phifilter.report import FINE_BINS, OTHER, RESERVOIR_BINS, ReportConfig, build_report, collect

from conftest import run_cli, write_shard

XSS = '<script>alert("pwned")</script></pre><img src=x onerror=alert(1)> & \'q\''


def scored_shard(path: Path, n: int, seed: int, sources=("a", "b", "c"), **extra) -> tuple[Path, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 3, n).astype(np.float32)
    texts = [f"doc {seed}-{i} " + "x" * int(rng.integers(0, 400)) for i in range(n)]
    src = [sources[i % len(sources)] for i in range(n)]
    write_shard(path, texts, row_group_size=97, edu_score=pa.array(scores, pa.float32()), source=pa.array(src), **extra)
    return path, texts, scores


@pytest.fixture
def corpus(tmp_path):
    """Two scored shards (1,000 and 700 rows) in a folder, plus their texts and scores."""
    p1, t1, s1 = scored_shard(tmp_path / "scored" / "part-0.parquet", 1000, 1)
    p2, t2, s2 = scored_shard(tmp_path / "scored" / "sub" / "part-1.parquet", 700, 2, sources=("a", "d"))
    return tmp_path / "scored", t1 + t2, np.concatenate([s1, s2])


def parse_tags(page: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every start tag a browser would see, with its attributes."""
    from html.parser import HTMLParser

    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, [(a, v or "") for a, v in attrs]))

    Parser().feed(page)
    return found


def test_counts_tokens_and_groups_are_exact(corpus):
    folder, texts, scores = corpus
    data = collect(folder, ReportConfig(by="source", threshold=0.4, read_batch_rows=128))
    assert data.rows == len(texts) == 1700 and data.shards == 2
    tokens = np.array([math.ceil(len(t.encode()) / 4) for t in texts])
    assert data.overall.total_tokens == tokens.sum()
    kept = scores >= np.float32(0.4)
    assert data.overall.kept_docs == kept.sum()
    assert data.overall.kept_tokens == tokens[kept].sum()
    assert set(data.groups) == {"a", "b", "c", "d"}
    assert sum(g.n for g in data.groups.values()) == 1700
    assert data.groups["d"].n == 350  # every other row of the second shard
    # The kept-share curve at a bin edge equals the brute-force share (edges are exact multiples).
    thresholds, docs, toks = data.kept_curve()
    i = 600
    bins = np.minimum((scores.astype(np.float64) * FINE_BINS).astype(int), FINE_BINS - 1)
    assert docs[i] == pytest.approx((bins >= i).mean())
    assert toks[i] == pytest.approx(tokens[bins >= i].sum() / tokens.sum())
    # Token budget: the cut-off keeps at least the share asked for, one bin higher would not.
    cut, doc_share = data.budget(0.3)
    j = int(round(cut * FINE_BINS))
    assert tokens[bins >= j].sum() >= 0.3 * tokens.sum() > tokens[bins >= j + 1].sum()
    assert doc_share == pytest.approx((bins >= j).mean())


def test_samples_are_top_bottom_and_bounded(corpus):
    folder, texts, scores = corpus
    k = 4
    data = collect(folder, ReportConfig(samples_per_band=k, read_batch_rows=64, excerpt_chars=50, seed=3))
    s = data.samples
    order = np.argsort(-scores, kind="stable")
    assert [x.score for x in s.highest()] == pytest.approx(sorted(scores[order[:k]].tolist(), reverse=True))
    assert [x.score for x in s.lowest()] == pytest.approx(sorted(scores[order[-k:]].tolist()))  # lowest first
    top = s.highest()[0]
    assert top.text == texts[int(order[0])][:50] and top.chars == len(texts[int(order[0])])
    # Bounded memory: at most k documents per reservoir, whatever the corpus size.
    assert all(len(r) <= k for r in s.reservoirs)
    assert sum(len(r) for r in s.reservoirs) <= k * RESERVOIR_BINS
    near = s.around(0.5)
    assert len(near) == k and all(abs(x.score - 0.5) < 0.1 for x in near)
    others = s.around(0.5, exclude=[x.where for x in near])
    assert len(others) == k and not {x.where for x in others} & {x.where for x in near}
    # Same seed, same samples; another seed, other reservoir draws.
    again = collect(folder, ReportConfig(samples_per_band=k, read_batch_rows=64, excerpt_chars=50, seed=3))
    assert [x.where for x in again.samples.around(0.5)] == [x.where for x in near]


def test_many_by_values_are_pooled(tmp_path):
    path, _, _ = scored_shard(tmp_path / "s.parquet", 300, 5, sources=[f"v{i}" for i in range(30)])
    data = collect(path, ReportConfig(by="source", max_by_values=5, threshold=0.5))
    assert len(data.groups) == 6 and OTHER in data.groups
    assert sum(g.n for g in data.groups.values()) == 300


def test_html_is_escaped_and_self_contained(tmp_path):
    texts = [XSS, "def f():\n    return 1\n", "plain words " * 50, ""]
    path = write_shard(tmp_path / "s.parquet", texts, edu_score=pa.array([0.99, 0.5, 0.1, None], pa.float32()),
                       source=pa.array(["<b>src</b>", "x", "x", None]))
    out = tmp_path / "report.html"
    summary = build_report(path, out, ReportConfig(by="source", threshold=0.5))
    page = out.read_text()
    assert summary.rows == 4 and summary.kept_docs == 2
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;src&lt;/b&gt;" in page and "(missing)" in page
    tags = parse_tags(page)
    names = {t for t, _ in tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base", "form"}, names
    # Nothing is fetched: the only src attributes are data: URIs; no href, no CSS url() or @import.
    attrs = [(t, a, v) for t, kv in tags for a, v in kv]
    assert not [x for x in attrs if x[1].startswith("on")], "event handler attribute in the page"
    srcs = [v for _, a, v in attrs if a == "src"]
    assert len(srcs) == 4 and all(v.startswith("data:image/png;base64,") for v in srcs)  # 4 figures
    assert not [x for x in attrs if x[1] == "href"]
    assert "url(" not in page and "@import" not in page
    assert "1 rows had no score" in page


def test_threshold_defaults_to_the_model(tmp_path):
    from phifilter.classifier import default_model_path, read_model_meta

    path, _, scores = scored_shard(tmp_path / "s.parquet", 50, 9)
    data = collect(path)
    assert data.threshold == read_model_meta(default_model_path())["threshold"]
    assert "bundled model" in data.threshold_source
    assert collect(path, ReportConfig(threshold=0.7)).overall.kept_docs == int((scores >= np.float32(0.7)).sum())


def test_threshold_from_a_model_folder(tmp_path):
    import json

    from phifilter.classifier import default_model_path
    from phifilter.errors import ModelError

    model = tmp_path / "my-model"
    shutil.copytree(default_model_path(), model)
    meta = json.loads((model / "phifilter.json").read_text())
    meta["threshold"] = 0.77
    (model / "phifilter.json").write_text(json.dumps(meta))
    path, _, _ = scored_shard(tmp_path / "s.parquet", 20, 4)
    data = collect(path, ReportConfig(model=model))
    assert data.threshold == 0.77 and str(model) in data.threshold_source
    assert collect(path, ReportConfig(model=model, threshold=0.2)).threshold == 0.2  # --threshold wins
    with pytest.raises(ModelError, match="no such model folder"):
        collect(path, ReportConfig(model=tmp_path / "nope"))


def test_bad_inputs_give_one_line_errors(tmp_path):
    plain = write_shard(tmp_path / "plain.parquet", ["a", "b"])
    with pytest.raises(InputError, match=r"plain.parquet: no column 'edu_score'.*phifilter score"):
        collect(plain, ReportConfig(threshold=0.5))
    path, _, _ = scored_shard(tmp_path / "s.parquet", 10, 1)
    with pytest.raises(InputError, match="no column 'lang' for --by"):
        collect(path, ReportConfig(by="lang", threshold=0.5))
    with pytest.raises(OutputError, match="is a folder"):
        build_report(path, tmp_path, ReportConfig(threshold=0.5))
    with pytest.raises(OutputError, match="input shards"):
        build_report(path, path, ReportConfig(threshold=0.5))
    assert path.is_file()  # the input was not touched


def test_figure_helpers():
    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    uri = figure_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    assert figure_to_data_uri(fig, "svg").startswith("data:image/svg+xml;base64,")
    page = html_page("a <title>", "<p>x</p>")
    assert "<title>a &lt;title&gt;</title>" in page and "Content-Security-Policy" in page


def test_the_ablation_report_is_built_from_the_same_pieces():
    from phifilter.pretrain.ablation_report import render_html

    blocks = [("h", 1, "Ablation `micro`"), ("p", f"**Verdict** {XSS}"), ("pre", XSS),
              ("img", "loss_curves.png"), ("table", ["arm", "**loss**"], [["filtered", 1.5], [XSS, "`2.0`"]])]
    page = render_html(blocks, {"loss_curves.png": b"\x89PNG not really"})
    shell = html_page("phifilter ablation", "")
    assert page.startswith(shell.split("<main>")[0])  # the same head: CSS and the no-fetch policy
    assert "<h1>Ablation <code>micro</code></h1>" in page and "<th><strong>loss</strong></th>" in page
    assert "<td><code>2.0</code></td>" in page and '<img class="fig" alt="loss curves" src="data:image/png;base64,' in page
    assert "<script>" not in page and page.count("&lt;script&gt;") == 3


def test_cli_report(corpus, tmp_path):
    folder, _, _ = corpus
    out = tmp_path / "out" / "r.html"
    proc = run_cli("report", folder, "-o", out, "--by", "source", "--threshold", "0.4", "--samples", "2")
    assert "report written to" in proc.stdout and "1,700 documents in 2 shard(s)" in proc.stdout
    assert out.is_file() and "By source" in out.read_text()
    quiet = run_cli("--quiet", "report", folder, "-o", tmp_path / "q.html", "--threshold", "0.4")
    assert quiet.stdout == "" and (tmp_path / "q.html").is_file()
    verbose = run_cli("-v", "report", folder, "-o", tmp_path / "v.html", "--threshold", "0.4", "-q")
    assert "INFO phifilter.report: report on 2 shard(s), threshold 0.4" in verbose.stderr
    bad = run_cli("report", folder, "-o", tmp_path / "x.html", "--by", "nope", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and "no column 'nope'" in bad.stderr


# ---------------------------------------------------------------------------------------------
# a real browser

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0"]


def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def render(browser: str, page: Path, shot: Path, profile: Path) -> list[str]:
    """Screenshot ``page``; return the console lines Chromium logged."""
    proc = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,2400",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    log = proc.stdout + proc.stderr
    return [ln for ln in log.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.mark.slow
def test_report_renders_in_chromium(tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the browser render is not checked")
    texts = [XSS] + [f"def f{i}(x):\n    '''Doc {i}.'''\n    return x * {i}\n" for i in range(60)]
    rng = np.random.default_rng(0)
    path = write_shard(tmp_path / "s.parquet", texts, edu_score=pa.array(rng.random(61), pa.float32()),
                       source=pa.array(["a", "b", "c"] * 20 + ["a"]))
    page = tmp_path / "report.html"
    build_report(path, page, ReportConfig(by="source", threshold=0.5))

    # Positive control: the console scan does see a page's errors.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('control-error')</script></body></html>")
    control = render(browser, bad, tmp_path / "bad.png", tmp_path / "profile-control")
    assert any("control-error" in ln for ln in control), "the console scan does not work with this Chromium"

    shot = tmp_path / "report.png"
    console = render(browser, page, shot, tmp_path / "profile")
    assert shot.is_file(), "Chromium wrote no screenshot"
    assert console == [], f"console messages while rendering the report: {console}"
    width, height = png_size(shot)
    assert (width, height) == (1200, 2400)
    # Non-trivial: the screenshot is not one flat colour (figures and text were painted).
    assert shot.stat().st_size > 20_000
