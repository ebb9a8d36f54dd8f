"""Exactly-once on object stores: publishing finished temporaries, and a lock object with an owner
and an expiry.

Object stores have no atomic rename and no ``flock``. What they do have: an object appears whole
or not at all (a PUT, a completed multipart upload or a server-side copy is atomic), and S3
(and moto) accept conditional writes (``If-None-Match: *`` creates only if absent, ``If-Match:
ETAG`` replaces or deletes only the version one read). So:

* an output is written to a hidden temporary key, then published by a server-side copy to its
  final key and the temporary deleted (:meth:`phifilter.location.ObjectStore.publish`, after
  :func:`check_held`): a final key that exists is whole, as on a local disk;
* the lock is the object ``.phifilter.lock`` in the output folder, holding its owner (host, pid,
  a random token) and an expiry. It is created with ``If-None-Match: *``, renewed by a heartbeat
  thread with ``If-Match`` on its own ETag, and released with a conditional delete. A lock whose
  expiry has passed, or whose owner is a dead process on this very host (a SIGKILLed run), is
  taken over with ``If-Match`` on the ETag that was read, so of two runs racing for it one
  wins. Every publish first checks that the lock is still ours (a run that lost it stops with
  an error instead of overwriting the winner's outputs).

Stores without conditional writes (``memory://``, and fsspec drivers other than s3fs) get the
same protocol with plain writes and a read-back: good enough for tests and for one writer, not
a guarantee against two simultaneous runs (docs/reliability.md says which store gets what).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time

from .errors import OutputError

LOCK_NAME = ".phifilter.lock"
DEFAULT_TTL_S = 600.0  # a lock not renewed for this long is considered abandoned


def lock_ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("PHIFILTER_LOCK_TTL", DEFAULT_TTL_S)))
    except ValueError:
        return DEFAULT_TTL_S


class _Conflict(Exception):
    """A conditional write or delete found another version than expected."""


class _Store:
    """Conditional put/delete on one object: real preconditions on S3, best effort elsewhere."""

    def __init__(self, location):
        self.location = location
        self.fs = location.fs
        self.s3 = type(self.fs).__name__ == "S3FileSystem"

    def read(self) -> tuple[dict | None, str | None]:
        """(lock document, version tag), or (None, None) when there is no lock."""
        try:
            if self.s3:
                bucket, key, _ = self.fs.split_path(self.location.path)
                resp = self.fs.call_s3("get_object", Bucket=bucket, Key=key)
                data = _read_body(self.fs, resp["Body"])
                tag = resp["ETag"]
            else:
                data = self.location.read_bytes()
                tag = data.decode(errors="replace")
        except FileNotFoundError:
            return None, None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = {}
        return (doc if isinstance(doc, dict) else {}), tag

    def put(self, doc: dict, if_match: str | None) -> str:
        """Write the lock: create only if absent (if_match None) or replace version ``if_match``."""
        data = json.dumps(doc, sort_keys=True).encode()
        if self.s3:
            bucket, key, _ = self.fs.split_path(self.location.path)
            cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
            try:
                resp = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **cond)
            except Exception as e:  # s3fs turns 412/409 into OSError subclasses of varying kinds
                if _precondition_failed(e):
                    raise _Conflict() from None
                raise
            return resp["ETag"]
        current, tag = self.read()
        if (current is None) != (if_match is None) or (if_match is not None and tag != if_match):
            raise _Conflict()
        self.location.write_bytes(data)
        _, tag = self.read()
        if tag != data.decode():
            raise _Conflict()
        return tag

    def delete(self, if_match: str) -> None:
        try:
            if self.s3:
                bucket, key, _ = self.fs.split_path(self.location.path)
                self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=if_match)
            else:
                _, tag = self.read()
                if tag == if_match:
                    self.location.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        except Exception as e:
            if not _precondition_failed(e):
                raise


def _read_body(fs, body) -> bytes:
    from fsspec.asyn import sync

    return sync(fs.loop, body.read)


def _precondition_failed(e: Exception) -> bool:
    text = f"{type(e).__name__} {e} {getattr(e, '__cause__', '')}"
    return any(s in text for s in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"))


_held: dict[str, "RemoteLock"] = {}  # lock object URL -> the lock this process holds


def check_held(path) -> None:
    """Raise unless every lock this process took on a folder above ``path`` is still its own
    (a shard's lease guards only that shard's outputs and temporaries: ``guards``)."""
    text = str(path)
    for lock in list(_held.values()):
        if lock.guards is not None:
            if any(text == g or text.startswith(g + "/") or _temporary_of(text, g) for g in lock.guards):
                lock.verify()
        elif text.startswith(str(lock.folder).rstrip("/") + "/"):
            lock.verify()


def _temporary_of(text: str, guarded: str) -> bool:
    """Is ``text`` a hidden temporary or checkpoint beside ``guarded`` (``.<name>...``)?"""
    folder, _, name = guarded.rpartition("/")
    return text.startswith(f"{folder}/.{name}")


class RemoteLock:
    """The output lock of a folder in an object store (see the module docstring)."""

    def __init__(self, folder, name: str = LOCK_NAME, guards: list[str] | None = None):
        self.folder = folder
        self.location = folder / name
        self.guards = guards  # None: the whole folder; else the outputs (URLs) a lease guards
        self.lost_words: str | None = None  # the error when the lock is lost (a lease names its shard)
        self.ttl = lock_ttl()
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
        self._tag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    def _doc(self) -> dict:
        return {**self.owner, "expires": time.time() + self.ttl}

    def _stale(self, doc: dict) -> bool:
        if not doc or float(doc.get("expires", 0) or 0) < time.time():
            return True
        if doc.get("host") == self.owner["host"] and isinstance(doc.get("pid"), int):
            return not process_alive(doc["pid"])  # killed on this machine: no need to wait
        return False

    def busy(self, doc: dict) -> OutputError:
        left = max(0, int(float(doc.get("expires", 0) or 0) - time.time()))
        return OutputError(
            f"{self.folder}: another phifilter process (pid {doc.get('pid', 'unknown')} on {doc.get('host', '?')}) "
            f"is writing here (its lock expires in {left} s unless renewed); "
            "wait for it to finish or choose another output folder")

    def check_free(self) -> None:
        store = _Store(self.location)
        doc, _ = store.read()
        if doc is not None and not self._stale(doc):
            raise self.busy(doc)

    def __enter__(self) -> "RemoteLock":
        holder = self.acquire()
        if holder is not None:
            raise self.busy(holder)
        return self

    def acquire(self) -> dict | None:
        """Take the lock and start renewing it: None when taken, else the live holder's document."""
        store = _Store(self.location)
        for _ in range(5):
            try:
                self._tag = store.put(self._doc(), None)
                break
            except _Conflict:
                doc, tag = store.read()
                if doc is None:
                    continue  # released meanwhile: try to create it again
                if not self._stale(doc):
                    return doc
                try:
                    self._tag = store.put(self._doc(), tag)  # take over exactly the version we judged
                    break
                except _Conflict:
                    continue
        else:
            raise OutputError(f"{self.folder}: could not take the output lock {self.location}; rerun")
        self._lost = None
        self._stop.clear()
        _held[str(self.location)] = self  # by object: one folder may hold locks of several names
        self._thread = threading.Thread(target=self._heartbeat, name="phifilter-lock", daemon=True)
        self._thread.start()
        return None

    def is_live(self, doc: dict | None) -> bool:
        """Is the lock described by ``doc`` (as read from the store) held by a live run?"""
        return doc is not None and not self._stale(doc)

    def _heartbeat(self) -> None:
        store = _Store(self.location)
        while not self._stop.wait(self.ttl / 3):
            with self._mutex:
                try:
                    self._tag = store.put(self._doc(), self._tag)
                except _Conflict:
                    self._lost = "another process took over the lock"
                    return
                except Exception:  # a network error: retried at the next beat, before the expiry
                    continue

    def verify(self) -> None:
        """Raise if this lock was lost (taken over by another run after an expiry)."""
        if self._lost:
            raise OutputError(self.lost_words or f"{self.folder}: {self._lost}; this run stops without writing more")
        with self._mutex:
            _, tag = _Store(self.location).read()
        if tag != self._tag:
            self._lost = "the output lock is no longer this run's"
            raise OutputError(self.lost_words or f"{self.folder}: {self._lost}; this run stops without writing more")

    def release(self, failing: bool = False) -> None:
        """Stop renewing and delete the lock (a failure to delete is raised unless the run is
        ``failing`` already: its own error is the one to report)."""
        self.__exit__(*((OutputError, None, None) if failing else (None, None, None)))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _held.pop(str(self.location), None)
        tag, self._tag = self._tag, None
        if tag is not None and not self._lost:
            try:
                _Store(self.location).delete(tag)
            except Exception:
                if exc and exc[0] is not None:
                    return  # the error that ended the run is the one to report, not the release's
                raise  # a finished run that cannot release its lock says so (it expires after the TTL)


def process_alive(pid: int) -> bool:
    """Is process ``pid`` running on this machine (one we may not signal counts as running)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
