"""The answer cache: one SQLite row per (document hash, rubric hash, model), written on arrival.

Every answer is committed (and synced) the moment it arrives, so after a crash, Ctrl-C or
SIGKILL a rerun finds it and does not pay for it again. SQLite's journal makes each commit
all-or-nothing: a kill mid-write loses at most that one answer, never the file.

A new cache is created under a hidden temporary name and renamed into place once its tables
exist, so a full disk never leaves a half-created cache behind. A cache that is ours but
damaged (a truncated header, a malformed page) is set aside as ``<name>.damaged-<time>`` with
one line saying so, every answer still readable in it is copied into a fresh cache, and the
run continues: no paid answer is lost. A file that exists but is not a phifilter cache
(another database, garbage, no permission) is refused with a clear error and left exactly as
it was. While a run uses a cache it holds an exclusive lock on it (``<name>.lock``, deleted
when the run ends), so two runs cannot pay twice for the same documents.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
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

    def __init__(self, path: str | os.PathLike, notice=None):
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._notice = notice or (lambda line: print(line, file=sys.stderr))
        self.set_aside: Path | None = None  # where a damaged cache was moved this run

    def __enter__(self) -> "LabelCache":
        damaged = self._check_existing()
        self._lock()
        try:
            if damaged is None and self.path.exists():
                try:
                    self._open()
                except sqlite3.DatabaseError as e:
                    self._close_db()
                    damaged = str(e)
            if damaged is not None:
                self._replace_damaged(damaged)
            elif not self.path.exists():
                self._create()
            if self._db is None:
                self._open()
        except sqlite3.DatabaseError as e:
            self.close()
            raise InputError(f"{self.path}: unusable label cache ({e}); move it away or pass another --cache") from None
        except OSError as e:
            self.close()
            from ..atomic import output_error

            raise output_error(self.path, e) from None
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, timeout=30)
        self._db.execute("PRAGMA synchronous=FULL")
        self._check_tables()
        # A torn page would fail a later read mid-run, after answers were paid for: find it now
        # (quick_check reads every page once; about a second per few hundred MB).
        problem = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {problem}")
        with self._db:
            self._db.executescript(SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
            self._add_columns()

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _create(self, rows: list | None = None) -> None:
        """A new cache, tables (and ``rows``) included, appears only by rename: never half-created."""
        from ..atomic import temp_path_for, write_atomic

        journal = temp_path_for(self.path)
        journal = journal.with_name(journal.name + "-journal")  # sqlite's, beside the temporary

        def build(tmp: Path) -> None:
            tmp.unlink(missing_ok=True)  # an earlier process of the same pid's: never open it
            db = sqlite3.connect(tmp)
            try:
                with db:
                    db.executescript(SCHEMA)
                    db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
                    db.executemany("INSERT OR IGNORE INTO answers (doc_sha, rubric_sha, model, score, reason, reply, "
                                   "prompt_chars, prompt_tokens, completion_tokens, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                                   rows or [])
            finally:
                db.close()

        try:
            write_atomic(self.path, build)
        except sqlite3.Error as e:  # a full disk shows up as "disk I/O error"
            raise OutputError(f"{self.path}: cannot create the label cache ({e}); nothing was left "
                              "behind: free space and rerun") from None
        finally:
            with contextlib.suppress(OSError):
                journal.unlink()

    def _replace_damaged(self, why: str) -> None:
        """Set a damaged cache aside, copy what is readable into a fresh one, say so in one line."""
        rows = _readable_answers(self.path)
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        n = 0
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{n}")
        os.replace(self.path, aside)
        for suffix in ("-journal", "-wal", "-shm"):  # belong to the damaged file, not the new one
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        self.set_aside = aside
        self._create(rows)
        self._notice(f"warning: {self.path}: damaged label cache ({why}); set aside as {aside.name}, "
                     f"{len(rows):,} answers recovered into a fresh cache")

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._close_db()
        if self._lock_fd is not None:
            # Delete the lock file while still holding the lock (the next locker re-checks the
            # inode), so a finished run leaves no *.lock file behind.
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path())
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # -- checks before anything is written

    def _check_existing(self) -> str | None:
        """Refuse what is not ours; return why an existing cache of ours is damaged (None: fine)."""
        if not self.path.exists():
            if not self.path.parent.is_dir():
                raise OutputError(f"{self.path}: folder {self.path.parent} does not exist")
            return None
        if not self.path.is_file():
            raise InputError(f"{self.path}: label cache is not a file")
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise InputError(f"{self.path}: cannot read label cache ({e.strerror or e}); "
                             "fix its permissions or pass another --cache") from None
        if not os.access(self.path, os.W_OK):
            raise InputError(f"{self.path}: label cache is not writable; fix its permissions or pass another --cache")
        if head and head != SQLITE_MAGIC:
            if SQLITE_MAGIC.startswith(head):  # our header, cut short: a write that did not finish
                return "truncated"
            raise InputError(f"{self.path}: not a phifilter label cache (not an SQLite file); "
                             "it was left untouched: move it away or pass another --cache")
        return None

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

    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _lock(self) -> None:
        import fcntl

        lock_path = self._lock_path()
        while True:
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
            # The last holder deletes the file; a lock on a deleted file must be taken again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
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

    def snapshot(self, dest: str | os.PathLike) -> None:
        """Write a consistent copy of this cache to ``dest`` (SQLite's online backup), for
        publishing it to an object store while the run goes on."""
        copy = sqlite3.connect(dest)
        try:
            self._db.backup(copy)
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: cannot copy the label cache ({e})") from None
        finally:
            copy.close()

    def merge_from(self, other: str | os.PathLike) -> int:
        """Add every answer of the cache file ``other`` that this one lacks; returns how many.

        ``other`` is checked like any cache first (a file that is not a phifilter cache is
        refused, an older format gets its new columns). Answers present in both are kept as
        they are here: each was paid for once, and both hold the same question's reply.
        """
        with LabelCache(other, notice=self._notice):
            pass
        before = self.count()
        columns = "doc_sha, rubric_sha, model, score, reason, reply, prompt_chars, prompt_tokens, completion_tokens, " \
                  "created, cut_at"
        try:
            self._db.execute("ATTACH DATABASE ? AS other", (os.fspath(other),))
            try:
                with self._db:
                    self._db.execute(f"INSERT OR IGNORE INTO answers ({columns}) SELECT {columns} FROM other.answers")
            finally:
                self._db.execute("DETACH DATABASE other")
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: cannot merge the answers of {other} ({e})") from None
        return self.count() - before

    def count(self) -> int:
        with contextlib.closing(self._db.execute("SELECT COUNT(*) FROM answers")) as cur:
            return cur.fetchone()[0]


def _readable_answers(path: Path) -> list[tuple]:
    """Every answer row still readable in a damaged cache (best effort; [] if none)."""
    rows: list[tuple] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        cur = db.execute("SELECT doc_sha, rubric_sha, model, score, reason, reply, prompt_chars, prompt_tokens, "
                         "completion_tokens, created FROM answers")
        while True:
            try:
                row = cur.fetchone()
            except sqlite3.DatabaseError:
                break  # a malformed page: keep what came before it
            if row is None:
                break
            rows.append(row)
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return rows
