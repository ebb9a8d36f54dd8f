"""The notebooks run top to bottom (offline, CPU) and are stored without outputs."""

from __future__ import annotations

import os
import shutil

import pytest
from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_stripped():
    import nbformat

    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb", "02_train_your_own.ipynb", "03_filtered_vs_unfiltered.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, \
                    f"{path.name}: outputs are stored; clear them before committing (Kernel > Restart & Clear Output)"
            # Only the public API: the package and its documented subpackage phifilter.label.
            for line in cell.source.splitlines():
                if "import" in line and "phifilter" in line:
                    assert line.strip() in ("import phifilter", "from phifilter.label import OpenAIChatBackend, StandinServer"), \
                        f"{path.name}: {line.strip()}"


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch):
    """Executed in order in one work folder, as a user would (03 reuses 01's scores by resuming)."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e '.[dev]')")
    import nbformat

    # A copy of the layout a user has: notebooks/ beside examples/; outputs go to notebooks/work/.
    (tmp_path / "notebooks").mkdir()
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # the stand-in endpoint, never the network
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path / "notebooks")}})
        client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{path.name}: {errors}"
    work = tmp_path / "notebooks" / "work"
    assert (work / "report.html").is_file() and (work / "my-model" / "phifilter.json").is_file()
    assert (work / "ablation" / "results.json").is_file()
