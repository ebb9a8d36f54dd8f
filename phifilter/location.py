"""Locations: a local path (pathlib, the fast path) or an fsspec URL (``s3://``, ``gs://``, ...).

:func:`as_location` turns what a user typed into a :class:`pathlib.Path` for a local path and a
:class:`RemotePath` for a URL. ``RemotePath`` implements the small part of the pathlib API the
corpus code uses (``/``, ``name``, ``parent``, ``exists``, ``is_file``, ``open``, ``rglob``, ...)
on top of an fsspec filesystem, so the same code reads and writes both. fsspec and the store's
driver (s3fs, gcsfs, huggingface_hub: the ``phifilter[remote]`` extra) are imported only when a
URL is used.

Credentials come from each store's usual environment (for S3: ``AWS_*``, ``AWS_ENDPOINT_URL``)
plus the options set with :func:`set_storage_options` (the CLI's ``--storage-options JSON``).
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Iterator

from .errors import InputError, OptionError, OutputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_STORAGE_OPTIONS: dict = {}
DRIVERS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "hf": "huggingface_hub"}
# Stores phifilter reads but never writes: on the Hugging Face Hub every write is a commit, and
# there is no atomic publish or lock object (docs/reliability.md).
READ_ONLY = {"hf": "the Hugging Face Hub"}


def is_url(spec) -> bool:
    """True for ``scheme://...`` (a RemotePath or a URL string); False for local paths."""
    return isinstance(spec, RemotePath) or (isinstance(spec, str) and bool(_URL.match(spec)))


def parse_storage_options(text: str | None) -> dict | None:
    """``--storage-options JSON``: read the object and apply it to every filesystem opened from now on."""
    if text is None:
        return None
    import json

    try:
        options = json.loads(text)
    except ValueError as e:
        raise OptionError(f"not valid JSON ({e}); e.g. '{{\"anon\": true}}'", option="--storage-options") from None
    if not isinstance(options, dict):
        raise OptionError("expected a JSON object, e.g. '{\"anon\": true}'", option="--storage-options")
    set_storage_options(options)
    return options


def protocol_of(spec) -> str:
    """``s3`` for ``s3://bucket/key``; ``""`` for a local path."""
    return str(spec).split("://", 1)[0].lower() if is_url(spec) else ""


def check_writable_store(spec, what: str = "outputs") -> None:
    """Refuse, before any work, an output on a store phifilter only reads (``hf://``)."""
    protocol = protocol_of(spec)
    if protocol in READ_ONLY:
        raise OutputError(
            f"{spec}: phifilter reads {protocol}:// but does not write to {READ_ONLY[protocol]} (each write "
            f"would be a commit, with no atomic publish or lock); write {what} to a local folder, s3:// or gs://, "
            "then upload them with `hf upload`")


def credentials_hint(spec) -> str:
    """Where the credentials for ``spec``'s store come from, for error messages."""
    if protocol_of(spec) == "hf":
        return "HF_TOKEN, HF_ENDPOINT, --storage-options '{\"token\": \"hf_...\"}'"
    return "AWS_* variables, AWS_ENDPOINT_URL, --storage-options"


def set_storage_options(options: dict | None) -> None:
    """Options passed to every fsspec filesystem opened from now on (e.g. ``{"anon": true}``).

    Keyed by protocol (``{"s3": {...}}``) or flat (applied to every protocol).
    """
    global _STORAGE_OPTIONS
    if options is not None and not isinstance(options, dict):
        raise OptionError("--storage-options: expected a JSON object, e.g. '{\"anon\": true}'")
    _STORAGE_OPTIONS = dict(options or {})
    _filesystem_cache.clear()


def storage_options_for(protocol: str) -> dict:
    if protocol in _STORAGE_OPTIONS and isinstance(_STORAGE_OPTIONS[protocol], dict):
        opts = dict(_STORAGE_OPTIONS[protocol])
    else:
        opts = {k: v for k, v in _STORAGE_OPTIONS.items() if not (k in DRIVERS or k in ("memory", "file"))}
    if protocol in ("s3", "s3a", "gs", "gcs"):
        # Listings are re-read, never cached: a rerun must see what another process published.
        opts.setdefault("use_listings_cache", False)
    if protocol in ("s3", "s3a"):
        # botocore reads AWS_ACCESS_KEY_ID & co. itself; AWS_ENDPOINT_URL only in some versions.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in opts and "endpoint_url" not in opts.get("client_kwargs", {}):
            opts["endpoint_url"] = endpoint
    return opts


_filesystem_cache: dict = {}


def filesystem(url: str):
    """(fsspec filesystem, path without the protocol) for a URL; a clear error if the driver is missing."""
    protocol = url.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise InputError(f"{url}: reading URLs needs fsspec; pip install 'phifilter[remote]'") from None
    fs = _filesystem_cache.get(protocol)
    if fs is None:
        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as e:
            driver = DRIVERS.get(protocol, f"the fsspec driver for {protocol}://")
            raise InputError(f"{url}: {protocol}:// needs {driver} ({e}); pip install 'phifilter[remote]'") from None
        fs = cls(**storage_options_for(protocol))
        _filesystem_cache[protocol] = fs
    return fs, fs._strip_protocol(url)


