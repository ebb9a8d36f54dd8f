"""phifilter.atomic: the one writer of temporaries, and the cleaners that delete only ours."""

import os

import pytest

from phifilter.atomic import (
    OLD_MARK,
    TMP_MARK,
    remove_stale_siblings,
    remove_stale_temporaries,
    replace_folder,
    temporary_owner,
    write_atomic,
    write_text,
)
from phifilter.errors import OutputError


def test_temporary_names_are_recognised_exactly():
    assert temporary_owner(".s.parquet.tmp-123") == ("s.parquet", 123)
    assert temporary_owner(".s.parquet.tmp-123-0a1b2c3d") == ("s.parquet", 123)  # an object store's
    assert temporary_owner(".model.old-9") == ("model", 9)
    for foreign in (".s.parquet.tmp-draft", ".tmp-12", "s.parquet.tmp-12", ".s.tmp-12.npz", ".s.tmp-12-xyz",
                    ".gitignore", ".s.parquet.old-1", ):
        if foreign == ".s.parquet.old-1":
            assert temporary_owner(foreign, marks=(TMP_MARK,)) is None
        else:
            assert temporary_owner(foreign) is None, foreign


def test_write_atomic_failure_keeps_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")

    def half(tmp):
        tmp.write_text("new, half written")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="no space left on device; earlier outputs are intact"):
        write_atomic(target, half)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_replace_folder_swaps_whole_folders_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "model"
    replace_folder(target, lambda d: (d / "a.bin").write_text("1"))
    replace_folder(target, lambda d: (d / "b.bin").write_text("2"))
    assert sorted(os.listdir(target)) == ["b.bin"]  # a file of the old folder does not survive

    def broken(d):
        (d / "c.bin").write_text("3")
        raise RuntimeError("killed halfway")

    with pytest.raises(RuntimeError):
        replace_folder(target, broken)
    assert sorted(os.listdir(target)) == ["b.bin"]
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_replace_folder_removes_a_dead_writers_leftovers_but_not_a_live_ones(tmp_path):
    target = tmp_path / "model"
    dead = tmp_path / f".model{TMP_MARK}999999999"  # no such process
    aside = tmp_path / f".model{OLD_MARK}999999999"
    live = tmp_path / f".model{TMP_MARK}{os.getppid()}"  # the process that started this one runs
    for d in (dead, aside, live):
        d.mkdir()
        (d / "part").write_text("x")
    replace_folder(target, lambda d: (d / "a.bin").write_text("1"))
    assert sorted(os.listdir(tmp_path)) == sorted(["model", live.name])


def test_stale_temporaries_cleaner_deletes_only_what_phifilter_names(tmp_path):
    ours = [tmp_path / ".s.parquet.tmp-123", tmp_path / "sub" / ".t.jsonl.tmp-4-0a1b2c3d",
            tmp_path / ".s.parquet.partial" / ".000001.parquet.tmp-77"]
    theirs = [tmp_path / ".notes.tmp-draft", tmp_path / ".gitignore", tmp_path / "keep.parquet",
              tmp_path / ".s.parquet.partial" / "000000.parquet", tmp_path / ".run.old-5" / "x"]
    for p in ours + theirs:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 3
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)
    assert remove_stale_temporaries(tmp_path, marks=(TMP_MARK, OLD_MARK)) == 1  # the folder set aside
    assert not (tmp_path / ".run.old-5").exists()


def test_sibling_cleaner_touches_only_temporaries_of_that_output(tmp_path):
    out = tmp_path / "seed.parquet"
    mine = tmp_path / f".seed.parquet{TMP_MARK}999999999"
    other = tmp_path / f".seed.parquet.bak{TMP_MARK}999999999"  # another output's temporary
    for p in (mine, other):
        p.write_bytes(b"x")
    assert remove_stale_siblings(out) == 1
    assert not mine.exists() and other.exists()
