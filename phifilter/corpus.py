"""Corpus I/O: find shards, stream their record batches, write shards atomically.

Shards are Parquet, JSON Lines (plain or .gz/.zst/.bz2) or the Arrow files of a Hugging Face
``save_to_disk`` folder (:mod:`phifilter.formats`), on a local disk or in any fsspec store
(:mod:`phifilter.location`). Nothing here holds a whole shard in memory: readers yield Arrow
record batches (one row group or JSON block at most is decoded at a time) and writers append
one batch at a time. Outputs are written under a hidden temporary name in the destination
folder and renamed (on an object store: copied, :mod:`phifilter.objstore`) into place only when
complete, so an output file that exists is whole; a rerun can trust it and skip it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from . import formats
from .errors import InputError, OutputError
from .location import (RemotePath, as_location, check_writable_store, first_line, glob_root, is_glob, is_location,
                       store_of)
from .atomic import output_error, temp_path_for, write_json
from .objstore import LOCK_NAME

PARTIAL_MARK = ".partial"
PARTIAL_FORMAT = "phifilter-partial-1"


@dataclass(frozen=True)
class Shard:
    """One input file and the relative name its output gets (mirrors the input layout)."""

    path: Path | RemotePath
    name: Path | PurePosixPath


def _is_hidden(rel: Path) -> bool:
    # Spark/Hive convention: files and folders starting with '.' or '_' are not data
    # (_SUCCESS markers, .crc files, our own hidden temporaries).
    return any(part.startswith((".", "_")) for part in rel.parts)


def _is_folder_shard(path, folder) -> bool:
    # In a folder search: Parquet, JSON Lines with an unambiguous name (a plain *.json may be
    # metadata, so it is read only when named or globbed), and save_to_disk Arrow files.
    fmt = formats.detect(path.name)
    if fmt is None or _is_hidden(path.relative_to(folder)):
        return False
    if fmt.kind == formats.ARROW:
        return path in set(formats.hf_data_files(path.parent) or ())
    return fmt.kind == formats.PARQUET or not path.name.lower().endswith(".json")


def _expand(spec: str) -> tuple[Path, list[Path]]:
    """One input spec -> (root its outputs are named relative to, files)."""
    root, files, how = store_of(spec).expand(spec)
    if how == "folder":
        files = [p for p in files if _is_folder_shard(p, root)]
        if not files:
            raise InputError(f"{as_location(spec)}: folder contains no *.parquet files (nor *.jsonl[.gz|.zst|.bz2] or save_to_disk Arrow files)")
    elif how == "glob":
        files = [f for f in files if not _is_hidden(f.relative_to(root))]
        if not files:
            raise InputError(f"{spec}: the pattern matches no files")
    return root, sorted(files)


def find_shards(inputs: str | os.PathLike | Sequence[str | os.PathLike], check_types: bool = True) -> list[Shard]:
    """Resolve files, folders (recursive: ``*.parquet``, ``*.jsonl`` and its compressed forms,
    ``save_to_disk`` Arrow files; symbolic links to folders followed, a loop refused) and globs,
    local or URLs, into a sorted shard list; a column whose type differs between them is one
    InputError (:func:`check_column_types`).

    Output names are relative to the folder (or the fixed prefix of the glob) they were found
    in, so ``score in/ -o out/`` writes ``out/a/b.parquet`` for ``in/a/b.parquet``.
    """
    if is_location(inputs):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input shards given")
    shards: dict[Path, Shard] = {}
    by_name: dict[Path, Path] = {}
    for spec in inputs:
        root, files = _expand(str(spec))
        for f in files:
            name = f.relative_to(root)
            absolute = f.resolve()
            if absolute in shards:
                continue  # the same file named twice (a folder and a glob inside it)
            if name in by_name:
                raise InputError(
                    f"{f}: has the same output name '{name}' as {by_name[name]}; "
                    "score them into different output folders"
                )
            by_name[name] = f
            shards[absolute] = Shard(path=f, name=name)
    found = sorted(shards.values(), key=lambda s: str(s.name))
    if check_types:
        check_column_types(found)
    return found


def check_column_types(shards: Sequence[Shard]) -> None:
    """One InputError, before any command writes anything, when a column changes type between
    shards (a text column that is text in one shard and numbers in another, an id that is a
    string here and an integer there). Numbers that widen (int64 then double, as JSON Lines
    inference gives) and all-null columns are not drift. A shard that cannot be opened is left
    to the command (``--on-error skip`` skips it; otherwise it is refused when opened)."""
    seen: dict[str, tuple] = {}  # column -> (type, the shard it was first seen in)
    for shard in shards:
        try:
            schema = open_parquet(shard.path).schema_arrow
        except InputError:
            continue
        for field in schema:
            field = pa.field(field.name, _plain_type(field.type))
            if field.name not in seen:
                seen[field.name] = (field.type, shard.path)
                continue
            first, where = seen[field.name]
            try:
                merged = pa.unify_schemas([pa.schema([pa.field(field.name, first)]), pa.schema([field])],
                                          promote_options="permissive").field(field.name).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                raise InputError(f"{shard.path}: column '{field.name}' has type {field.type}, but {first} in {where}; "
                                 "give the column one type in every shard (or leave the odd shard out)") from None
            seen[field.name] = (merged, where)


def _plain_type(t):
    """The type a column's values have, whatever their encoding: dictionary-encoded and large
    strings are strings (Parquet writers differ in these), so they are no drift."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_large_string(t):
        return pa.string()
    return pa.binary() if pa.types.is_large_binary(t) else t


