"""Run statistics (``--stats-json PATH``): write a command's statistics as one JSON file, atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .corpus import temp_path_for
from .errors import OutputError


def write_stats(path: str | os.PathLike, stats: dict) -> Path:
    """Write ``stats`` to ``path`` (a hidden temporary, fsync, rename): never a half-written file."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(stats, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the statistics ({e.strerror or e}); choose another --stats-json") from None
    return path
