"""A label cache on an object store (``phifilter label ... --cache s3://...``, or ``-o s3://...``).

SQLite needs a local file, so a run works on a local copy of the cache and publishes it:

* the copy lives in phifilter's cache folder, ``<cache root>/label/<hash of the URL>/<name>``
  (``PHIFILTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/phifilter``, else ``~/.cache/phifilter``;
  the store's :meth:`~phifilter.location.ObjectStore.working_copy`, as for an ablation's folder);
* the run holds the store's lock object ``.<cache name>.lock`` beside the cache
  (:class:`phifilter.objstore.RemoteLock`, from ``store_of(cache).file_locks``), so two
  runs never both write it, and every publish checks that the lock is still this run's;
* at the start the published cache is downloaded and its answers merged into the local copy
  (which may hold answers of a run killed on this machine before it could publish them), so
  no answer paid for by an earlier run is asked again;
* while the run goes on, a snapshot (SQLite's online backup) is published every
  ``PHIFILTER_LABEL_PUBLISH_S`` seconds (default 60) and once more when it ends, on an error or
  Ctrl-C too. Each publish is a whole object (a temporary key, then a server-side copy:
  :func:`phifilter.outputs.write_atomic`), so a reader sees an older or a newer cache, never
  part of one;
* when the final publish succeeded the local copy is deleted; otherwise it is kept for the
  next run on this machine to merge.

A run SIGKILLed on another machine loses at most the answers of its last
``PHIFILTER_LABEL_PUBLISH_S`` seconds (they are asked again); on the same machine, none.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ..errors import InputError
from ..location import RemotePath
from .cache import LabelCache

DEFAULT_PUBLISH_S = 60.0


def publish_interval() -> float:
    """Seconds between snapshots published during a run (``PHIFILTER_LABEL_PUBLISH_S``)."""
    try:
        return max(0.0, float(os.environ.get("PHIFILTER_LABEL_PUBLISH_S", DEFAULT_PUBLISH_S)))
    except ValueError:
        return DEFAULT_PUBLISH_S


class StoredCache:
    """The published cache at ``url`` and its local working copy (see the module docstring)."""

    def __init__(self, url: RemotePath, local: Path, notice=None, every: float | None = None):
        self.url = url
        self.local = local  # store_of(url).working_copy(url, "label", file=True)
        self.every = publish_interval() if every is None else every
        self.notice = notice or (lambda line: None)
        self.published = 0  # snapshots published by this run
        self._last = time.monotonic()

    def prepare(self) -> None:
        try:
            self.local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{self.local.parent}: cannot create the local copy of {self.url} "
                             f"({e.strerror or e}); set PHIFILTER_CACHE_DIR to a writable folder") from None

    def fetch(self, cache: LabelCache) -> int:
        """Merge the published cache's answers into ``cache`` (the local copy); how many were new."""
        if not self.url.exists():
            return 0
        tmp = self.local.with_name(f".{self.local.name}.fetch-{os.getpid()}")
        try:
            try:
                self.url.fs.get_file(self.url.path, str(tmp))
            except OSError as e:
                raise InputError(f"{self.url}: cannot download the label cache ({e}); check the URL and "
                                 "credentials") from None
            try:
                return cache.merge_from(tmp)
            except InputError as e:
                raise InputError(str(e).replace(str(tmp), str(self.url))) from None
        finally:
            for p in (tmp, tmp.with_name(tmp.name + "-journal")):
                with contextlib.suppress(OSError):
                    p.unlink()

    def publish(self, cache: LabelCache) -> None:
        """Publish a snapshot of ``cache`` to the store, whole (checks the lock is still ours)."""
        from ..outputs import write_atomic

        write_atomic(self.url, cache.snapshot)
        self.published += 1
        self._last = time.monotonic()

    def publish_if_due(self, cache: LabelCache) -> None:
        if time.monotonic() - self._last >= self.every:
            self.publish(cache)

    def discard_local(self) -> None:
        """Delete the local copy (call once everything in it is published)."""
        for p in (self.local, self.local.with_name(self.local.name + "-journal")):
            with contextlib.suppress(OSError):
                p.unlink()
