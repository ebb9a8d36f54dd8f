"""Unit tests of the ablation's parts (decontamination: tests/test_exclude.py; the sandbox: tests/test_sandbox.py): token files, pass@k, bigram, arms."""

from __future__ import annotations

import gzip
import json
import math
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phifilter.corpus import find_shards
from phifilter.pretrain import data as D
from phifilter.pretrain.metrics import pass_at_k, truncate_at_stop
from phifilter.pretrain.ngram import BigramModel
from phifilter.pretrain.sandbox import run_program

from ablate_corpus import eval_dir  # noqa: F401  (a fixture)

# ---------------------------------------------------------------------------------------------
# token files


def test_tokenise_into_memmap_and_gather_arm_round_trip(tmp_path):
    texts = [f"def f{i}(x):\n    return x + {i}  # ünïcode ✓\n" for i in range(40)] + ["", "tail text"]
    shard = tmp_path / "in" / "part.parquet"
    shard.parent.mkdir()
    pq.write_table(pa.table({"text": texts, "edu_score": pa.array(np.linspace(0, 1, len(texts)), pa.float32())}),
                   shard, row_group_size=7)  # several record batches
    shards = find_shards(shard)
    keep = np.ones(len(texts), bool)
    keep[3] = False  # a dropped (say, contaminated) document gets zero length
    tok = D.train_tokenizer(iter(texts), 300, tmp_path / "tok.json")
    offsets = D.tokenize_corpus(shards, "text", keep, tok, tmp_path / "all.bin", tmp_path / "off.npy")
    all_tokens = D.open_tokens(tmp_path / "all.bin")
    eot = tok.token_to_id(D.EOT)
    assert all_tokens.dtype == np.uint16 and offsets[-1] == all_tokens.size
    assert offsets[4] == offsets[3]
    for i in (0, 5, 40, 41):
        doc = all_tokens[offsets[i] : offsets[i + 1]]
        assert doc[-1] == eot and eot not in doc[:-1]
        assert tok.decode(doc[:-1].tolist()) == texts[i]
    docs = np.array([0, 1, 2, 7, 41])
    written = D.write_arm(all_tokens, offsets, docs, tmp_path / "arm.bin")
    arm = D.open_tokens(tmp_path / "arm.bin")
    assert written == arm.size == sum(offsets[i + 1] - offsets[i] for i in docs)
    pieces = np.split(arm, np.flatnonzero(arm == eot) + 1)[:-1]
    assert [tok.decode(p[:-1].tolist()) for p in pieces] == [texts[i] for i in docs]
    assert D.write_arm(all_tokens, offsets, np.array([], np.int64), tmp_path / "empty.bin") == 0
    assert D.open_tokens(tmp_path / "empty.bin").size == 0


def test_top_fraction_keeps_best_documents_by_tokens_and_random_matches_tokens():
    n = 200
    rng = np.random.default_rng(0)
    table = D.DocTable(score=rng.random(n).astype(np.float32), nbytes=np.ones(n, np.int64),
                       contamination=np.zeros(n, np.int8))
    tokens = rng.integers(10, 100, n)
    val = np.zeros(n, bool)
    val[::10] = True
    train = ~val
    chosen, val_docs, cutoff = D.filtered_docs(table, tokens, train, val, None, 0.3)
    assert train[chosen].all() and val[val_docs].all()
    share = tokens[chosen].sum() / tokens[train].sum()
    assert 0.3 <= share < 0.3 + tokens.max() / tokens[train].sum()
    assert table.score[chosen].min() >= table.score[train & ~np.isin(np.arange(n), chosen)].max()
    assert (table.score[val_docs] >= cutoff).all()
    pool = np.flatnonzero(train)
    r1 = D.random_docs(pool, tokens, int(tokens[chosen].sum()), np.random.default_rng(1))
    r2 = D.random_docs(pool, tokens, int(tokens[chosen].sum()), np.random.default_rng(2))
    for r in (r1, r2):
        assert abs(tokens[r].sum() - tokens[chosen].sum()) <= tokens.max()
    assert not np.array_equal(r1, r2)
    thr, _, _ = D.filtered_docs(table, tokens, train, val, 0.9, None)
    assert set(thr) == set(np.flatnonzero(train & (table.score >= 0.9)))


# ---------------------------------------------------------------------------------------------
# pass@k, stops, bigram


def test_pass_at_k_matches_brute_force():
    for n in (1, 4, 6):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(combinations(range(n), k))
                brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
                assert math.isclose(pass_at_k(n, c, k), brute, rel_tol=1e-12, abs_tol=1e-12)


def test_completion_is_cut_at_the_first_stop_sequence():
    text = "    return x + 1\n\ndef other():\n    pass\n#comment"
    assert truncate_at_stop(text, ("\ndef ", "\n#")) == "    return x + 1\n"
    assert truncate_at_stop("    return 1", ("\ndef ",)) == "    return 1"


def test_bigram_learns_a_markov_chain():
    rng = np.random.default_rng(0)
    V = 30
    transition = rng.dirichlet(np.full(V, 0.2), size=V)
    seq = [0]
    for _ in range(30000):
        seq.append(rng.choice(V, p=transition[seq[-1]]))
    seq = np.asarray(seq, dtype=np.uint16)
    model = BigramModel(V).fit(seq[:25000], chunk=4096).tune(seq[25000:27000])
    true_entropy = -np.log(transition[seq[27000:-1], seq[27001:]]).mean()
    assert model.nll(seq[27000:]) < true_entropy + 0.05
    assert model.nll(seq[27000:]) < np.log(V) - 0.5
    # Chunked counting equals counting in one go.
    whole = BigramModel(V).fit(seq[:25000])
    assert np.array_equal(whole.pair_codes_, model.pair_codes_)
    assert np.array_equal(whole.pair_counts_, model.pair_counts_)


# ---------------------------------------------------------------------------------------------
# eval sets


def test_eval_sets_load_and_reference_solutions_pass_their_tests(eval_dir):
    from phifilter.pretrain.evalsets import load_humaneval, load_mbpp

    he, mbpp = load_humaneval(eval_dir), load_mbpp(eval_dir)
    assert len(he) == 164 and len(mbpp) == 500
    for problem in (he[0], he[50], mbpp[0], mbpp[100]):
        assert run_program(problem.program(problem.solution), timeout=10).passed
        assert not run_program(problem.program("    return None\n" if problem in he else "pass\n"), timeout=10).passed


def test_shipped_eval_sets_equal_the_reference_copies(eval_dir):
    from phifilter.pretrain.evalsets import default_eval_dir

    for name in ("HumanEval.jsonl.gz", "mbpp.jsonl"):
        assert (default_eval_dir() / name).read_bytes() == (eval_dir / name).read_bytes()
    with gzip.open(default_eval_dir() / "HumanEval.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["task_id"] == "HumanEval/0"


# ---------------------------------------------------------------------------------------------
# model


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_cached_sampling_equals_recomputing_every_step(positions):
    import torch

    from phifilter.pretrain.config import GPTConfig
    from phifilter.pretrain.model import GPT

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context=32, n_layer=2, n_head=2, d_model=16, positions=positions)).eval()
    prompt = torch.randint(0, 50, (3, 10))
    with torch.no_grad():
        new = model.generate(prompt, 12, temperature=0)
        idx = prompt
        for _ in range(12):
            idx = torch.cat((idx, model(idx)[:, -1].argmax(-1, keepdim=True)), 1)
    assert torch.equal(new, idx[:, 10:])
    # Tied weights: the output head is the embedding matrix, counted once.
    assert model.head.weight is model.tok_emb.weight
