"""Leases per output shard: at most one live writer of a shard, whatever mix of runs shares a folder.

A full run, partitioned tasks with any ``--num-tasks``, ``--devices`` workers and Ray actors
may all write into one output folder. Before a writer touches anything of a shard (its
temporaries, its checkpoint folder ``.<name>.partial/``, the output itself) it takes the
shard's lease, the hidden ``.<name>.lease`` beside the output; it gives it back after the
output is in place (or the shard failed). Whoever cannot take the lease skips the shard and
says so (:class:`Leased`): another live run is writing it.

* Local folders (and shared file systems): the lease file is ``flock``-ed while held
  (:class:`phifilter.location.FileLock`), so a killed writer's lease dies with its process; the
  file holds the owner (host, pid) for messages and ``status``.
* Object stores: the lease is an object with an owner and an expiry
  (:class:`phifilter.objstore.RemoteLock`), renewed by a heartbeat while the shard is written;
  one not renewed within ``PHIFILTER_LOCK_TTL`` seconds (default 600), or whose owner is a dead
  process on this host, is taken over. A writer whose lease was taken over publishes nothing
  more of that shard: every publish under the shard checks the lease first
  (:func:`phifilter.objstore.check_held`) and fails with :data:`LOST_WORDS`.

Because only the lease holder writes a shard, the holder may delete every temporary of that
shard it finds (they are dead writers'): :meth:`ShardLease.acquire` does, and nothing else
deletes a shard's temporaries.
"""

from __future__ import annotations

import contextlib

from .location import as_location, read_owner, store_of

LEASE_MARK = ".lease"
LOST_WORDS = "{path}: this run lost its lease on the shard to another run; nothing of it was published by this run"


def lease_path_for(path):
    """The lease of the output ``path``: ``.<name>.lease`` beside it."""
    path = as_location(path)
    return path.parent / f".{path.name}{LEASE_MARK}"


def output_of_lease(lease) -> str | None:
    """The output name a lease file guards (``.a.parquet.lease`` -> ``a.parquet``), else None."""
    name = lease.name
    if name.startswith(".") and name.endswith(LEASE_MARK) and len(name) > 1 + len(LEASE_MARK):
        return name[1:-len(LEASE_MARK)]
    return None


class Leased(Exception):
    """The shard's lease is held by another live run (``holder``: its host and pid)."""

    def __init__(self, path, holder: dict):
        self.path, self.holder = path, holder
        super().__init__(f"{path}: being written by another run ({describe(holder)}); left to it")


def describe(holder: dict) -> str:
    return f"pid {holder.get('pid', 'unknown')} on {holder.get('host', '?')}"


class ShardLease:
    """The lease of one output shard; ``acquire()`` then ``release()``."""

    def __init__(self, path):
        self.path = as_location(path)
        self.location = lease_path_for(self.path)
        self._lock = None

    def acquire(self) -> None:
        """Take the lease or raise :class:`Leased`; then remove the shard's dead temporaries."""
        lock = store_of(self.path).lock(self.path.parent, self.location.name, guards=[str(self.path)])
        lock.lost_words = LOST_WORDS.format(path=self.path)
        holder = lock.acquire()
        if holder is not None:
            raise Leased(self.path, holder)
        self._lock = lock
        from .atomic import remove_shard_temporaries

        remove_shard_temporaries(self.path)

    def check(self) -> None:
        """Raise (:data:`LOST_WORDS`) if the lease is no longer this run's."""
        if self._lock is not None:
            self._lock.verify()

    def release(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()  # a local lease file is deleted while still held: a finished folder holds none

    @property
    def held(self) -> bool:
        return self._lock is not None


def live_holder(lease) -> dict | None:
    """The owner of the lease file ``lease`` if it is held by a live run, else None (a dead
    lease: a killed writer's). Reads only; takes no lock (``status`` runs beside writers)."""
    lease = as_location(lease)
    try:
        data = lease.read_bytes()
    except OSError:
        return None
    doc = read_owner(data)
    return doc if store_of(lease).lock(lease.parent, lease.name).is_live(doc) else None


class LeaseSet:
    """The leases one flow holds; whatever is still held when the flow ends is given back."""

    def __init__(self):
        self._held: list[ShardLease] = []

    def take(self, path) -> ShardLease:
        lease = ShardLease(path)
        lease.acquire()
        self._held.append(lease)
        return lease

    def give_back(self, lease: ShardLease | None) -> None:
        if lease is None:
            return
        lease.release()
        with contextlib.suppress(ValueError):
            self._held.remove(lease)

    def close(self) -> None:
        while self._held:
            self._held.pop().release()
