"""Thread stages for the scoring pipeline: each stage runs in its own thread, a few items ahead.

The scorer is a chain read -> tokenise -> embed -> head -> write. Arrow decoding, the Rust
tokeniser, torch kernels and scikit-learn's estimators all release the GIL, so running each
step in its own thread overlaps them: while the model embeds batch k, batch k+1 is tokenised,
batch k+2 is read and the head scores batch k-1. Bounded queues keep memory flat: at most
``depth`` items wait between two stages, whatever the corpus size.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
U = TypeVar("U")
_DONE = object()


def background(items: Iterable[T], depth: int = 2, name: str = "phifilter-stage") -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, up to ``depth`` items ahead of the consumer.

    An exception raised while producing is re-raised in the consumer, in order. If the consumer
    stops early (break, exception, close), the producer thread is told to stop and the upstream
    iterator is closed, so a chain of stages shuts down from the end.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    it = iter(items)

    def produce():
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put((True, item))
                if stop.is_set():
                    return
            q.put((True, _DONE))
        except BaseException as e:  # handed to the consumer
            q.put((False, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass

    t = threading.Thread(target=produce, daemon=True, name=name)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


def stage(fn: Callable[[T], U], items: Iterable[T], depth: int = 2, name: str = "phifilter-stage") -> Iterator[U]:
    """``map(fn, items)`` computed in a background thread (see :func:`background`)."""

    def mapped():
        it = iter(items)
        try:
            for item in it:
                yield fn(item)
        finally:  # stopping this stage stops the one before it, and so on up the chain
            close = getattr(it, "close", None)
            if close is not None:
                close()

    return background(mapped(), depth=depth, name=name)
