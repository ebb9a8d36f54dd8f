"""The streaming part of `phifilter contamination`: batches of rows in, one Parquet part per
batch (written atomically, so a killed run resumes at the first missing part), then the parts
joined into ``contamination.parquet`` and the summary written (see :mod:`phifilter.contamination`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

RESULT = "contamination.parquet"
PARTS = "parts"


def log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def part_path(out: Path, shard_index: int, first_row: int) -> Path:
    return out / PARTS / f"p{shard_index:05d}-{first_row:010d}.parquet"


def audit_shards(shards, out: Path, matcher, batch_rows: int, text_column: str, id_column: str,
                 progress: bool, stats: dict) -> None:
    """Fill ``out/parts`` with every batch not yet written (nothing when the result exists)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import write_atomic
    from .corpus import check_text_column, iter_batches, open_parquet, texts_from_array

    types = _types()
    rows = {"in": 0, "computed": 0, "resumed": 0}
    began = time.monotonic()
    if (out / RESULT).is_file():
        rows["in"] = rows["resumed"] = pq.ParquetFile(out / RESULT).metadata.num_rows
        log(progress, f"{out / RESULT}: already complete; summary rewritten")
    else:
        for k, shard in enumerate(shards):
            pf = open_parquet(shard.path)
            check_text_column(pf.schema_arrow, text_column, shard.path)
            columns = [text_column] + ([id_column] if id_column in pf.schema_arrow.names and id_column != text_column else [])
            row = 0
            for batch in iter_batches(shard.path, batch_size=batch_rows, columns=columns, parquet_file=pf):
                path = part_path(out, k, row)
                n = batch.num_rows
                if path.is_file():
                    rows["resumed"] += n
                else:
                    cols = matcher.match(texts_from_array(batch.column(text_column)))
                    table = {}
                    if len(columns) > 1:
                        table[id_column] = batch.column(id_column)
                    table["shard"] = pa.array([str(shard.name)] * n, pa.string())
                    table["row"] = pa.array(range(row, row + n), pa.int64())
                    for name, values in cols.items():
                        table[name] = pa.array(values, types[name])
                    write_atomic(path, lambda tmp, t=pa.table(table): pq.write_table(t, tmp))
                    rows["computed"] += n
                    log(progress, f"{shard.name}: rows {row:,}-{row + n - 1:,} "
                                  f"({rows['computed'] / max(1e-9, time.monotonic() - began):.1f} docs/s)")
                row += n
                rows["in"] += n
        _join_parts(shards, out)
    stats["rows"] = rows
    stats["shards"] = {"read": len(shards)}
    stats["stages"]["match_seconds"] = round(time.monotonic() - began, 6)
    stats["stages"]["syntax_seconds"] = round(matcher.seconds["syntax"], 6)
    stats["stages"]["embedding_seconds"] = round(matcher.seconds["embedding"], 6)
    stats["embedding_chunks"] = matcher.chunks
    stats["syntax_full_comparisons"] = matcher.index.pairs_compared if matcher.index else 0


def _types():
    import pyarrow as pa

    f, s, i = pa.float64(), pa.string(), pa.int64()
    return {"max_similarity": f, "nearest_problem": s, "method": s, "match_first_line": i, "match_last_line": i,
            "embedding_similarity": f, "embedding_problem": s, "syntax_similarity": f, "syntax_problem": s,
            "syntax_method": s}


def _join_parts(shards, out: Path) -> None:
    """Every part in corpus order into ``contamination.parquet`` (atomically), then the parts go."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from .atomic import write_atomic

    parts = sorted((out / PARTS).glob("p*.parquet")) if (out / PARTS).is_dir() else []
    tables = [pq.read_table(p) for p in parts]
    if tables:
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # id columns of different types
            table = pa.concat_tables([t.set_column(0, t.column_names[0], t.column(0).cast(pa.string()))
                                      if t.column_names[0] not in ("shard",) else t for t in tables],
                                     promote_options="permissive")
    else:
        table = pa.table({"shard": pa.array([], pa.string()), "row": pa.array([], pa.int64()),
                          **{k: pa.array([], v) for k, v in _types().items()}})
    write_atomic(out / RESULT, lambda tmp: pq.write_table(table, tmp))
    shutil.rmtree(out / PARTS, ignore_errors=True)


def finish(shards, out: Path, problems, text_column: str, top: int, stats: dict) -> dict:
    """The summary files from ``contamination.parquet`` and the inputs (for the top matches)."""
    import pyarrow.parquet as pq

    from .contamination_report import summarise, write_summary

    began = time.monotonic()
    table = pq.read_table(out / RESULT)
    summary = summarise(table, shards, problems, text_column, top)
    write_summary(summary, out)
    stats["stages"]["summary_seconds"] = round(time.monotonic() - began, 6)
    return summary
