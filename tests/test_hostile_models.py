"""Crafted model folders (issue 20, item 2): every field checked before any work.

Each folder is a copy of the bundled model with one field or file changed and every recorded
SHA-256 updated to match, as an attacker would. `phifilter score` (a real subprocess, so a
crash of fastText's native loader shows as a signal) must print one `Error:` line and exit 1,
publish no output shard, and leave no temporary and no lock behind; `phifilter info` must do
the same for the metadata cases.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from conftest import run_cli, write_shard
from killresume import temporaries
from phifilter.classifier import META_FILE, default_model_path
from phifilter.hashing import sha256_file

LEXICAL = "lexical.bin"


def _craft(tmp_path: Path, edit_meta=None, edit_files=None) -> Path:
    """A copy of the bundled model, edited, with every recorded hash matching the edited files."""
    m = Path(shutil.copytree(default_model_path(), tmp_path / "model"))
    if edit_files:
        edit_files(m)
    meta = json.loads((m / META_FILE).read_text())
    if edit_meta:
        edit_meta(meta)
    for name in list(meta.get("files") or {}):
        if isinstance(name, str) and (m / name).is_file():
            meta["files"][name] = sha256_file(m / name)
    for s in meta.get("scorers") or [] if isinstance(meta.get("scorers"), list) else []:
        ft = s.get("fasttext") if isinstance(s, dict) else None
        if isinstance(ft, dict) and isinstance(ft.get("file"), str) and (m / ft["file"]).is_file():
            ft["sha256"] = sha256_file(m / ft["file"])
            ft["size_bytes"] = (m / ft["file"]).stat().st_size
    (m / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=True))
    return m


def _refused(tmp_path: Path, model: Path, match: str, info: bool = True) -> None:
    """score (and info) with ``model``: one Error line naming ``match``, exit 1, nothing left."""
    src = write_shard(tmp_path / "in" / "a.parquet", ["def f(x):\n    return x + 1\n", "hello world"] * 4)
    out = tmp_path / "out"
    proc = run_cli("score", src, "-o", out, "-m", model, "--device", "cpu", "-q", check=False, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("Error: ") and match in lines[0], proc.stderr[-3000:]
    assert not list(out.rglob("*.parquet")) if out.exists() else True
    assert not temporaries([out]) and not (out / ".phifilter.lock").exists()
    if info:
        proc = run_cli("info", model, check=False)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr[-3000:]


def _set(path: tuple, value):
    def edit(meta):
        obj = meta
        for key in path[:-1]:
            obj = obj[key]
        obj[path[-1]] = value
    return edit


META_CASES = {
    "nan_coefficient": (("combiner", "coef", 0), math.nan, "combiner.coef"),
    "infinite_intercept": (("combiner", "intercept"), math.inf, "combiner.intercept"),
    "text_coefficient": (("combiner", "coef", 1), "2.3", "combiner.coef"),
    "coefficient_count": (("combiner", "coef"), [0.5], "combiner.coef"),
    "reversed_band": (("cascade", "band"), [0.6771651192021338, 0.20353638025001383], "cascade.band"),
    "band_outside_0_1": (("cascade", "band"), [-5.0, 0.5], "cascade.band"),
    "nan_band": (("cascade", "band"), [math.nan, 0.5], "cascade.band"),
    "share_above_one": (("cascade", "expensive_share"), 7, "cascade.expensive_share"),
    "nan_cheap_mapping": (("cascade", "cheap_mapping", "coef", 0), math.nan, "cascade.cheap_mapping.coef"),
    "cheap_not_a_scorer": (("cascade", "cheap"), "nope", "cascade.cheap"),
    "score_map_nan": (("int_score_map", "edu_score", 3), math.nan, "int_score_map.edu_score"),
    "score_map_unordered": (("int_score_map", "edu_score", 0), 0.9, "int_score_map.edu_score"),
    "score_map_out_of_range": (("int_score_map", "expected_score", 0), 9.0, "int_score_map.expected_score"),
    "scorers_text": (("scorers",), "x", "scorers"),
    "scorer_not_an_object": (("scorers", 1), 3, "scorers[1]"),
    "lexical_dim_text": (("scorers", 0, "fasttext", "params", "dim"), "16", "scorers[0].fasttext.params.dim"),
    "combiner_text": (("combiner",), "x", "combiner"),
}


@pytest.mark.parametrize("case", sorted(META_CASES))
def test_crafted_metadata_is_one_error_line_before_any_work(tmp_path, case):
    path, value, field = META_CASES[case]
    _refused(tmp_path, _craft(tmp_path, _set(path, value)), f"'{field}")


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/passwd", "sub/lexical.bin", ".."])
def test_part_file_named_outside_the_folder_is_refused_before_it_is_opened(tmp_path, name, monkeypatch):
    outside = tmp_path / "outside.bin"
    shutil.copy(default_model_path() / LEXICAL, outside)

    def edit(meta):
        meta["scorers"][0]["file"] = name
        meta["scorers"][0]["fasttext"]["file"] = name

    model = _craft(tmp_path, edit)
    _refused(tmp_path, model, "plain file name")
    # the library refuses it before opening or hashing anything: no read of the named file
    import phifilter.modelfolder as mf
    from phifilter.classifier import EduClassifier
    from phifilter.errors import ModelError

    opened = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p: opened.append(p) or real(p))
    with pytest.raises(ModelError, match="plain file name"):
        EduClassifier.load(model, device="cpu")
    assert not [p for p in opened if "outside" in str(p) or "passwd" in str(p)]


def test_part_file_that_is_a_symlink_leaving_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / LEXICAL
    outside.parent.mkdir()

    def move_out(m):
        shutil.move(m / LEXICAL, outside)
        (m / LEXICAL).symlink_to(outside)

    _refused(tmp_path, _craft(tmp_path, edit_files=move_out), "leads outside the model folder", info=False)


def _patch_fasttext(edit):
    def files(m):
        data = bytearray((m / LEXICAL).read_bytes())
        (m / LEXICAL).write_bytes(bytes(edit(data)))
    return files


BUCKET_OFFSET = 8 + 4 * 8  # magic, version, then dim ws epoch minCount neg wordNgrams loss model: bucket


def _bucket(value):
    def edit(data):
        struct.pack_into("<i", data, BUCKET_OFFSET, value)
        return data
    return edit


FASTTEXT_CASES = {
    "bucket_2_pow_30": _bucket(1 << 30),  # used to crash the process with SIGSEGV
    "negative_bucket": _bucket(-1),
    "truncated_in_the_matrix": lambda d: d[: len(d) // 2],  # used to score every document 0.000577
    "truncated_in_the_dictionary": lambda d: d[:200],
    "truncated_by_one_byte": lambda d: d[:-1],
    "trailing_bytes": lambda d: d + b"\0" * 16,
    "wrong_magic": lambda d: b"\0\0\0\0" + d[4:],
    "empty": lambda d: b"",
}


@pytest.mark.parametrize("case", sorted(FASTTEXT_CASES))
def test_crafted_fasttext_file_is_refused_before_the_native_loader(tmp_path, case):
    _refused(tmp_path, _craft(tmp_path, edit_files=_patch_fasttext(FASTTEXT_CASES[case])),
             "not a valid fastText model", info=False)


def test_fasttext_check_accepts_the_bundled_file_and_reads_its_header():
    from phifilter.fasttext_file import check_fasttext_file

    header = check_fasttext_file(default_model_path() / LEXICAL)
    assert header["model"] == 3 and header["nlabels"] == 2 and header["dim"] > 0 and header["bucket"] > 0


def test_lexical_scorer_standalone_metadata_is_checked(tmp_path):
    from phifilter.errors import ModelError
    from phifilter.lexical import LexicalScorer

    meta = json.loads((default_model_path() / META_FILE).read_text())["scorers"][0]["fasttext"]
    shutil.copy(default_model_path() / LEXICAL, tmp_path / LEXICAL)
    (tmp_path / "lexical.json").write_text(json.dumps({**meta, "classes": "high"}))
    with pytest.raises(ModelError, match="'classes'"):
        LexicalScorer.load(tmp_path, "lexical")
    (tmp_path / "lexical.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ModelError, match="not a 'phifilter-lexical' object"):
        LexicalScorer.load(tmp_path, "lexical")


def test_head_giving_nan_scores_stops_the_shard_and_publishes_nothing(tmp_path):
    """Metadata can be perfect and a part still compute NaN (a skops head with a NaN weight):
    the scored batch is refused before the writer sees it."""
    import numpy as np
    import skops.io as sio

    from phifilter.modelfolder import HEAD_FILE, dump_skops, load_skops

    def nan_head(m):
        meta = json.loads((m / META_FILE).read_text())
        head = load_skops(m, meta, HEAD_FILE)
        est = head.steps[-1][1] if hasattr(head, "steps") else head
        for name in ("intercept_", "_intercept_"):  # libsvm predicts with the private copy
            if hasattr(est, name):
                setattr(est, name, np.full_like(np.asarray(getattr(est, name), dtype=np.float64), np.nan))
        (m / HEAD_FILE).unlink()
        dump_skops(head, m / HEAD_FILE)
        assert sio.get_untrusted_types(file=m / HEAD_FILE) is not None

    model = _craft(tmp_path, _set(("cascade", "band"), [0.0, 1.0]), edit_files=nan_head)  # every document embedded
    _refused(tmp_path, model, "not finite numbers in [0, 1]", info=False)
