"""`phifilter ablate` end to end on CPU (micro preset, a corpus built here), plus resume."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ablate_corpus import REPO, eval_dir, make_corpus  # noqa: F401  (eval_dir is a fixture)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "phifilter", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)


@pytest.mark.slow
def test_ablate_end_to_end_then_rerun_skips_finished_runs(tmp_path, eval_dir):
    corpus, out = tmp_path / "scored", tmp_path / "report"
    made = make_corpus(corpus, eval_dir)
    args = ["ablate", corpus, "-o", out, "--preset", "micro", "--seeds", "2", "--eval-dir", eval_dir,
            "--val-fraction", "0.1", "--pass-samples", "2", "--pass-problems", "2", "--max-new-tokens", "16", "--threads", "1", "--note", "built by the test suite"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "Filtered − random" in first.stdout

    results = json.loads((out / "results.json").read_text())
    data = results["data"]
    assert data["docs"]["input"] == made["docs"]
    assert data["docs"]["removed_exact"] == 1 and data["docs"]["removed_ngram"] == 1
    for arm in ("filtered", "random", "unfiltered"):
        he = results["arms"][arm]["humaneval_loss"]
        assert len(he["seeds"]) == 2 and all(np.isfinite(he["seeds"]))
        assert he["mean"] == pytest.approx(np.mean(he["seeds"]))
        assert he["std"] == pytest.approx(np.std(he["seeds"], ddof=1))
        assert set(results["arms"][arm]["val_loss"]) == {"filtered", "random", "unfiltered"}
        assert np.isfinite(results["arms"][arm]["bigram"]["humaneval_loss"]["mean"])
        assert "pass@1" in results["arms"][arm]["humaneval_pass"]
    # Equal token budgets: random holds the filtered arm's tokens to within one document; every
    # run trained for the same number of tokens.
    arms = data["arms"]
    for draw in arms["random"]["per_seed"].values():
        assert abs(draw["train_tokens"] - arms["filtered"]["train_tokens"]) < 200
    assert arms["unfiltered"]["train_tokens"] > 1.5 * arms["filtered"]["train_tokens"]
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/result.json")]
    assert len(runs) == 6 and len({r["tokens"] for r in runs}) == 1
    # The filtered arm is the templated, documented half of the corpus: its own validation loss
    # must be lower for the model trained on it than for the one trained on random data.
    diff = results["comparisons"]["filtered_minus_random"]["val_loss.filtered"]
    assert diff["mean"] < 0 and len(diff["per_seed"]) == 2 and diff["ci95"][0] < diff["ci95"][1]

    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # Self-contained: nothing fetched from anywhere (the embedded PNG aside).
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    md = (out / "report.md").read_text()
    assert "| filtered |" in md and "Reproduce" in md and "--preset micro" in md
    assert "Note: built by the test suite" in md
    assert (out / "data" / "tokenizer.json").is_file()

    # A rerun retrains nothing and reports the same numbers.
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("finished earlier, skipped") == 6
    again = json.loads((out / "results.json").read_text())
    assert again["arms"]["filtered"]["humaneval_loss"] == results["arms"]["filtered"]["humaneval_loss"]

    # One more seed trains only the three new runs.
    more = list(args)
    more[more.index("--seeds") + 1] = "3"
    third = run_cli(*more)
    assert third.returncode == 0, third.stderr
    assert third.stderr.count("finished earlier, skipped") == 6
    assert len(json.loads((out / "results.json").read_text())["arms"]["random"]["humaneval_loss"]["seeds"]) == 3

    # Other data settings in the same folder: refused with one line, nothing overwritten.
    clash = run_cli(*args, "--threshold", "0.9")
    assert clash.returncode == 1
    assert clash.stderr.strip().splitlines()[-1].startswith("Error: ") and "other data settings" in clash.stderr


def test_unscored_input_is_refused_with_a_clear_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "raw").mkdir()
    pq.write_table(pa.table({"text": ["def f(): pass"]}), tmp_path / "raw" / "a.parquet")
    proc = run_cli("ablate", tmp_path / "raw", "-o", tmp_path / "out", "--preset", "micro")
    assert proc.returncode == 1
    assert "no column 'edu_score'" in proc.stderr and "phifilter score" in proc.stderr


@pytest.fixture
def one_thread():
    """A 25k-parameter model gains nothing from more threads, and busy machines lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch, one_thread):
    import torch

    from phifilter.pretrain import loop as T
    from phifilter.pretrain.config import PRESETS

    preset = PRESETS["micro"]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, preset.model.vocab_size, 5000).astype(np.uint16)
    val = rng.integers(0, preset.model.vocab_size, 1000).astype(np.uint16)
    device = torch.device("cpu")
    steps = 25  # checkpoints every 10 steps, and at the end

    whole, info = T.train_gpt(preset.model, preset.loop, tokens, val, steps, 3, tmp_path / "a", device)

    real_sample, calls = T.sample_batch, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) > 15:  # after the checkpoint at step 10
            raise KeyboardInterrupt
        return real_sample(*a, **k)

    monkeypatch.setattr(T, "sample_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train_gpt(preset.model, preset.loop, tokens, val, steps, 3, tmp_path / "b", device)
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 10
    monkeypatch.setattr(T, "sample_batch", real_sample)
    resumed, info_b = T.train_gpt(preset.model, preset.loop, tokens, val, steps, 3, tmp_path / "b", device)

    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    assert [c["val_loss"] for c in info["curve"]] == [c["val_loss"] for c in info_b["curve"]]
    assert not list((tmp_path / "b").glob("*.pkl")) and not list((tmp_path / "b").rglob("*.pt"))