def as_location(spec) -> "Path | RemotePath":
    """A Path for a local path (``file://`` URLs included), a RemotePath for any other URL."""
    if isinstance(spec, (Path, RemotePath)):
        return spec
    spec = os.fspath(spec)
    if spec.startswith("file://"):
        return Path(spec[len("file://"):])
    if is_url(spec):
        return RemotePath(spec)
    return Path(spec)


class RemotePath:
    """A file or folder in an fsspec store, with the pathlib methods the corpus code needs."""

    __slots__ = ("protocol", "path", "_fs")

    def __init__(self, url: str, _fs=None):
        protocol, _, rest = url.partition("://")
        self.protocol = protocol.lower()
        self.path = rest.rstrip("/") if rest not in ("", "/") else rest
        self._fs = _fs

    @property
    def fs(self):
        if self._fs is None:
            self._fs, _ = filesystem(str(self))
        return self._fs

    def _child(self, path: str) -> "RemotePath":
        return RemotePath(f"{self.protocol}://{path}", self._fs)

    # -- pure path operations
    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other) -> bool:
        return str(self) < str(other)

    def __truediv__(self, other) -> "RemotePath":
        other = str(PurePosixPath(other)) if not isinstance(other, str) else other
        return self._child(posixpath.join(self.path, other) if self.path else other)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "RemotePath":
        return self._child(posixpath.dirname(self.path))

    @property
    def parents(self) -> list["RemotePath"]:
        out, p = [], self
        while "/" in p.path.strip("/"):
            p = p.parent
            out.append(p)
        return out

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.path.split("/") if p)

    def relative_to(self, other: "RemotePath") -> PurePosixPath:
        base = other.path.rstrip("/") + "/"
        if not (self.path + "/").startswith(base):
            raise ValueError(f"{self} is not inside {other}")
        return PurePosixPath(self.path[len(base):])

    def resolve(self) -> "RemotePath":
        return self

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    # -- store operations
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def _writing(self) -> None:
        check_writable_store(str(self))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        # Object stores have no folders; local-like stores (memory://, file://) get one.
        self._writing()
        self.fs.makedirs(self.path, exist_ok=True)

    def info(self) -> dict:
        return self.fs.info(self.path)

    def size(self) -> int:
        return int(self.info()["size"])

    def iterdir(self) -> Iterator["RemotePath"]:
        for p in self.fs.ls(self.path, detail=False, refresh=True):
            p = p.rstrip("/")
            if p != self.path:
                yield self._child(p)

    def find(self, hidden: bool = True) -> list["RemotePath"]:
        """Every file below this folder, recursively (names relative to it are not filtered)."""
        self.fs.invalidate_cache(self.path)
        return [self._child(p) for p in self.fs.find(self.path)]

    def glob(self, pattern: str) -> list["RemotePath"]:
        self.fs.invalidate_cache()
        return [self._child(p) for p in self.fs.glob(posixpath.join(self.path, pattern))]

    def rglob(self, pattern: str) -> list["RemotePath"]:
        """Files and (inferred) folders below this one whose name matches ``pattern``."""
        import fnmatch

        self.fs.invalidate_cache(self.path)
        found = self.fs.find(self.path, withdirs=True)
        return [self._child(p.rstrip("/")) for p in found
                if p.rstrip("/") != self.path and fnmatch.fnmatch(posixpath.basename(p.rstrip("/")), pattern)]

    def open(self, mode: str = "rb", **kwargs):
        if any(c in mode for c in "wax+"):
            self._writing()
        return self.fs.open(self.path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        self._writing()
        self.fs.pipe_file(self.path, data)

    def unlink(self, missing_ok: bool = False) -> None:
        self._writing()
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        self._writing()
        try:
            self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self.path)

    def copy_to(self, dest: "RemotePath") -> None:
        dest._writing()
        self.fs.copy(self.path, dest.path)
        self.fs.invalidate_cache(dest.parent.path)


GLOB_CHARS = frozenset("*?[")


def is_glob(spec: str) -> bool:
    """Whether an input spec (a path or URL) holds a wildcard."""
    return any(c in GLOB_CHARS for c in str(spec))


def glob_root(spec: str) -> str:
    """The part of a glob (a path or URL) before its first wildcard component: the folder its
    matches' output names are relative to (``"."`` for a relative glob with none)."""
    head, parts = ("", spec)
    if is_url(spec):
        protocol, _, parts = spec.partition("://")
        head = protocol + "://"
    fixed = []
    for part in parts.split("/"):
        if is_glob(part):
            break
        fixed.append(part)
    root = "/".join(fixed)
    if not head and not root:
        root = "/" if spec.startswith("/") else "."
    return head + root


def cache_root() -> Path:
    return Path(os.environ.get("PHIFILTER_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or
                                                                Path.home() / ".cache") / "phifilter")


def cache_folder(kind: str, url, version: str | None = None) -> Path:
    """The local folder phifilter keeps for the URL ``url`` (a label cache's working copy, an
    ablation's working folder, a downloaded model): ``<cache>/<kind>/<16 hex of the URL's
    SHA-256>``, with ``-<version>`` appended when given (a copy made per version of the files)."""
    from .hashing import text_hash

    key = text_hash(str(url))[:16]
    return cache_root() / kind / (f"{key}-{version}" if version else key)
