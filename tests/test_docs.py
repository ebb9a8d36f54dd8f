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
