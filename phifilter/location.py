"""The storage layer: a local path (pathlib, the fast path) or an fsspec URL (``s3://``, ``gs://``, ...),
and the one module that tells them apart.

:func:`as_location` turns what a user typed into a :class:`pathlib.Path` for a local path and a
:class:`RemotePath` for a URL. ``RemotePath`` has the shape of pathlib (``/``, ``name``,
``parent``, ``exists``, ``is_file``, ``open``, ``glob``, ...) on top of an fsspec filesystem, so
code above this module reads and writes both with the same calls. What differs between a local
folder and an object store sits behind one small interface, :func:`store_of` (a
:class:`LocalStore` or the :class:`ObjectStore`): the name of a temporary, publishing it
(rename vs server-side copy), locks (``flock`` vs a lock object, :mod:`phifilter.objstore`),
listing, sizes and versions, Arrow files, deleting, and a local copy of a remote folder. No
other module asks which kind of path it has. fsspec and the store's driver (s3fs, gcsfs,
huggingface_hub: the ``phifilter[remote]`` extra) are imported only when a URL is used.

Credentials come from each store's usual environment (for S3: ``AWS_*``, ``AWS_ENDPOINT_URL``)
plus the options set with :func:`set_storage_options` (the CLI's ``--storage-options JSON``).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple

from .errors import InputError, OptionError, OutputError, StoreError

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


def current_storage_options() -> dict:
    """The options :func:`set_storage_options` set (what an engine ships to its workers)."""
    return dict(_STORAGE_OPTIONS)


def storage_options_for(protocol: str) -> dict:
    if protocol in _STORAGE_OPTIONS and isinstance(_STORAGE_OPTIONS[protocol], dict):
        opts = dict(_STORAGE_OPTIONS[protocol])
    else:
        opts = {k: v for k, v in _STORAGE_OPTIONS.items() if not (k in DRIVERS or k in ("memory", "file"))}
    if protocol in ("s3", "s3a", "gs", "gcs"):
        # Listings are re-read, never cached: a rerun must see what another process published.
        opts.setdefault("use_listings_cache", False)
    if protocol in ("s3", "s3a"):
        # Bounded waits: botocore's own retries are off (s3fs retries, with a progress line each:
        # watch_retries), and every connect and read gives up after store_timeout() seconds.
        config = dict(opts.get("config_kwargs") or {})
        config.setdefault("connect_timeout", store_timeout())
        config.setdefault("read_timeout", store_timeout())
        config.setdefault("retries", {"total_max_attempts": 1})
        opts["config_kwargs"] = config
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
        try:
            fs = cls(**storage_options_for(protocol))
        except Exception as e:  # noqa: BLE001 - a driver refusing its options (a bad --storage-options key)
            raise store_error(e, url) or InputError(
                f"{url}: cannot open the {protocol}:// store ({first_line(e)}); check --storage-options "
                f"and {credentials_hint(url)}") from e
        if protocol in ("s3", "s3a"):
            fs.retries = store_retries()  # s3fs's retries of timeouts and lost connections
            watch_retries()
        _filesystem_cache[protocol] = fs
    return fs, fs._strip_protocol(url)


# ---------------------------------------------------------------------------------------------
# store errors: bounded waits, a progress line per retry, one clear line per failure

STORE_TIMEOUT_S = 30.0  # seconds a store may take to accept a connection or answer a request
STORE_RETRIES = 3  # tries of one request that timed out or lost its connection


def _env_number(name: str, default: float, lo: float) -> float:
    try:
        return max(lo, float(os.environ.get(name, default)))
    except ValueError:
        return default


def store_timeout() -> float:
    """``PHIFILTER_STORE_TIMEOUT`` (seconds, default 30): the connect and the read timeout."""
    return _env_number("PHIFILTER_STORE_TIMEOUT", STORE_TIMEOUT_S, 0.1)


def store_retries() -> int:
    """``PHIFILTER_STORE_RETRIES`` (default 3): tries of a request that timed out or lost its connection."""
    return int(_env_number("PHIFILTER_STORE_RETRIES", STORE_RETRIES, 1))


_last_url: list[str] = []  # the store location touched last, named when an error surfaces later


class _RetryNotes:
    """A logging handler on s3fs's logger: one progress line on stderr per retried request, so a
    slow or stalled store is never silent."""

    def __init__(self):
        import logging

        self.handler = logging.Handler(logging.DEBUG)
        self.handler.emit = self.emit
        self.count = 0

    def emit(self, record) -> None:
        import sys

        message = record.getMessage()
        if not message.startswith("Retryable error"):
            return
        self.count += 1
        where = _last_url[-1] if _last_url else "the store"
        cause = message.split(":", 1)[-1].strip().splitlines()[0][:200]
        sys.stderr.write(f"note: {where}: the store did not answer ({cause}); retrying "
                         f"(up to {store_retries()} tries of {store_timeout():g} s each)\n")
        sys.stderr.flush()


_retry_notes: list[_RetryNotes] = []


def watch_retries() -> None:
    """Install the progress line for retried store requests (once per process)."""
    if _retry_notes:
        return
    import logging

    try:
        import s3fs.core
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
    except ImportError:
        return
    for exc in (EndpointConnectionError, ConnectTimeoutError):  # s3fs gives up on these at once otherwise
        if exc not in s3fs.core.S3_RETRYABLE_ERRORS:
            s3fs.core.add_retryable_error(exc)
    notes = _RetryNotes()
    logger = logging.getLogger("s3fs")
    logger.addHandler(notes.handler)
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.DEBUG)
        logger.propagate = False  # the debug records stay here, not in the user's logs
    _retry_notes.append(notes)


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _endpoint(url: str) -> str:
    if protocol_of(url) in ("s3", "s3a"):
        opts = storage_options_for("s3")
        endpoint = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
        return f" at {endpoint}" if endpoint else ""
    return ""


def store_error(e: BaseException, url=None):
    """The one-line :class:`PhifilterError` for a store failure anywhere in ``e``'s chain (a dead
    or wrong endpoint, a timeout, refused credentials, a missing bucket), naming the URL and the
    fix; None when ``e`` is no store failure. Callers raise it ``from e`` (the cause is kept)."""
    from .errors import PhifilterError

    if isinstance(e, PhifilterError):
        return None
    url = str(url) if url is not None else (_last_url[-1] if _last_url else None)
    if url is None or not is_url(url):
        return None
    where = f"{url}: the {protocol_of(url)}:// store{_endpoint(url)}"
    creds = credentials_hint(url)
    for err in _chain(e):
        name = type(err).__name__
        text = first_line(err)
        response = getattr(err, "response", None)  # botocore's is a dict; httpx's (the Hub) an object
        response = response if isinstance(response, dict) else {}
        code = str((response.get("Error") or {}).get("Code", ""))
        if name in ("EndpointConnectionError", "ClientConnectorError", "ConnectionRefusedError", "ServerDisconnectedError") \
                or "Could not connect" in text or "Connection refused" in text:
            return StoreError(f"{where} cannot be reached ({text}); check the endpoint ({creds}) and that the "
                               "store is up, then rerun")
        if "Timeout" in name or "timed out" in text.lower() or isinstance(err, TimeoutError):
            return StoreError(f"{where} did not answer within {store_timeout():g} s, {store_retries()} tries "
                               f"({text}); check the endpoint ({creds}), or allow more with PHIFILTER_STORE_TIMEOUT "
                               "and PHIFILTER_STORE_RETRIES, then rerun")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
                    "AllAccessDisabled", "403") or isinstance(err, PermissionError):
            return StoreError(f"{where} refused the credentials ({text}); check {creds}")
        if code == "NoSuchBucket" or "bucket does not exist" in text.lower() or "NoSuchBucket" in text:
            return StoreError(f"{where} has no such bucket ({text}); create the bucket or fix the URL")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if name in ("ResponseParserError", "ContentTypeError", "InvalidURL", "ClientResponseError") \
                or "Unable to parse" in text or (name == "ClientError" and not code):
            text = f"HTTP {status}" if status and name == "ClientError" else text
            return StoreError(f"{where} did not answer as a {protocol_of(url)}:// store ({text}); is the endpoint "
                               f"an S3-compatible store? ({creds})")
    return None


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


def _store_call(method):
    """A RemotePath (or ObjectStore) method that talks to the store: its URL is noted (for errors surfacing later,
    e.g. from an open file) and a store failure becomes one :func:`store_error` line naming it.
    FileNotFoundError passes unchanged: callers tell "absent" from "failed" by it."""
    import functools

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        where = self if isinstance(self, PureRemotePath) else args[0]  # a RemotePath's, or an ObjectStore's
        _last_url[:] = [str(where)]
        try:
            return method(self, *args, **kwargs)
        except (FileNotFoundError, StoreError, InputError, OutputError):
            raise
        except Exception as e:
            err = store_error(e, where)
            if err is None:
                raise
            raise err from e

    return call


class PureRemotePath:
    """The name of a file or folder in an fsspec store: pathlib's pure operations (``/``,
    ``name``, ``parent``, ``relative_to``...), no store access."""

    __slots__ = ("protocol", "path", "_fs")

    def __init__(self, url: str, _fs=None):
        protocol, _, rest = url.partition("://")
        self.protocol = protocol.lower()
        self.path = rest.rstrip("/") if rest not in ("", "/") else rest
        self._fs = _fs

    def _child(self, path: str) -> "RemotePath":
        return RemotePath(f"{self.protocol}://{path}", self._fs)

    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, PureRemotePath) and str(self) == str(other)

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


class RemotePath(PureRemotePath):
    """A file or folder in an fsspec store, with pathlib's methods for reading and writing it
    (what differs from a local file beyond these is :class:`ObjectStore`'s)."""

    __slots__ = ()

    @property
    def fs(self):
        if self._fs is None:
            self._fs, _ = filesystem(str(self))
        return self._fs

    @_store_call
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    @_store_call
    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    @_store_call
    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    @_store_call
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        # Object stores have no folders; local-like stores (memory://, file://) get one.
        check_writable_store(str(self))
        self.fs.makedirs(self.path, exist_ok=True)

    @_store_call
    def info(self) -> dict:
        return self.fs.info(self.path)

    @_store_call
    def iterdir(self) -> Iterator["RemotePath"]:
        found = [p.rstrip("/") for p in self.fs.ls(self.path, detail=False, refresh=True)]
        return iter([self._child(p) for p in found if p != self.path])

    @_store_call
    def glob(self, pattern: str) -> list["RemotePath"]:
        self.fs.invalidate_cache()
        return [self._child(p) for p in self.fs.glob(posixpath.join(self.path, pattern))]

    @_store_call
    def rglob(self, pattern: str) -> list["RemotePath"]:
        """Files and (inferred) folders below this one whose name matches ``pattern``."""
        import fnmatch

        self.fs.invalidate_cache(self.path)
        found = self.fs.find(self.path, withdirs=True)
        return [self._child(p.rstrip("/")) for p in found
                if p.rstrip("/") != self.path and fnmatch.fnmatch(posixpath.basename(p.rstrip("/")), pattern)]

    @_store_call
    def open(self, mode: str = "rb", **kwargs):
        if any(c in mode for c in "wax+"):
            check_writable_store(str(self))
        return self.fs.open(self.path, mode, **kwargs)

    @_store_call
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    @_store_call
    def write_bytes(self, data: bytes) -> None:
        check_writable_store(str(self))
        self.fs.pipe_file(self.path, data)

    @_store_call
    def unlink(self, missing_ok: bool = False) -> None:
        check_writable_store(str(self))
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


GLOB_CHARS = frozenset("*?[")


def is_glob(spec: str) -> bool:
    """Whether an input spec (a path or URL) holds a wildcard."""
    return any(c in GLOB_CHARS for c in str(spec))


def absolute(spec) -> str:
    """An input spec as an absolute path string (a glob stays a glob); a URL as it is."""
    spec = os.fspath(spec)
    return spec if is_url(spec) else os.path.abspath(spec)


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


# ---------------------------------------------------------------------------------------------
# The storage interface: what differs between a local folder and an object store. Callers get
# one with store_of(path) and never ask which kind they have.

TMP_MARK = ".tmp-"


def temp_path_for(path):
    """The hidden temporary that ``path`` is written under before it is published:
    ``.<name>.tmp-<pid>`` (on an object store ``-<8 hex>`` more: many machines share a store, so
    the pid alone is not unique). :mod:`phifilter.atomic` reads these names back."""
    path = as_location(path)
    return path.parent / f".{path.name}{TMP_MARK}{os.getpid()}{store_of(path).temp_tag()}"


def read_owner(data: bytes) -> dict:
    """The owner document of a lock or lease file (``{}`` when unreadable; an older lock file's
    bare pid becomes ``{"pid": ...}``)."""
    import json

    try:
        doc = json.loads(data or b"{}")
    except ValueError:
        doc = {}
    if isinstance(doc, int):
        return {"pid": doc}
    return doc if isinstance(doc, dict) else {}


class FileStat(NamedTuple):
    """One file's size, ETag (a content tag: object stores only) and a stamp that changes with it."""

    size: int
    etag: str | None
    stamp: object


class FileLock:
    """``flock`` on the local file ``folder/name`` (dies with its process). The file names its owner
    (host, pid); the holder deletes it on release, so a finished folder holds no lock files."""

    def __init__(self, folder, name: str, guards=None):
        self.folder = Path(folder)
        self.location = self.folder / name
        self.lost_words: str | None = None  # a flock is never lost while its process lives
        self._fd: int | None = None

    def acquire(self) -> dict | None:
        """Take the lock: None when taken, else the live holder's owner document."""
        import fcntl
        import socket

        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.location, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise OutputError(f"{self.folder}: cannot create output folder ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = read_owner(os.read(fd, 4096))
                os.close(fd)
                return holder
            # The holder deletes the file when it lets go; if that happened between our open and
            # our flock, we hold a deleted file's lock: try again on the new file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.location))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        import json

        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid()}).encode())
        self._fd = fd
        return None

    def busy(self, holder: dict) -> OutputError:
        pid = holder.get("pid", "unknown")
        return OutputError(f"{self.folder}: another phifilter process (pid {pid}) is writing here; "
                           "wait for it to finish or choose another output folder")

    def check_free(self) -> None:
        if self.location.exists():
            holder = self.acquire()
            if holder is not None:
                raise self.busy(holder)
            self.release()

    def verify(self) -> None:  # a flock held is never taken over
        pass

    def is_live(self, doc: dict | None) -> bool:
        """Is the lock file whose owner is ``doc`` held by a live run? (reads only)"""
        import socket

        from .objstore import process_alive

        if doc and doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int):
            return process_alive(doc["pid"])
        return bool(doc)  # another host's writer on a shared file system: only its flock knows; count it live

    def release(self, failing: bool = False) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.unlink(self.location)  # while still holding it
            os.close(fd)  # closing releases the flock


