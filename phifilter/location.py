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
                f"{url}: cannot open the {protocol}:// store ({_first_line(e)}); check --storage-options "
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


def _first_line(e: BaseException) -> str:
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
        text = _first_line(err)
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
    """A RemotePath method that talks to the store: its URL is noted (for errors surfacing later,
    e.g. from an open file) and a store failure becomes one :func:`store_error` line naming it.
    FileNotFoundError passes unchanged: callers tell "absent" from "failed" by it."""
    import functools

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        _last_url[:] = [str(self)]
        try:
            return method(self, *args, **kwargs)
        except (FileNotFoundError, StoreError, InputError, OutputError):
            raise
        except Exception as e:
            err = store_error(e, self)
            if err is None:
                raise
            raise err from e

    return call


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
    @_store_call
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    @_store_call
    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    @_store_call
    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def _writing(self) -> None:
        check_writable_store(str(self))

    @_store_call
    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        # Object stores have no folders; local-like stores (memory://, file://) get one.
        self._writing()
        self.fs.makedirs(self.path, exist_ok=True)

    @_store_call
    def info(self) -> dict:
        return self.fs.info(self.path)

    def size(self) -> int:
        return int(self.info()["size"])

    @_store_call
    def iterdir(self) -> Iterator["RemotePath"]:
        found = [p.rstrip("/") for p in self.fs.ls(self.path, detail=False, refresh=True)]
        return iter([self._child(p) for p in found if p != self.path])

    @_store_call
    def find(self, hidden: bool = True) -> list["RemotePath"]:
        """Every file below this folder, recursively (names relative to it are not filtered)."""
        self.fs.invalidate_cache(self.path)
        return [self._child(p) for p in self.fs.find(self.path)]

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
            self._writing()
        return self.fs.open(self.path, mode, **kwargs)

    @_store_call
    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    @_store_call
    def write_bytes(self, data: bytes) -> None:
        self._writing()
        self.fs.pipe_file(self.path, data)

    @_store_call
    def unlink(self, missing_ok: bool = False) -> None:
        self._writing()
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    @_store_call
    def rmtree(self) -> None:
        self._writing()
        try:
            self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache(self.path)

    @_store_call
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
