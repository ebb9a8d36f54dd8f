"""phifilter.location's storage interface: the same calls give the same results on a local folder
and on an fsspec store (``memory://``, real fsspec, no stubs), so callers never ask which they have."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pytest

from phifilter.atomic import remove_stale_temporaries, write_bytes
from phifilter.errors import InputError, OutputError
from phifilter.location import (FileLock, LocalStore, ObjectStore, RemotePath, as_location, read_owner, store_of,
                                temp_path_for)


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return tmp_path / "store"
    return RemotePath(f"memory:///phifilter-test-{uuid.uuid4().hex}/store")


def test_store_of_tells_the_kinds_apart_once():
    assert isinstance(store_of("/x/y"), LocalStore) and isinstance(store_of("file:///x/y"), LocalStore)
    assert isinstance(store_of("s3://b/k"), ObjectStore) and isinstance(store_of(RemotePath("gs://b/k")), ObjectStore)
    assert temp_path_for(as_location("/x/a.parquet")).name == f".a.parquet.tmp-{os.getpid()}"
    name = temp_path_for(RemotePath("s3://b/a.parquet")).name
    assert name.startswith(f".a.parquet.tmp-{os.getpid()}-") and len(name) == len(f".a.parquet.tmp-{os.getpid()}-") + 8


def test_write_walk_stat_remove_agree_on_both_stores(root):
    store = store_of(root)
    write_bytes(root / "a.json", b"{}")
    write_bytes(root / "sub" / "b.bin", b"12345")
    files = sorted(p.relative_to(root).as_posix() for p in store.walk(root, folders=False))
    assert files == ["a.json", "sub/b.bin"]
    st = store.stat(root / "sub" / "b.bin")
    assert st.size == 5  # (memory:// keeps no mtime: its stamp is "", as before)
    assert (root / "sub" / "b.bin").read_bytes() == b"12345"
    assert not any(p.name.startswith(".") for p in store.walk(root)), "no temporary is left behind"
    store.remove(root / "sub")
    assert sorted(p.relative_to(root).as_posix() for p in store.walk(root, folders=False)) == ["a.json"]
    with pytest.raises(OSError):
        store.stat(root / "missing.bin")


def test_arrow_files_round_trip_on_both_stores(root):
    store = store_of(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(root / "t.arrow")
    sink = store.arrow_output(tmp)
    table = pa.table({"x": [1, 2, 3]})
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    sink.close()
    store.publish(tmp, root / "t.arrow")
    assert not tmp.exists()
    assert pa.ipc.open_stream(store.arrow_input(root / "t.arrow", memory_map=True)).read_all().equals(table)


def test_the_stale_temporary_cleaner_takes_only_ours_on_both_stores(root):
    write_bytes(root / "keep.json", b"1")
    (root / ".keep.json.tmp-999999999-0a1b2c3d").write_bytes(b"dead")  # a killed writer's
    (root / ".notes").write_bytes(b"not ours")
    assert remove_stale_temporaries(root) == 1
    names = sorted(p.name for p in store_of(root).walk(root, folders=False))
    assert names == [".notes", "keep.json"]


def test_expand_lists_and_refuses_the_same_way(root):
    store = store_of(root)
    write_bytes(root / "d" / "x.parquet", b"PAR1")
    r, files, how = store.expand(str(root / "d"))
    assert how == "folder" and [f.name for f in files] == ["x.parquet"] and r == root / "d"
    r, files, how = store.expand(str(root / "d" / "*.parquet"))
    assert how == "glob" and [f.name for f in files] == ["x.parquet"]
    r, files, how = store.expand(str(root / "d" / "x.parquet"))
    assert how == "file" and r == root / "d"
    with pytest.raises(InputError, match="no such file or folder"):
        store.expand(str(root / "nothing-here"))


def test_a_local_lock_file_names_its_live_holder_and_dies_with_it(tmp_path):
    lock = FileLock(tmp_path, ".x.lock")
    assert lock.acquire() is None
    other = FileLock(tmp_path, ".x.lock")
    holder = other.acquire()
    assert holder["pid"] == os.getpid() and other.is_live(holder)
    with pytest.raises(OutputError, match=rf"pid {os.getpid()}\) is writing here"):
        other.check_free()
    lock.release()
    assert not (tmp_path / ".x.lock").exists()
    assert other.acquire() is None
    other.release()
    # an older version's lock file held a bare pid
    assert read_owner(b"1234") == {"pid": 1234} and read_owner(b"garbage") == {} and read_owner(b"") == {}
    assert not FileLock(tmp_path, ".y").is_live({"host": os.uname().nodename, "pid": 2 ** 22 + 12345})


def test_a_store_file_lock_is_an_object_and_local_needs_none(tmp_path):
    url = RemotePath(f"memory:///phifilter-test-{uuid.uuid4().hex}/out/labels.parquet")
    assert store_of(tmp_path).file_locks(tmp_path / "labels.parquet") == []
    (lock,) = store_of(url).file_locks(url)
    with lock:
        assert (url.parent / ".labels.parquet.lock").exists()
        (again,) = store_of(url).file_locks(url)
        with pytest.raises(OutputError, match="is writing here"):
            again.__enter__()
    assert not (url.parent / ".labels.parquet.lock").exists()