def is_location(spec) -> bool:
    """One path or URL (a str, a PathLike or a RemotePath), not a list of them."""
    return isinstance(spec, (str, os.PathLike, PureRemotePath))


def walk_files(root: Path) -> list[Path]:
    """Every file below ``root``, following symbolic links to folders (``Path.rglob`` skips them
    silently). A link that leads back to a folder it lies in is a loop: one InputError naming it."""
    found: list[Path] = []
    stack = [(root, frozenset())]
    while stack:
        folder, ancestors = stack.pop()
        try:
            st = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError as e:
            raise InputError(f"{folder}: cannot read the folder ({e.strerror or e}); fix its permissions "
                             "or leave it out of the inputs") from None
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            raise InputError(f"{folder}: a symbolic link loop (it leads to {folder.resolve()}, a folder it lies in); "
                             "remove the link or give the folders as separate inputs")
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows a symbolic link
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((path, ancestors | {key}))
            else:
                found.append(path)
    return found


class LocalStore:
    """A local folder (or a shared file system): rename is atomic, ``flock`` locks, a pid names a writer."""

    def expand(self, spec: str) -> tuple[Path, list[Path], str]:
        """(root, files, how) for an input spec: how is ``glob`` (its matches), ``folder``
        (every file below, links to folders followed) or ``file``; a missing one is an InputError."""
        import glob

        spec = os.fspath(as_location(spec))
        if is_glob(spec):
            return Path(glob_root(spec)), [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()], "glob"
        path = Path(spec)
        if path.is_dir():
            return path, [p for p in walk_files(path) if p.is_file()], "folder"
        if path.is_file():
            return path.parent, [path], "file"
        raise InputError(f"{path}: no such file or folder")

    def temp_tag(self) -> str:
        return ""

    def writer_alive(self, pid: int, locked: bool = True) -> bool:
        """Is the process that wrote a temporary still writing it? (``locked``: does the caller
        hold a lock that excludes every other writer? Locally the pid answers either way.)"""
        from .objstore import process_alive

        return pid != os.getpid() and process_alive(pid)

    def walk(self, folder, folders: bool = True) -> list:
        """Everything below ``folder``, recursively (only files and links when not ``folders``)."""
        found = Path(folder).rglob("*")
        return list(found) if folders else [p for p in found if p.is_file() or p.is_symlink()]

    def stat(self, path) -> FileStat:
        st = os.stat(path)
        return FileStat(st.st_size, None, st.st_mtime_ns)

    def arrow_input(self, path, memory_map: bool = False):
        """A pyarrow input file over ``path``."""
        import pyarrow as pa

        return pa.memory_map(str(path)) if memory_map else pa.OSFile(str(path), "rb")

    def arrow_output(self, path):
        """A pyarrow output file writing ``path`` (the caller closes it)."""
        import pyarrow as pa

        return pa.OSFile(str(path), "wb")

    def publish(self, tmp, final) -> None:
        """Put the finished temporary ``tmp`` in place of ``final``: fsync, rename, fsync the folder."""
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        fsync_dir(Path(final).parent)

    @contextlib.contextmanager
    def scratch(self, path) -> Iterator[Path]:
        """A local file to write the next version of ``path`` in, for :meth:`publish_file`:
        its temporary beside it (removed if the block fails)."""
        tmp = temp_path_for(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            yield tmp
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()  # gone already when published

    publish_file = publish  # the scratch file is the temporary beside ``path``

    @contextlib.contextmanager
    def staged_folder(self, dest, **publish_options) -> Iterator[Path]:
        """A local folder to write ``dest``'s files in: ``dest`` itself."""
        yield as_location(dest)

    def remove(self, p) -> None:
        """Delete a file, or a folder and all it holds (OSError when that fails)."""
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()

    def lock(self, folder, name: str, guards=None) -> FileLock:
        return FileLock(folder, name, guards)

    def check_writable(self, path, what: str, option: str = "output location") -> None:
        """Fail now, not after the work, if ``path`` cannot be written: a hidden file is tried in the
        nearest existing folder (``os.access`` says yes to root on a read-only mount)."""
        import tempfile

        probe = Path(path)
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise OutputError(f"{path}: cannot write {what} ({probe} is not a folder); choose another {option}")
        try:
            with tempfile.TemporaryFile(dir=probe, prefix=".phifilter-probe-"):
                pass
        except OSError as e:
            raise OutputError(f"{path}: cannot write {what} in {probe} ({e.strerror or e}); "
                              f"choose a writable {option}") from None

    def file_locks(self, path) -> list:
        """The locks a run holds while it alone writes the single file ``path`` (a label cache or
        output): none locally, where the file is replaced by a rename (SQLite locks its own)."""
        return []

    def needs_local(self, path, why: str) -> None:
        """Refuse a store where only a local path will do (``why`` says so and what to do)."""

    def lacks(self, path, folder: bool = False) -> bool:
        """Is ``path`` known to be missing (or, with ``folder``, to be no folder)?"""
        return not (Path(path).is_dir() if folder else os.path.exists(path))

    def local_copy(self, loc) -> Path:
        return Path(loc)

    def working_copy(self, path, kind: str, file: bool = False) -> Path:
        """Where a run that needs a local file or folder (SQLite, training checkpoints) builds the
        output ``path``, before :meth:`publish_copy`: locally ``path`` itself."""
        return Path(path)

    def publish_copy(self, local, path, names, last=(), ours=None) -> None:
        """Publish the files ``names`` of the working copy ``local`` to ``path``: nothing to do
        locally, where the working copy is the output."""


class ObjectStore:
    """An fsspec store (S3, GCS, the Hub, ``memory://``): no rename, no ``flock``, many machines.
    A temporary is published by a server-side copy and the lock is an object with an owner and
    an expiry (:mod:`phifilter.objstore`)."""

    def expand(self, spec: str) -> tuple["RemotePath", list["RemotePath"], str]:
        """As :meth:`LocalStore.expand`; a failed listing is one line naming the store's reason."""
        loc = RemotePath(spec)
        try:
            if is_glob(spec):
                root = RemotePath(glob_root(spec))
                return root, [f for f in root.glob(loc.path[len(root.path):].lstrip("/")) if f.is_file()], "glob"
            if loc.is_file():
                return loc.parent, [loc], "file"
            if loc.is_dir():
                return loc, self.walk(loc), "folder"
            try:
                loc.info()  # the store's own reason, when it has one (a refused token), is worth more than "missing"
            except FileNotFoundError:
                pass
        except (OSError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise store_error(e, spec) or InputError(
                f"{spec}: cannot list ({first_line(e)}); check the URL and credentials ({credentials_hint(spec)})") from e
        raise self._missing(loc, spec)

    def _missing(self, loc, spec: str) -> InputError:
        bucket = RemotePath(f"{loc.protocol}://{loc.path.split('/', 1)[0]}")
        if loc.protocol in ("s3", "s3a", "gs", "gcs") and bucket.path and not bucket.exists():
            return InputError(f"{spec}: no such bucket {bucket} (or one these credentials may not see); create it or "
                              f"fix the URL ({credentials_hint(spec)})")
        if loc.protocol == "hf":  # the Hub answers a private or gated repository as missing
            return InputError(f"{spec}: no such repository, file or folder (or a private or gated one: "
                              f"give a token that may read it: {credentials_hint(spec)})")
        return InputError(f"{spec}: no such file or folder")

    def temp_tag(self) -> str:
        import secrets

        return f"-{secrets.token_hex(4)}"

    def writer_alive(self, pid: int, locked: bool = True) -> bool:
        """No pid can be checked here: under the caller's lock no other writer is live; without
        one, any may be (its temporary is left for its own publish, or a locked run, to remove)."""
        return not locked

    @_store_call
    def walk(self, folder, folders: bool = True) -> list:
        """Every object below ``folder`` (an object store has no folders)."""
        folder.fs.invalidate_cache(folder.path)
        return [folder._child(p) for p in folder.fs.find(folder.path)]

    def stat(self, path) -> FileStat:
        info = as_location(path).info()
        etag = info.get("ETag")
        return FileStat(int(info["size"]), str(etag).strip('"') if etag else None,
                        str(etag or info.get("LastModified") or info.get("mtime") or ""))

    def arrow_input(self, path, memory_map: bool = False):
        import pyarrow as pa

        return pa.PythonFile(as_location(path).open("rb"), mode="r")

    def arrow_output(self, path):
        return as_location(path).open("wb")

    @_store_call
    def publish(self, tmp, final) -> None:
        """Make the finished temporary ``tmp`` visible as ``final``, whole: a server-side copy (atomic
        on the store) after checking that the lock or lease guarding ``final`` is still ours
        (:func:`phifilter.objstore.check_held`), then the temporary deleted."""
        from .objstore import check_held

        check_held(final)
        check_writable_store(str(final))
        tmp.fs.copy(tmp.path, final.path)
        tmp.fs.invalidate_cache(final.parent.path)
        tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def scratch(self, path) -> Iterator[Path]:
        """A local file to write the next version of ``path`` in (in a temporary folder)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="phifilter-") as local:
            yield Path(local) / as_location(path).name

    def publish_file(self, scratch, path) -> None:
        """Upload the local file ``scratch`` to a hidden temporary beside ``path``, then publish it."""
        path = as_location(path)
        tmp = temp_path_for(path)
        try:
            tmp.write_bytes(Path(scratch).read_bytes())
            self.publish(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def staged_folder(self, dest, last=(), ours=None) -> Iterator[Path]:
        """A local temporary folder, published to ``dest`` (:meth:`publish_folder`) when the block
        succeeds (nothing is published if it fails)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="phifilter-stage-") as local:
            yield Path(local)
            self.publish_folder(Path(local), as_location(dest), last, ours)

    def publish_folder(self, local: Path, dest, last=(), ours=None) -> None:
        """Publish every file of the finished local folder ``local`` to ``dest``, each whole; the
        names in ``last`` (a model folder's completion marker) after every other file. Then the
        files in ``dest`` that the new folder lacks and ``ours`` accepts (an earlier run's) go."""
        files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith("."))
        files.sort(key=lambda p: p.name in last)
        names = set()
        for f in files:
            rel = f.relative_to(local).as_posix()
            names.add(rel)
            self.publish_file(f, dest / rel)
        if ours is not None:
            for old in self.walk(dest):
                rel = old.relative_to(dest).as_posix()
                if rel not in names and not any(part.startswith(".") for part in rel.split("/")) and ours(old):
                    old.unlink(missing_ok=True)

    @_store_call
    def remove(self, p) -> None:
        """Delete an object, or every object below a prefix."""
        check_writable_store(str(p))
        try:
            p.fs.rm(p.path, recursive=True)
        except FileNotFoundError:
            pass
        p.fs.invalidate_cache(p.path)

    def lock(self, folder, name: str, guards=None):
        from .objstore import RemoteLock

        return RemoteLock(folder, name, guards)

    def check_writable(self, path, what: str, option: str = "output location") -> None:
        """No cheap probe on an object store: a refused write is one clear error when it comes."""

    def file_locks(self, path) -> list:
        """The lock object ``.<name>.lock`` beside ``path``: two runs never both write it."""
        return [self.lock(path.parent, f".{path.name}.lock")]

    def needs_local(self, path, why: str) -> None:
        raise InputError(f"{path}: {why}")

    def lacks(self, path, folder: bool = False) -> bool:
        return False  # folders are prefixes; a file is checked when it is read

    def working_copy(self, path, kind: str, file: bool = False) -> Path:
        """The local working copy of the output ``path`` (a folder, or with ``file`` one file):
        ``<cache>/<kind>/<hash of the URL>[/<name>]`` (:func:`cache_folder`), one per URL and kind,
        so a rerun on this machine resumes in it; the run publishes it (:meth:`publish_copy`)."""
        folder = cache_folder(kind, path)
        return folder / as_location(path).name if file else folder

    def publish_copy(self, local, path, names, last=(), ours=None) -> None:
        """Publish the files ``names`` of the local working folder ``local`` to the folder ``path``,
        each whole (the names in ``last`` after the others; :meth:`publish_folder`, with ``ours``)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="phifilter-stage-") as staging:
            for name in names:
                if (Path(local) / name).is_file():
                    shutil.copyfile(Path(local) / name, Path(staging) / name)
            self.publish_folder(Path(staging), as_location(path), last, ours)

    def local_copy(self, loc) -> Path:
        """A copy of the folder or file ``loc`` in the cache, downloaded once per version of its
        files (their names, sizes and ETags or mtimes) and renamed into place whole."""
        import hashlib

        try:
            listing = loc.fs.find(loc.path, detail=True)
        except (OSError, ValueError) as e:
            raise InputError(f"{loc}: cannot list ({e}); check the URL and credentials") from None
        if not listing:
            raise InputError(f"{loc}: no such folder")
        single = len(listing) == 1 and next(iter(listing)).rstrip("/") == loc.path.rstrip("/")
        if single:
            listing = {name: loc.fs.info(name) for name in listing}  # one file: find() may leave out its size
        version = hashlib.sha256()
        for name in sorted(listing):
            info = listing[name]
            stamp = info.get("ETag") or info.get("blob_id") or info.get("mtime") or info.get("LastModified")
            version.update(f"{name}\0{info.get('size')}\0{stamp}\n".encode())
        target = cache_folder("remote", loc, version.hexdigest()[:16])
        result = target / posixpath.basename(loc.path) if single else target  # one file: its copy
        if not target.is_dir():
            self._download(loc, listing, single, target)
        return result

    def _download(self, loc, listing: dict, single: bool, target: Path) -> None:
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


def fsync_dir(folder: Path) -> None:
    """Make a rename or new file in ``folder`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


LOCAL = LocalStore()
OBJECT_STORE = ObjectStore()


def local_folder(spec) -> Path:
    """A local folder with the contents of ``spec``: itself when local; for a URL (a model folder
    on S3, say, or one file) its copy in the cache (:meth:`ObjectStore.local_copy`)."""
    loc = as_location(spec)
    return store_of(loc).local_copy(loc)


def store_of(path) -> "LocalStore | ObjectStore":
    """The store that holds ``path`` (a local path or a URL): the one place that asks."""
    return OBJECT_STORE if is_url(path) and not str(path).startswith("file://") else LOCAL
