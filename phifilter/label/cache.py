"""The answer cache: one SQLite row per (document hash, rubric hash, model), written on arrival.

Every answer is committed (and synced) the moment it arrives, so after a crash, Ctrl-C or
SIGKILL a rerun finds it and does not pay for it again. SQLite's journal makes each commit
all-or-nothing: a kill mid-write loses at most that one answer, never the file.

A file that exists but is not a phifilter cache (another database, garbage, no permission) is
refused with a clear error and left exactly as it was. While a run uses a cache it holds an
exclusive lock on it, so two runs cannot pay twice for the same documents.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OutputError

FORMAT = "phifilter-label-cache-1"
SQLITE_MAGIC = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    doc_sha TEXT NOT NULL,
    rubric_sha TEXT NOT NULL,
    model TEXT NOT NULL,
    score INTEGER,
    reason TEXT,
    reply TEXT,
    prompt_chars INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created REAL NOT NULL,
    cut_at INTEGER,
    PRIMARY KEY (doc_sha, rubric_sha, model)
);
"""
# Columns added since the first format, with their types: an older cache gets them on opening
# (null in its existing rows), so it keeps working without a new format name.
ADDED_COLUMNS = {"cut_at": "INTEGER"}  # characters of the document the model read, when cut


@dataclass
class CachedAnswer:
    score: int | None
    reason: str
    prompt_chars: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    reply: str | None = None  # the raw reply, re-read by the current parser when the output is written
    cut_at: int | None = None  # characters of the document the model read; None: all of it


class LabelCache:
    """Open (or create) the cache at ``path``; use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None

    def __enter__(self) -> "LabelCache":
        self._check_existing()
        self._lock()
        try:
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_tables()
            with self._db:
                self._db.executescript(SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
                self._add_columns()
        except sqlite3.DatabaseError as e:
            self.close()
            raise InputError(f"{self.path}: unusable label cache ({e}); move it away or pass another --cache") from None
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- checks before anything is written

    def _check_existing(self) -> None:
        if not self.path.exists():
            if not self.path.parent.is_dir():
                raise OutputError(f"{self.path}: folder {self.path.parent} does not exist")
            return
        if not self.path.is_file():
            raise InputError(f"{self.path}: label cache is not a file")
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise InputError(f"{self.path}: cannot read label cache ({e.strerror or e}); "
                             "fix its permissions or pass another --cache") from None
        if head and head != SQLITE_MAGIC:
            raise InputError(f"{self.path}: not a phifilter label cache (not an SQLite file); "
                             "it was left untouched: move it away or pass another --cache")
        if not os.access(self.path, os.W_OK):
            raise InputError(f"{self.path}: label cache is not writable; fix its permissions or pass another --cache")

    def _check_tables(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return
        if not {"meta", "answers"} <= tables:
            raise InputError(f"{self.path}: an SQLite file that is not a phifilter label cache (tables: "
                             f"{', '.join(sorted(tables))}); it was left untouched: pass another --cache")
        row = self._db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None or row[0] != FORMAT:
            raise InputError(f"{self.path}: label cache of another format ({row[0] if row else 'unknown'}); "
                             f"this phifilter reads {FORMAT}: pass another --cache")

    def _add_columns(self) -> None:
        present = {r[1] for r in self._db.execute("PRAGMA table_info(answers)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE answers ADD COLUMN {name} {kind}")

    def _lock(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"{lock_path}: cannot create lock file ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{self.path}: another phifilter label run is using this cache; "
                              "wait for it to finish or pass another --cache") from None
        self._lock_fd = fd

    # -- reading and writing

    def get_many(self, keys: list[tuple[str, str]], model: str) -> dict[tuple[str, str], CachedAnswer]:
        """Cached answers for (doc_sha, rubric_sha) pairs under ``model``; missing pairs are absent."""
        found: dict[tuple[str, str], CachedAnswer] = {}
        wanted = set(keys)
        # One indexed lookup per distinct rubric keeps this fast for any cache size.
        for rubric_sha in {r for _, r in wanted}:
            rows = self._db.execute(
                "SELECT doc_sha, score, reason, prompt_chars, prompt_tokens, completion_tokens, reply, cut_at "
                "FROM answers WHERE rubric_sha=? AND model=?", (rubric_sha, model))
            for doc_sha, *rest in rows:
                if (doc_sha, rubric_sha) in wanted:
                    found[(doc_sha, rubric_sha)] = CachedAnswer(*rest)
        return found

    def put(self, doc_sha: str, rubric_sha: str, model: str, score: int | None, reason: str, reply: str,
            prompt_chars: int | None, prompt_tokens: int | None, completion_tokens: int | None,
            cut_at: int | None = None) -> None:
        try:
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers (doc_sha, rubric_sha, model, score, reason, reply, prompt_chars, "
                    "prompt_tokens, completion_tokens, created, cut_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (doc_sha, rubric_sha, model, score, reason, reply, prompt_chars, prompt_tokens,
                     completion_tokens, time.time(), cut_at))
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: cannot write to the label cache ({e})") from None

    def count(self) -> int:
        with contextlib.closing(self._db.execute("SELECT COUNT(*) FROM answers")) as cur:
            return cur.fetchone()[0]
