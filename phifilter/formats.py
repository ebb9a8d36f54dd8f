"""Shard formats: tell a file's format from its name, read it as Arrow record batches, write it.

Parquet (``.parquet``), JSON Lines (``.jsonl``, ``.json``, each optionally ``.gz``, ``.zst`` or
``.bz2``) and the Arrow IPC stream files of a Hugging Face ``save_to_disk`` folder
(``data-00000-of-00002.arrow`` beside ``state.json``). Every reader streams: at most one block
(a few MiB of decompressed text, or one Arrow record batch) is held at a time, whatever the
file size.

JSON Lines has no footer, so opening one makes a first streaming pass that counts its rows and
infers one schema for the whole file (the union of every block's inferred schema; a field
missing from a line reads as null; strings stay strings, even ISO dates). That pass is the
JSON equivalent of checking every Parquet footer before work starts: a bad line fails in the
first seconds, not hours into a run. Its result is cached per file (size and mtime).

Writers keep the input's format and compression by default (the output's name says which).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator, Sequence

from .errors import InputError

PARQUET, JSONL, ARROW = "parquet", "jsonl", "arrow"
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
BLOCK_BYTES = 1 << 22  # decompressed bytes parsed at once by the JSON reader
# The longest JSON Lines line (one document with its other fields) phifilter reads: a longer one
# is one Error line naming the file (a document that size belongs in Parquet or split up).
MAX_LINE_BYTES = 256 << 20
HF_STATE = "state.json"


@dataclass(frozen=True)
class Format:
    kind: str  # parquet, jsonl or arrow
    compression: str | None = None  # gzip, zstd, bz2 (JSON Lines only)


def detect(name: str) -> Format | None:
    """The format a file name says (``a.jsonl.zst`` -> jsonl/zstd), or None for other files."""
    name = name.lower()
    if name.endswith(".parquet"):
        return Format(PARQUET)
    if name.endswith(".arrow"):
        return Format(ARROW)
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            name, compression = name[: -len(suffix)], codec
            break
    if name.endswith(JSON_SUFFIXES):
        return Format(JSONL, compression)
    return None


def output_name(name: str, output_format: str | None) -> str:
    """The output file name for an input shard: the same name, or its stem with the new format's
    suffix (``a.jsonl.gz`` -> ``a.parquet`` for ``--output-format parquet``). Arrow files of a
    ``save_to_disk`` folder become Parquet unless JSON Lines is asked for."""
    fmt = detect(name)
    if fmt is None:
        return name
    if output_format is None and fmt.kind != ARROW:
        return name
    wanted = output_format or PARQUET
    if wanted not in (PARQUET, JSONL):
        raise InputError(f"--output-format {wanted}: expected 'parquet' or 'jsonl'")
    if wanted == fmt.kind:
        return name
    stem = name
    for suffix in (*COMPRESSIONS, *JSON_SUFFIXES, ".parquet", ".arrow"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem + (".parquet" if wanted == PARQUET else ".jsonl")


# ---------------------------------------------------------------------------------------------
# reading


def input_stream(location, compression: str | None):
    """A decompressed pyarrow input stream over a local Path or a RemotePath."""
    import pyarrow as pa

    from .location import store_of

    raw = store_of(location).arrow_input(location)
    return pa.CompressedInputStream(raw, compression) if compression else raw


class LineTooLong(ValueError):
    """A JSON Lines line longer than :data:`MAX_LINE_BYTES`."""


def iter_line_blocks(stream, block_bytes: int | None = None, max_line: int | None = None) -> Iterator[bytes]:
    """Blocks of whole lines, each about ``block_bytes`` long; a line longer than a block makes
    a longer block. A line over ``max_line`` bytes raises :class:`LineTooLong` as soon as that
    many bytes of it are read (memory stays bounded by the cap, not by the file)."""
    block_bytes = block_bytes or BLOCK_BYTES
    max_line = max_line or MAX_LINE_BYTES
    pending: list[bytes] = []  # an unfinished line, in the pieces it was read in (joined once)
    pending_bytes = 0
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        first, cut = chunk.find(b"\n"), chunk.rfind(b"\n")
        if cut < 0:
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes > max_line:
                raise LineTooLong(pending_bytes)
            continue
        if pending_bytes + first > max_line:
            raise LineTooLong(pending_bytes + first)
        pending.append(chunk[: cut + 1])
        yield b"".join(pending)
        rest = chunk[cut + 1:]
        pending, pending_bytes = ([rest], len(rest)) if rest else ([], 0)
    rest = b"".join(pending)
    if rest.strip():
        yield rest + b"\n"


def parse_json_block(block: bytes, parse_options=None):
    """A block of whole JSON Lines as an Arrow table. pyarrow parses in blocks of 1 MiB by
    default and refuses a line that straddles two of them, so a block holding a longer line is
    parsed as one block of its own size."""
    import pyarrow as pa
    import pyarrow.json as pj

    kwargs = {"parse_options": parse_options} if parse_options is not None else {}
    try:
        return pj.read_json(io.BytesIO(block), **kwargs)
    except pa.ArrowInvalid as e:
        if "straddl" not in str(e):
            raise
    return pj.read_json(io.BytesIO(block), read_options=pj.ReadOptions(block_size=len(block) + 1), **kwargs)


def _strings_not_timestamps(t):
    # pyarrow's JSON reader turns ISO-looking strings into timestamps; a round trip must give
    # back the same strings, so they stay strings.
    import pyarrow as pa

    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_strings_not_timestamps(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_strings_not_timestamps(t.value_type)))
    return t


def _json_error(location, first_row: int, e: Exception) -> InputError:
    text = str(e).strip().splitlines()
    return InputError(f"{location}: not valid JSON Lines near row {first_row + 1} "
                      f"({text[0] if text else type(e).__name__}); fix or remove the file")


_scan_cache: dict = {}


class JsonlFile:
    """A JSON Lines file (optionally compressed) with the read API of ``pyarrow.parquet.ParquetFile``
    that phifilter uses: ``schema_arrow``, ``metadata.num_rows``, ``iter_batches``, ``read``."""

    def __init__(self, location, fmt: Format, stat_key=None):
        self.location = location
        self.compression = fmt.compression
        key = (str(location), stat_key)
        if stat_key is None or key not in _scan_cache:
            scanned = self._scan()
            if stat_key is not None:
                _scan_cache[key] = scanned
        else:
            scanned = _scan_cache[key]
        self.schema_arrow, rows = scanned
        self.metadata = SimpleNamespace(num_rows=rows, num_row_groups=1)

    def _open(self):
        try:
            return input_stream(self.location, self.compression)
        except FileNotFoundError:
            raise InputError(f"{self.location}: no such file") from None
        except OSError as e:
            raise InputError(f"{self.location}: cannot open ({e})") from None

    def _blocks(self):
        stream = self._open()
        try:
            yield from iter_line_blocks(stream)
        except LineTooLong as e:
            raise InputError(f"{self.location}: a line is longer than {MAX_LINE_BYTES >> 20} MiB (at least {e} bytes), "
                             "the longest JSON Lines line phifilter reads; split that document or store the corpus "
                             "as Parquet") from None
        except (OSError, EOFError) as e:  # a truncated or corrupt .gz/.zst/.bz2
            raise InputError(f"{self.location}: corrupt {self.compression or 'file'} data ({e})") from None
        finally:
            stream.close()

    def _scan(self):
        import pyarrow as pa

        schema, rows = None, 0
        for block in self._blocks():
            try:
                table = parse_json_block(block)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise _json_error(self.location, rows, e) from None
            rows += table.num_rows
            block_schema = pa.schema([f.with_type(_strings_not_timestamps(f.type)) for f in table.schema])
            try:
                schema = block_schema if schema is None else pa.unify_schemas(
                    [schema, block_schema], promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise InputError(f"{self.location}: a field changes type near row {rows} ({e}); "
                                 "give every line the same field types") from None
        return (schema if schema is not None else pa.schema([])), rows

    def iter_batches(self, batch_size: int = 1024, columns: Sequence[str] | None = None,
                     skip_rows: int = 0, **_) -> Iterator:
        import pyarrow as pa
        import pyarrow.json as pj

        options = pj.ParseOptions(explicit_schema=self.schema_arrow, unexpected_field_behavior="error")
        row = 0
        for block in self._blocks():
            try:
                table = parse_json_block(block, options)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise _json_error(self.location, row, e) from None
            start, row = row, row + table.num_rows
            if row <= skip_rows:
                continue  # parsed only to count rows: JSON has no index to seek with
            table = table.slice(max(0, skip_rows - start))
            if columns:
                table = table.select(list(columns))
            for batch in table.to_batches(max_chunksize=batch_size):
                if batch.num_rows:
                    yield batch

    def read(self, columns: Sequence[str] | None = None):
        import pyarrow as pa

        schema = self.schema_arrow if not columns else pa.schema([self.schema_arrow.field(c) for c in columns])
        return pa.Table.from_batches(list(self.iter_batches(1 << 16, columns)), schema=schema)


class ArrowStreamFile:
    """An Arrow IPC stream file (a Hugging Face ``save_to_disk`` shard), same read API."""

    def __init__(self, location):
        self.location = location
        rows = 0
        with self._reader() as reader:
            self.schema_arrow = reader.schema
            for batch in reader:
                rows += batch.num_rows
        self.metadata = SimpleNamespace(num_rows=rows, num_row_groups=1)

    def _reader(self):
        import pyarrow as pa

        from .location import store_of

        try:
            # memory-mapped where local: counting rows reads nothing
            return pa.ipc.open_stream(store_of(self.location).arrow_input(self.location, memory_map=True))
        except FileNotFoundError:
            raise InputError(f"{self.location}: no such file") from None
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{self.location}: not a readable Arrow stream ({e})") from None

    def iter_batches(self, batch_size: int = 1024, columns: Sequence[str] | None = None,
                     skip_rows: int = 0, **_) -> Iterator:
        row = 0
        with self._reader() as reader:
            for batch in reader:
                start, row = row, row + batch.num_rows
                if row <= skip_rows:
                    continue
                batch = batch.slice(max(0, skip_rows - start))
                if columns:
                    batch = batch.select(list(columns))
                for offset in range(0, batch.num_rows, batch_size):
                    yield batch.slice(offset, batch_size)

    def read(self, columns: Sequence[str] | None = None):
        import pyarrow as pa

        schema = self.schema_arrow if not columns else pa.schema([self.schema_arrow.field(c) for c in columns])
        return pa.Table.from_batches(list(self.iter_batches(1 << 16, columns)), schema=schema)


def hf_data_files(folder) -> list | None:
    """The Arrow files of a ``save_to_disk`` folder in their order (None if it is not one)."""
    state = folder / HF_STATE
    try:
        doc = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    files = [f.get("filename") for f in doc.get("_data_files", []) if isinstance(f, dict)]
    if not files or not all(isinstance(f, str) and "/" not in f for f in files):
        return None
    return [folder / f for f in files]


# ---------------------------------------------------------------------------------------------
# writing


def _json_default(value):
    import base64
    import datetime
    import decimal

    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class JsonlWriter:
    """Write record batches as JSON Lines (one object per row, fields in schema order, UTF-8 kept
    as is) into a binary file object, compressed as the output's name says."""

    def __init__(self, sink, compression: str | None):
        import pyarrow as pa

        self._raw = sink
        self._out = pa.CompressedOutputStream(sink, compression) if compression else sink

    def write_batch(self, batch) -> None:
        dumps = json.JSONEncoder(ensure_ascii=False, default=_json_default, separators=(", ", ": ")).encode
        lines = "".join(dumps(row) + "\n" for row in batch.to_pylist())
        self._out.write(lines.encode("utf-8"))

    def close(self) -> None:
        if self._out is not self._raw:
            self._out.close()  # flushes the compressor; the caller closes the underlying file


def open_writer(sink, name: str, schema, parquet_compression: str = "zstd"):
    """A writer with ``write_batch`` and ``close`` for the format ``name`` says (Parquet by default)."""
    import pyarrow.parquet as pq

    fmt = detect(name) or Format(PARQUET)
    if fmt.kind == JSONL:
        return JsonlWriter(sink, fmt.compression)
    if fmt.kind == ARROW:
        import pyarrow as pa

        return pa.ipc.new_stream(sink, schema)
    return pq.ParquetWriter(sink, schema, compression=parquet_compression)
