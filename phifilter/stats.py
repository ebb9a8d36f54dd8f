"""Run statistics (``--stats-json PATH``): write a command's statistics as one JSON file, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import OutputError


def rate(rows: int, seconds: float) -> float:
    """Documents per second, rounded as every ``--stats-json`` records it (0 for an instant run)."""
    return round(rows / seconds, 3) if seconds > 0 else 0.0


def write_stats(path: str | os.PathLike, stats: dict) -> Path:
    """Write ``stats`` to ``path``, a local file or a URL (``s3://...``), atomically: a hidden
    temporary renamed into place (on an object store: published whole), never a half-written file."""
    from .atomic import write_text
    from .location import as_location
    from .outputs import STATS_FORMAT, STATS_MARK, is_stats_file

    # Claimed before the run (outputs.claim_stats); checked again here, in case a file that is
    # not ours appeared at the path meanwhile: it is never replaced.
    location = as_location(path)
    try:
        foreign = location.is_dir() or (location.is_file() and not is_stats_file(location))
    except OSError:
        foreign = False
    if foreign:
        raise OutputError(f"{path}: exists and phifilter did not write it as run statistics; "
                          "choose another --stats-json or move the file away (nothing was changed)")
    text = json.dumps({STATS_MARK: STATS_FORMAT, **stats}, indent=1, sort_keys=True) + "\n"
    try:
        return write_text(path, text)
    except OutputError as e:
        raise OutputError(f"{e}; choose another --stats-json") from None