def find_input_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Shard]:
    """Like :func:`find_shards`, for commands that write one file (sample, suggest, report): no
    output is named after a shard, so the same relative name in two input folders is fine."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input shards given")
    found: dict[Path, Shard] = {}
    for spec in inputs:
        for shard in find_shards(spec, check_types=False):
            found.setdefault(shard.path.resolve(), shard)
    shards = sorted(found.values(), key=lambda s: (str(s.name), str(s.path)))
    check_column_types(shards)
    return shards


def input_roots(inputs: Iterable[str | os.PathLike]) -> list[tuple[Path, bool]]:
    """(folder, searched recursively?) for each input spec."""
    roots = []
    for spec in map(str, inputs):
        if is_glob(spec):
            roots.append((as_location(glob_root(spec)), "**" in spec))
        else:
            loc = as_location(spec)  # a file, or a missing local path: its folder, not searched
            roots.append((loc.parent, False) if loc.is_file() or store_of(loc).lacks(loc) else (loc, True))
    return roots


def check_output_dir(inputs: Iterable[str | os.PathLike], output_dir: str | os.PathLike) -> Path:
    """Refuse an output folder that is an input folder, or lies inside one that is searched
    recursively (a rerun would take the outputs for inputs). Inputs are never written."""
    check_writable_store(output_dir)
    out = as_location(output_dir).resolve()
    for root, recursive in input_roots(inputs):  # (a folder on another store is never equal nor a parent)
        root = root.resolve()
        if out == root or (recursive and root in out.parents):
            raise OutputError(
                f"{output_dir}: output folder may not be the input folder {root}"
                + (" or lie inside it" if recursive else "")
                + "; choose a separate --output folder"
            )
    if out.exists() and not out.is_dir():
        raise OutputError(f"{output_dir}: exists and is not a folder")
    return out


# ---------------------------------------------------------------------------------------------
# reading


def open_parquet(path: str | os.PathLike) -> pq.ParquetFile:
    """Open a shard: a Parquet file's footer, or (by its name) a JSON Lines or Arrow stream file
    as a reader with the same ``schema_arrow``, ``metadata.num_rows``, ``iter_batches`` and
    ``read``. Arrow's errors become one line that names the file."""
    loc = as_location(path)
    fmt = formats.detect(loc.name)
    if fmt is not None and fmt.kind == formats.JSONL:
        return formats.JsonlFile(loc, fmt, stat_key=_stat_key(loc))
    if fmt is not None and fmt.kind == formats.ARROW:
        return formats.ArrowStreamFile(loc)
    # pre_buffer=False: pyarrow's default (True) caches every row group's column chunks as the
    # reader goes and frees them only at the end, so memory grew with the file (benchmarks/
    # read_formats.md: +200 MB for a 126 MB file); without it one row group is held at a time.
    try:
        return pq.ParquetFile(store_of(loc).arrow_input(loc), pre_buffer=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{path}: not a readable Parquet file ({first_line(e)})") from None


open_shard = open_parquet  # the name that says what it does; both stay


def _stat_key(loc) -> tuple | None:
    """Size and modification stamp: a file with the same key need not be scanned again."""
    try:
        st = store_of(loc).stat(loc)
        return st.size, st.stamp
    except (OSError, ValueError):
        return None


def is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_text_column(schema: pa.Schema, column: str, path: str | os.PathLike) -> None:
    """Raise InputError unless ``column`` exists and holds strings."""
    if column not in schema.names:
        names = ", ".join(schema.names) or "(none)"
        raise InputError(
            f"{path}: no column '{column}'; columns are: {names} (choose one with --text-column)"
        )
    t = schema.field(column).type
    if not is_text_type(t):
        raise InputError(f"{path}: column '{column}' has type {t}, expected strings")


def iter_batches(
    path: str | os.PathLike,
    batch_size: int = 1024,
    columns: Sequence[str] | None = None,
    parquet_file: pq.ParquetFile | None = None,
    skip_rows: int = 0,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of at most ``batch_size`` rows; corrupt data becomes InputError.

    ``skip_rows`` starts after that many rows (whole row groups before it are not even read),
    which is how a resumed run continues from its last checkpoint.
    """
    pf = parquet_file or open_parquet(path)
    if not isinstance(pf, pq.ParquetFile):  # JSON Lines, Arrow stream: the reader skips rows itself
        yield from pf.iter_batches(batch_size=batch_size, columns=columns, skip_rows=skip_rows)
        return
    first_group, offset = 0, skip_rows
    md = pf.metadata
    while first_group < md.num_row_groups and offset >= md.row_group(first_group).num_rows > 0:
        offset -= md.row_group(first_group).num_rows
        first_group += 1
    row_groups = range(first_group, md.num_row_groups) if skip_rows else None
    it = pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None, row_groups=row_groups)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise InputError(f"{path}: corrupt Parquet data ({first_line(e)})") from None
        if offset:
            cut = min(offset, batch.num_rows)
            batch, offset = batch.slice(cut), offset - cut
            if batch.num_rows == 0:
                continue
        yield batch


def texts_from_array(array: pa.Array | pa.ChunkedArray) -> list[str]:
    """Python strings from a string column; nulls become "" and invalid UTF-8 is replaced."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    try:
        values = array.to_pylist()
    except UnicodeDecodeError:
        # Arrow does not always validate UTF-8 on read; decode byte by byte rather than fail.
        values = [
            None if v is None else v.decode("utf-8", errors="replace")
            for v in array.cast(pa.large_binary()).to_pylist()
        ]
    return [v if v is not None else "" for v in values]


def rows_from_batch(batch: pa.RecordBatch | pa.Table) -> list[dict]:
    """``batch.to_pylist()``, but invalid UTF-8 in string columns is replaced, not an exception
    (nulls stay None), the same tolerance as :func:`texts_from_array`."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        pass
    columns = []
    for col in batch.columns:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if is_text_type(col.type):
            columns.append([None if v is None else v.decode("utf-8", errors="replace")
                            for v in col.cast(pa.large_binary()).to_pylist()])
        else:
            columns.append(col.to_pylist())
    names = batch.schema.names
    return [dict(zip(names, values)) for values in zip(*columns)] if columns else [{} for _ in range(batch.num_rows)]


def num_rows(path: str | os.PathLike) -> int:
    return open_parquet(path).metadata.num_rows


def completed_rows(path: str | os.PathLike, required_column: str | None = None) -> int | None:
    """Row count of an existing output (None if absent, unreadable, or missing the column)."""
    path = as_location(path)
    if not path.is_file():
        return None
    try:
        pf = open_parquet(path)
    except (pa.ArrowException, OSError, InputError):
        return None
    if required_column and required_column not in pf.schema_arrow.names:
        return None
    return pf.metadata.num_rows


# ---------------------------------------------------------------------------------------------
# writing


def output_path(out_dir, shard: Shard, output_format: str | None = None):
    """Where ``shard``'s output goes: its relative name under ``out_dir``, with the suffix of
    ``output_format`` (parquet or jsonl) when one is given (None keeps the input's format)."""
    name = shard.name
    return out_dir / name.with_name(formats.output_name(name.name, output_format))


class ShardWriter:
    """Write one Parquet file atomically: a hidden temporary, fsync, then rename into place.

    Used as a context manager; if the block raises, the temporary is removed and any previous
    file at ``path`` is left as it was.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, compression: str = "zstd"):
        self.path = as_location(path)
        self.schema = schema
        self.compression = compression  # of a Parquet output; JSON Lines take theirs from the name
        self.rows = 0
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._file = None

    def __enter__(self) -> "ShardWriter":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = temp_path_for(self.path)
            self._file = store_of(self.path).arrow_output(self._tmp)
            self._writer = formats.open_writer(self._file, self.path.name, self.schema, self.compression)
        except OSError as e:
            raise output_error(self.path, e) from None
        return self

    def write_batch(self, batch: pa.RecordBatch) -> None:
        try:
            self._writer.write_batch(batch)
        except OSError as e:
            raise output_error(self.path, e) from None
        self.rows += batch.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        writer, self._writer = self._writer, None
        file, self._file = self._file, None
        # Locally the temporary is renamed into place. On a store, closing the file completes the
        # temporary's upload and publishing copies it to its final key (atomic there) after
        # checking that the output lock is still ours.
        finish = store_of(self.path).publish
        try:
            if writer is not None:
                writer.close()
            if file is not None:
                file.close()
            if exc_type is None:
                self._write_metadata_sidecar()
                finish(self._tmp, self.path)
        except OSError as e:
            self._discard_temporary()
            if exc_type is None:
                raise output_error(self.path, e) from None
        except BaseException:  # the sidecar could not be written or the lock was lost: leave nothing behind
            self._discard_temporary()
            raise
        finally:
            if exc_type is not None:
                self._discard_temporary()

    def _discard_temporary(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)

    def _write_metadata_sidecar(self) -> None:
        # JSON Lines and Arrow streams have no footer for the schema's key-value metadata (the
        # run record, say): it goes to a hidden sidecar, written before the output appears, so
        # an output never stands without the metadata it was written with.
        fmt = formats.detect(self.path.name)
        if fmt is not None and fmt.kind != formats.PARQUET and self.schema.metadata:
            doc = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in self.schema.metadata.items()}
            write_json(metadata_sidecar(self.path), doc, sort_keys=True)


def metadata_sidecar(path):
    """Where the schema metadata of a non-Parquet output is kept: ``.<name>.metadata.json`` beside it."""
    path = as_location(path)
    return path.parent / f".{path.name}.metadata.json"


def read_metadata(path) -> dict | None:
    """The key-value metadata (bytes -> bytes) an output was written with: a Parquet file's
    footer, or the sidecar of another format; None when there is none or it is unreadable."""
    path = as_location(path)
    fmt = formats.detect(path.name)
    try:
        if fmt is None or fmt.kind == formats.PARQUET:
            return open_parquet(path).schema_arrow.metadata
        doc = json.loads(metadata_sidecar(path).read_text())
    except (OSError, ValueError, InputError, pa.ArrowException):
        return None
    return {str(k).encode(): str(v).encode() for k, v in doc.items()} if isinstance(doc, dict) else None


class OutputLock:
    """An exclusive lock on an output folder, released even if the process is killed (a ``flock``
    locally, a lock object with an owner and an expiry on a store: ``store_of(folder).lock``)."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME):
        self.folder = as_location(folder)
        self.name = name  # a partitioned task locks its own name: tasks share the folder, not shards
        self._lock = store_of(self.folder).lock(self.folder, name)

    @classmethod
    def check_free(cls, folder: str | os.PathLike, name: str = LOCK_NAME) -> None:
        """Fail now, with the same clear error, if another process holds the folder's lock.

        Lets a command refuse in its first second instead of after loading a model; the real
        lock is still taken (and can still fail) when writing starts.
        """
        folder = as_location(folder)
        store_of(folder).lock(folder, name).check_free()

    def __enter__(self) -> "OutputLock":
        holder = self._lock.acquire()
        if holder is not None:
            raise self._lock.busy(holder)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._lock.release(failing=exc_type is not None)


def partial_dir_for(path: str | os.PathLike) -> Path:
    path = as_location(path)
    return path.parent / f".{path.name}{PARTIAL_MARK}"


class PartialShard:
    """Write one large Parquet file with row-group checkpoints, so a killed run resumes mid-file.

    A drop-in for :class:`ShardWriter` (context manager, ``write_batch``, ``rows``). Every batch
    becomes a chunk file in the hidden folder ``.<name>.partial/`` (written to a temporary,
    fsynced, renamed), then ``manifest.json`` there is replaced atomically to list it. The
    manifest is the truth: a chunk it does not list is ignored. On entry, chunks left by an
    earlier run with the same ``key`` (input fingerprint, model, settings) are taken over and
    ``rows`` starts at their row count; the caller continues from that row. On a clean exit
    the chunks are streamed into the final file through :class:`ShardWriter` (still one atomic
    rename) and the folder is removed. On an exception the checkpoints are kept for the rerun,
    except after an :class:`InputError` (the input itself is bad; nothing to resume).
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, key: dict, compression: str = "zstd"):
        self.path = as_location(path)
        self.schema = schema
        self.key = key
        self.compression = compression
        self.folder = partial_dir_for(self.path)
        self.rows = 0
        self.resumed_rows = 0
        self._chunks: list[dict] = []

    # -- resuming

    def _manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def _load(self) -> None:
        try:
            doc = json.loads(self._manifest_path().read_text())
        except (OSError, ValueError):
            self.discard()  # no manifest (killed before the first one) or unreadable: start over
            return
        if not isinstance(doc, dict):
            doc = {}
        chunks = doc.get("chunks")
        if doc.get("format") != PARTIAL_FORMAT or doc.get("key") != self.key or not isinstance(chunks, list):
            self.discard()  # another input, model or setting: these rows cannot be reused
            return
        rows = 0
        for chunk in chunks:
            ok = isinstance(chunk, dict) and isinstance(chunk.get("file"), str) and "/" not in chunk["file"]
            got = completed_rows(self.folder / chunk["file"]) if ok else None
            if got is None or got != chunk.get("rows"):
                self.discard()
                return
            rows += got
        listed = {c["file"] for c in chunks} | {"manifest.json"}
        for p in self.folder.iterdir():  # chunks written after the last manifest update
            if p.name not in listed:
                with contextlib.suppress(OSError):
                    p.unlink()
        self._chunks = list(chunks)
        self.rows = self.resumed_rows = rows

    def checkpointed_column(self, name: str) -> pa.ChunkedArray:
        """One column of the rows taken over from an earlier run."""
        tables = [open_parquet(self.folder / c["file"]).read(columns=[name]) for c in self._chunks]
        return pa.concat_tables(tables).column(name) if tables else pa.chunked_array([], self.schema.field(name).type)

    # -- writing

    def __enter__(self) -> "PartialShard":
        try:
            if self.folder.is_dir():
                self._load()
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise output_error(self.path, e) from None
        return self

    def write_batch(self, batch: pa.RecordBatch) -> None:
        name = f"{len(self._chunks):06d}.parquet"
        try:
            with ShardWriter(self.folder / name, self.schema, self.compression) as chunk:
                chunk.write_batch(batch)
            chunks = self._chunks + [{"file": name, "rows": batch.num_rows}]
            write_json(self._manifest_path(), {
                "format": PARTIAL_FORMAT, "key": self.key, "chunks": chunks,
                "rows": self.rows + batch.num_rows,
            }, sort_keys=True)
        except OSError as e:
            raise output_error(self.path, e) from None
        self._chunks = chunks
        self.rows += batch.num_rows

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if issubclass(exc_type, InputError):
                self.discard()
            return
        self.check_chunks()
        with ShardWriter(self.path, self.schema, self.compression) as out:
            for chunk in self._chunks:
                path = self.folder / chunk["file"]
                for batch in iter_batches(path, batch_size=max(1, chunk["rows"])):
                    out.write_batch(batch)
            if out.rows != self.rows:  # read back fewer or more rows than were checkpointed
                raise OutputError(f"{self.path}: its checkpoints hold {out.rows} rows, the manifest says "
                                  f"{self.rows}; nothing was published; rerun to redo the shard")
        self.discard()

    def check_chunks(self) -> None:
        """Before assembling: every chunk the manifest lists has the row count it recorded, and
        they add up. A mismatch (a chunk replaced by another writer) publishes nothing: the
        checkpoints are discarded and the error says to rerun."""
        total = 0
        for chunk in self._chunks:
            got = completed_rows(self.folder / chunk["file"])
            if got != chunk["rows"]:
                self.discard()
                raise OutputError(
                    f"{self.path}: checkpoint chunk {chunk['file']} has {got if got is not None else 'no'} rows, "
                    f"its manifest says {chunk['rows']}; nothing was published and the checkpoints were "
                    "discarded; rerun to redo the shard")
            total += got
        if total != self.rows:
            self.discard()
            raise OutputError(f"{self.path}: its checkpoint chunks hold {total} rows, {self.rows} were written; "
                              "nothing was published and the checkpoints were discarded; rerun to redo the shard")

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            store_of(self.folder).remove(self.folder)
