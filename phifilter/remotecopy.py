"""A local copy of a remote folder or file (a model folder on S3, say) in phifilter's cache,
downloaded once per version of its files and renamed into place whole."""

from __future__ import annotations

from pathlib import Path

from .location import as_location, store_of


def local_folder(spec) -> Path:
    """A local folder with the contents of ``spec``: itself when local; for a URL (a model folder
    on S3, say) a copy in the cache, downloaded once per version of its files. A URL naming
    one file gives that file's local copy.

    The copy's name hashes the URL and every file's name, size and ETag/mtime, so a changed
    folder is downloaded again; it is written under a temporary name and renamed whole
    (:meth:`phifilter.location.ObjectStore.local_copy`).
    """
    loc = as_location(spec)
    return store_of(loc).local_copy(loc)
