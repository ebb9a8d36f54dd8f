"""A local copy of a remote folder or file (a model folder on S3, say) in phifilter's cache,
downloaded once per version of its files and renamed into place whole."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .atomic import temp_path_for
from .errors import InputError
from .location import RemotePath, as_location, cache_folder


def local_folder(spec) -> Path:
    """A local folder with the contents of ``spec``: itself when local; for a URL (a model folder
    on S3, say) a copy in the cache, downloaded once per version of its files. A URL naming
    one file gives that file's local copy.

    The copy's name hashes the URL and every file's name, size and ETag/mtime, so a changed
    folder is downloaded again; it is written under a temporary name and renamed whole.
    """
    import hashlib
    import shutil

    loc = as_location(spec)
    if not isinstance(loc, RemotePath):
        return loc
    try:
        listing = loc.fs.find(loc.path, detail=True)
    except (OSError, ValueError) as e:
        raise InputError(f"{loc}: cannot list ({e}); check the URL and credentials") from None
    if not listing:
        raise InputError(f"{loc}: no such folder")
    if len(listing) == 1 and next(iter(listing)).rstrip("/") == loc.path.rstrip("/"):
        listing = {name: loc.fs.info(name) for name in listing}  # one file: find() may leave out its size
    version = hashlib.sha256()
    for name in sorted(listing):
        info = listing[name]
        version.update(f"{name}\0{info.get('size')}\0{info.get('ETag') or info.get('blob_id') or info.get('mtime') or info.get('LastModified')}\n".encode())
    target = cache_folder("remote", loc, version.hexdigest()[:16])
    single = len(listing) == 1 and next(iter(listing)).rstrip("/") == loc.path.rstrip("/")
    result = target / posixpath.basename(loc.path) if single else target  # one file: its copy
    if target.is_dir():
        return result
    tmp = temp_path_for(target)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for name in listing:
            rel = name[len(loc.path):].lstrip("/") or (posixpath.basename(name) if single else "")
            if listing[name].get("type") == "directory" or not rel:
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            loc.fs.get_file(name, str(dest))
        os.replace(tmp, target)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same copy first
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise InputError(f"{loc}: cannot download ({e})") from None
    return result
