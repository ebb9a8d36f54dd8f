"""Owned outputs: write a file or folder atomically, and only where phifilter replaces its own files.

Every command that writes goes through here before doing any work:

* :func:`claim_folder` refuses an output folder that holds a file this command did not write
  (``train labels/x.parquet -o labels`` must never empty ``labels/``), an output that is an
  input folder or lies inside one, and a folder that cannot be written to (read-only), with
  one line naming the folder and the fix. Hidden entries (``.name``: our temporaries, lock and
  checkpoints) are not counted.
* :func:`claim_file` does the same for a single output file: not an input, not inside an input
  folder that is searched recursively, not a folder, and its folder writable.
* :func:`write_atomic` and :func:`write_text` (from :mod:`phifilter.atomic`, which owns every
  temporary name, atomic write and folder replacement) write a file under a hidden temporary
  name beside it and rename it into place, so a file that exists is whole.

Which existing files count as "ours" is the caller's predicate; :func:`named` and
:func:`parquet_record_of` build the usual ones. Model folders are replaced whole
(:func:`phifilter.atomic.replace_folder`, ``EduClassifier.save``), after :func:`claim_folder`
with :func:`is_model_file`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .atomic import write_atomic, write_text  # noqa: F401  (re-exported: the owned-output API)
from .corpus import check_output_dir, input_roots
from .formats import detect
from .location import as_location, check_writable_store, store_of
from .errors import OutputError

Owned = Callable[[Path], bool]


def _visible_files(folder: Path) -> list[Path]:
    # not hidden: our temporaries, lock file, checkpoint folders are
    return [p for p in sorted(store_of(folder).walk(folder, folders=False))
            if not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def claim_folder(folder: str | os.PathLike, is_ours: Owned, what: str = "outputs",
                 inputs: Sequence[str | os.PathLike] | None = None) -> Path:
    """Check that ``folder`` may receive this command's outputs; returns it as a Path.

    Absent or empty is fine; existing visible files must all pass ``is_ours``. Nothing is
    created or changed here.
    """
    check_writable_store(folder, what)
    folder = as_location(folder)
    if inputs:
        check_output_dir(inputs, folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a folder; choose a folder for the {what}")
    if folder.is_dir():
        foreign = [p for p in _visible_files(folder)
                   if not is_ours(p) and not (p.name.endswith(".json") and is_stats_file(p))]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputError(
                f"{folder}: holds {foreign[0].relative_to(folder)}{more}, which phifilter did not write "
                f"as {what}; choose an empty or new output folder (nothing was changed)"
            )
    store_of(folder).check_writable(folder, what)
    return folder


def claim_file(path: str | os.PathLike, what: str = "the output",
               inputs: Iterable[str | os.PathLike] | None = None, is_ours: Owned | None = None,
               option: str = "-o", others: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Check that the single file ``path`` may be written, before any work; returns it.

    Refused, with one line naming ``option``: a folder; an input file; a file inside an input
    folder that is searched recursively; a path that is also another output of this command
    (``others``: the ``-o`` file, a cache); an existing file that ``is_ours`` does not
    recognise as one phifilter wrote as ``what`` (when ``is_ours`` is given); an unwritable
    folder. Nothing is created or changed here.
    """
    check_writable_store(path, what)
    path = as_location(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for {what} ({option}), e.g. {path / 'out'}")
    target = path.resolve()
    for spec in inputs or ():
        spec_path = as_location(spec)
        if spec_path.is_file() and spec_path.resolve() == target:
            raise OutputError(f"{path}: is an input file; choose another {option} (inputs are never written)")
    for root, recursive in input_roots(inputs or ()):
        if recursive and type(root) is type(target) and root.resolve() in target.parents:
            raise OutputError(
                f"{path}: lies inside the input folder {root}; write {what} outside it (choose another {option})"
            )
    for other in others:
        if other is not None and as_location(other).resolve() == target:
            raise OutputError(f"{path}: is also this command's {_other_name(other)}; choose another {option}")
    if is_ours is not None and path.is_file() and not is_ours(path):
        raise OutputError(f"{path}: exists and phifilter did not write it as {what}; choose another {option} "
                          "or move the file away (nothing was changed)")
    store_of(path).check_writable(path.parent, what, option if option != "-o" else "output location")
    return path


def _other_name(other) -> str:
    return "output" if not str(other).endswith((".sqlite", ".db")) else "cache"


def claim_stats(path: str | os.PathLike | None, inputs: Iterable[str | os.PathLike] | None = None,
                others: Iterable[str | os.PathLike | None] = (), output_dir: str | os.PathLike | None = None):
    """Claim the ``--stats-json`` file (see :func:`claim_file`); None passes through.

    An existing file there must be a statistics file phifilter wrote (:func:`is_stats_file`):
    never an input shard, a label cache or anybody's notes. ``output_dir``: the folder of
    shards this command writes; a statistics file there may not have a shard's name.
    """
    if path is None:
        return None
    claimed = claim_file(path, "run statistics", inputs=inputs, is_ours=is_stats_file, option="--stats-json",
                         others=others)
    if output_dir is not None and detect(claimed.name) is not None:
        folder = as_location(output_dir).resolve()
        if type(folder) is type(claimed) and folder in claimed.resolve().parents:
            raise OutputError(f"{path}: has a shard's name inside the output folder {output_dir}; "
                              "choose another --stats-json (e.g. ending in .stats.json outside it)")
    return claimed


# ---------------------------------------------------------------------------------------------
# ownership predicates


def named(*names: str) -> Owned:
    """Ours if the file (at the folder's top) has one of these names."""
    wanted = set(names)
    return lambda p: p.name in wanted


def parquet_record_of(command: str, legacy: Owned | None = None) -> Owned:
    """Ours if a Parquet file carries a run record (naming ``command``, when it names one),
    or has none and ``legacy`` accepts it (outputs of phifilter versions before records)."""

    def check(p: Path) -> bool:
        from .provenance import read_record

        if detect(p.name) is None:  # Parquet, JSON Lines (record in a sidecar), ...
            return False
        record = read_record(p)
        if record is not None:
            return record.get("command", command) == command
        return bool(legacy and legacy(p))

    return check


def has_column(name: str) -> Owned:
    """Ours if a Parquet file has this column (how older phifilter outputs are recognised)."""

    def check(p: Path) -> bool:
        import pyarrow as pa

        from .corpus import open_parquet
        from .errors import PhifilterError

        try:
            return p.suffix == ".parquet" and name in open_parquet(p).schema_arrow.names
        except (pa.ArrowException, OSError, PhifilterError):
            return False

    return check


def is_model_file(p: Path) -> bool:
    """Ours if the folder's phifilter.json is a phifilter model's and ``p`` is its metadata, its
    card or a part that metadata lists (a lexical scorer's ``lexical.bin`` too, not only the head)."""
    import json

    from .modelfolder import CALIBRATION_FILE, CARD_FILE, FORMAT, HEAD_FILE, META_FILE

    if p.parent.name == "":
        return False
    try:
        meta = json.loads((p.parent / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return False
    listed = meta.get("files") if isinstance(meta.get("files"), dict) else {}
    return p.name in (META_FILE, HEAD_FILE, CALIBRATION_FILE, CARD_FILE) or p.name in listed


STATS_MARK = "phifilter_stats"  # the key every --stats-json file carries (its format version)
STATS_FORMAT = 1
_COMMANDS = {"score", "filter", "embed", "sample", "report", "label", "ablate", "train", "evaluate"}


def is_stats_file(p: Path) -> bool:
    """Ours if it is one JSON object carrying :data:`STATS_MARK` (or, written before the mark,
    one naming a phifilter command with its ``seconds``)."""
    import json

    try:
        if store_of(p).stat(p).size > 64 << 20:
            return False  # no statistics file is this big: do not read a corpus shard to find out
        doc = json.loads(p.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return STATS_MARK in doc or (doc.get("command") in _COMMANDS and "seconds" in doc)


REPORT_MARK = "<!-- written by phifilter report -->"
_PAGE_HEAD = '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport"'


def is_report_file(p: Path) -> bool:
    """Ours if the HTML page carries :data:`REPORT_MARK` (or, written before the mark, begins
    exactly as every phifilter page does)."""
    try:
        with p.open("rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return REPORT_MARK in head or head.startswith(_PAGE_HEAD)
