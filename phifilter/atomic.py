"""Atomic writes and the temporaries they leave: the one place that names, writes, renames and
cleans them up.

A file or folder that exists is whole. Everything phifilter writes is first written under a
hidden temporary name beside its final name, fsynced, then renamed into place (on an object
store: written whole, then published by copy, :mod:`phifilter.objstore`). The names:

* ``.<name>.tmp-<pid>``: a file or folder being written by process ``<pid>`` (on an object store
  ``.<name>.tmp-<pid>-<8 hex>``: many machines share a store, so the pid alone is not unique;
  :func:`phifilter.location.temp_path_for` gives the name, the store its tail);
* ``.<name>.old-<pid>``: the previous folder, moved aside while its replacement is renamed in.

These names are what earlier versions wrote too, so a rerun cleans up after an older killed run.
The cleaners delete only names of exactly this shape (a mark followed by a pid, and on a store
the token), never any other hidden file: :func:`remove_stale_temporaries` for a whole output
folder (under its lock), :func:`remove_stale_siblings` for one output outside a locked folder
(only when the writing process is gone).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Sequence

from .errors import OutputError
from .location import TMP_MARK, as_location, check_writable_store, fsync_dir, store_of, temp_path_for  # noqa: F401

OLD_MARK = ".old-"
_OWNER = re.compile(r"(\d+)(?:-[0-9a-f]{8})?")  # what follows a mark: the pid (and a store's token)


def old_path_for(path: Path) -> Path:
    """Where a folder being replaced waits while its successor is renamed in."""
    return path.parent / f".{path.name}{OLD_MARK}{os.getpid()}"


def temporary_owner(name: str, marks: Sequence[str] = (TMP_MARK, OLD_MARK)) -> tuple[str, int] | None:
    """``(final name, pid)`` when ``name`` is one of our temporaries, else None."""
    if not name.startswith("."):
        return None
    for mark in marks:
        head, sep, tail = name[1:].rpartition(mark)
        m = _OWNER.fullmatch(tail) if sep and head else None
        if m:
            return head, int(m.group(1))
    return None


def output_error(path, e: OSError) -> OutputError:
    """One line for a failed write: a full disk says that earlier outputs are intact."""
    if e.errno == errno.ENOSPC:
        return OutputError(f"{path}: no space left on device; earlier outputs are intact, free space and rerun to resume")
    return OutputError(f"{path}: cannot write ({e.strerror or e})")


def write_atomic(path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` to a local temporary, then publish it as ``path`` (locally: fsync and rename
    the temporary beside it; on an object store: upload it and publish it whole).

    A failure (a full disk) leaves the previous file as it was and no temporary; an ``OSError``
    becomes one ``OutputError`` line, anything else ``write`` raises passes through. A store
    phifilter only reads (``hf://``) is refused first.
    """
    check_writable_store(path)
    path = as_location(path)
    store = store_of(path)
    try:
        with store.scratch(path) as tmp:
            write(tmp)
            store.publish_file(tmp, path)
    except OSError as e:
        raise output_error(path, e) from None
    return path


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (a local path or a URL)."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_text(path, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, doc, **dumps) -> Path:
    """Write ``json.dumps(doc, **dumps)`` atomically."""
    return write_text(path, json.dumps(doc, **dumps))


def replace_folder(path: Path, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` fills a new hidden folder beside ``path``, which then takes its place.

    The previous folder is moved aside (``.<name>.old-<pid>``), the new one renamed in and the
    old one deleted, so ``path`` names a whole folder, old or new, except for the instant between
    the two renames. Leftovers of a killed earlier writer (its temporary, a folder it set aside)
    are deleted first. On a failure the temporary is removed and the previous folder kept; an
    ``OSError`` becomes one ``OutputError`` line.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(path)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise output_error(path, e) from None
    try:
        write(tmp)
        if path.exists():
            old = old_path_for(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:  # a full disk, no permission: one clear line, the old folder kept
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _remove(p) -> bool:
    try:
        store_of(p).remove(p)
    except OSError:  # gone already (inside a folder removed before it), or cannot be deleted
        return False
    return True


def remove_stale_temporaries(folder, marks: Sequence[str] = (TMP_MARK,)) -> int:
    """Delete our temporaries (files or folders) anywhere under ``folder`` that an interrupted
    run left behind; returns how many. Call under the folder's lock: every writer there is ours,
    and none is running. ``marks=(TMP_MARK, OLD_MARK)`` takes folders set aside too."""
    folder = as_location(folder)
    if not folder.is_dir():
        return 0
    found = store_of(folder).walk(folder)
    stale = [p for p in found if temporary_owner(p.name, marks) is not None]
    removed = 0
    for p in sorted(stale, key=lambda p: len(str(p))):  # a folder before what it held
        if _remove(p):
            removed += 1
    return removed


def remove_stale_siblings(path, marks: Sequence[str] = (TMP_MARK, OLD_MARK), locked: bool = True) -> int:
    """Delete our temporaries of ``path`` (``.<name><mark><pid>``, beside it) whose process is gone.

    For writers of single outputs (a model folder, a sample file) outside a locked output
    folder: a killed run's leftovers go, a live run's temporaries are left alone. On an object
    store no pid can be checked: the caller's lock (``locked``) says that no writer is live, and
    all go; without one (``locked=False``) none does (:meth:`ObjectStore.writer_alive`).
    """
    path = as_location(path)
    store = store_of(path)
    removed = 0
    for p in path.parent.glob(f".{path.name}*"):
        owner = temporary_owner(p.name, marks)
        if owner is None or owner[0] != path.name:
            continue
        if store.writer_alive(owner[1], locked):
            continue
        if _remove(p):
            removed += 1
    return removed


def remove_shard_temporaries(path) -> int:
    """Delete every temporary of the output ``path`` (beside it, its metadata sidecar's, and
    those inside its checkpoint folder ``.<name>.partial/``), whatever process wrote them.

    Only for the holder of the shard's lease (:mod:`phifilter.leases`): no other live process
    writes this shard, so every temporary of it is a dead writer's. The checkpoint's chunks and
    manifest stay (a rerun resumes from them).
    """
    path = as_location(path)
    removed = sum(1 for p in shard_temporaries(path) if _remove(p))
    return removed + remove_stale_temporaries(path.parent / f".{path.name}.partial")


def shard_temporaries(path) -> list:
    """The temporaries beside the output ``path`` (its own and its metadata sidecar's)."""
    path = as_location(path)
    heads = {path.name, f".{path.name}.metadata.json"}
    return [p for p in path.parent.glob(f".*{path.name}*")
            if (owner := temporary_owner(p.name, (TMP_MARK,))) is not None and owner[0] in heads]
