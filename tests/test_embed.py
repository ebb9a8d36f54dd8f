import numpy as np
import pytest

from phifilter import Embedder, ModelError
from phifilter.errors import OptionError
from phifilter.devices import resolve_device
from phifilter.embed import DEFAULT_EMBEDDER_SHA256, bundled_model_path, file_hashes, verify_hashes

from conftest import BOILERPLATE, GOOD_CODE


def test_order_is_restored_and_matches_single_encodes(embedder):
    texts = [GOOD_CODE, "short", BOILERPLATE, "", "a much longer sentence about sorting algorithms " * 3]
    batch = embedder.encode(texts)
    singles = np.stack([embedder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert np.all(batch[3] == 0)
    norms = np.linalg.norm(batch[[0, 1, 2, 4]], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)  # all-MiniLM-L6-v2 normalises


def test_matches_sentence_transformers_encode(embedder):
    texts = [GOOD_CODE, BOILERPLATE, "hello world"]
    ours = embedder.encode(texts)
    theirs = embedder._load().encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_max_length_truncates(embedder):
    short = Embedder(device="cpu", max_length=16)
    long_text = GOOD_CODE * 5
    a = short.encode([long_text])[0]
    b = short.encode([long_text[:200] + " completely different ending " * 50])[0]
    np.testing.assert_allclose(a, b, atol=1e-5)  # only the first 16 tokens are read
    assert not np.allclose(a, embedder.encode([long_text])[0], atol=1e-3)


def test_default_embedder_hashes_are_pinned():
    assert verify_hashes(bundled_model_path(), DEFAULT_EMBEDDER_SHA256, "x")["model.safetensors"] == \
        DEFAULT_EMBEDDER_SHA256["model.safetensors"]


def test_modified_embedder_folder_is_refused(tmp_path):
    import shutil

    folder = shutil.copytree(bundled_model_path(), tmp_path / "emb")
    with open(folder / "config.json", "a") as f:
        f.write("\n")
    with pytest.raises(ModelError, match="config.json: SHA-256"):
        verify_hashes(folder, DEFAULT_EMBEDDER_SHA256, "the default embedder")
    with pytest.raises(ModelError, match="config.json: SHA-256"):
        Embedder(folder, sha256=DEFAULT_EMBEDDER_SHA256, device="cpu").encode(["x"])
    assert file_hashes(folder)["config.json"] != DEFAULT_EMBEDDER_SHA256["config.json"]


def test_device_choice():
    assert resolve_device("auto") in ("cpu", "cuda", "mps")
    assert resolve_device("CPU") == "cpu"
    with pytest.raises(OptionError, match="expected auto, cpu"):  # names --device: a usage error, exit 2
        resolve_device("tpu")


def test_unknown_hub_model_fails_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        Embedder("no-such-org/no-such-model-xyz", device="cpu").encode(["x"])


def test_one_device_rule_for_every_command():
    """score, embed, label's local models and ablate all choose their device with phifilter.devices."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "phifilter"
    defining = [str(p.relative_to(package)) for p in sorted(package.rglob("*.py"))
                if any(isinstance(n, ast.FunctionDef) and n.name.lstrip("_") == "resolve_device"
                       for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))))]
    assert defining == ["devices.py"]
    with pytest.raises(OptionError, match="expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu0")
