"""`phifilter status OUT [INPUTS]`: which shards of a scoring run are done, partial or missing.

Reads only footers, run records, checkpoint manifests and shard leases, so it is safe to run
beside the runs writing the folder (it takes no lock and writes nothing). A shard is "writing"
while a live run holds its lease (:func:`phifilter.leases.live_holder`); a lease a killed run
left is dead and not counted. With the inputs given,
every input shard is accounted for, and an output made from another input is "stale".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import provenance
from ..corpus import completed_rows, find_shards, open_parquet, partial_dir_for
from ..errors import InputError, OutputError
from ..leases import LEASE_MARK, describe, live_holder, output_of_lease
from ..location import as_location

STATES = ("done", "partial", "stale", "missing")


@dataclass
class ShardStatus:
    name: str
    state: str  # one of STATES
    rows: int = 0  # rows finished (done: all; partial: checkpointed)
    expected: int | None = None  # the input's rows (None when the inputs were not given)
    reason: str = ""


@dataclass
class StatusReport:
    output_dir: str
    shards: list[ShardStatus] = field(default_factory=list)
    running: list[str] = field(default_factory=list)  # "shard (pid P on HOST)": shards a live run holds the lease of

    def count(self, state: str) -> int:
        return sum(s.state == state for s in self.shards)

    @property
    def complete(self) -> bool:
        return all(s.state == "done" for s in self.shards)

    def as_dict(self) -> dict:
        return {"output": self.output_dir, "complete": self.complete, "running": self.running,
                "counts": {state: self.count(state) for state in STATES},
                "shards": [vars(s) for s in self.shards]}

    def __str__(self) -> str:
        lines = [f"{self.output_dir}: " + ", ".join(f"{self.count(s)} {s}" for s in STATES)
                 + (" - complete" if self.complete and self.shards else "")]
        for s in self.shards:
            if s.state == "done":
                continue
            detail = f"{s.rows:,} of {s.expected:,} rows" if s.expected is not None else f"{s.rows:,} rows"
            lines.append(f"  {s.state:<8} {s.name} ({detail}{'; ' + s.reason if s.reason else ''})")
        if self.running:
            lines.append("writing now: " + ", ".join(self.running))
        return "\n".join(lines)


def live_leases(out_dir) -> list[str]:
    """The shards under ``out_dir`` whose lease a live run holds, with the holder."""
    found = []
    for lease in out_dir.rglob(f".*{LEASE_MARK}"):
        name = output_of_lease(lease)
        holder = live_holder(lease) if name else None
        if holder is not None:
            rel = (lease.parent / name).relative_to(out_dir)
            found.append(f"{rel} ({describe(holder)})")
    return sorted(found)


def _checkpointed_rows(out_path: Path) -> int | None:
    try:
        doc = json.loads((partial_dir_for(out_path) / "manifest.json").read_text())
        return int(doc.get("rows", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def shard_status(name: str, out_path: Path, score_column: str, input_path: Path | None = None) -> ShardStatus:
    expected = open_parquet(input_path).metadata.num_rows if input_path is not None else None
    rows = completed_rows(out_path, score_column)
    if rows is not None and (expected is None or rows == expected):
        if input_path is not None:
            record = provenance.read_record(out_path) or {}
            if record.get("input") != provenance.fingerprint(input_path):
                return ShardStatus(name, "stale", rows, expected, "input changed" if record else "no run record")
        return ShardStatus(name, "done", rows, expected)
    checkpointed = _checkpointed_rows(out_path)
    if checkpointed is not None:
        return ShardStatus(name, "partial", checkpointed, expected)
    if rows is not None:
        return ShardStatus(name, "stale", rows, expected, f"has {rows} rows")
    return ShardStatus(name, "missing", 0, expected)


def scoring_status(output_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (),
                   score_column: str = "edu_score") -> StatusReport:
    """The state of every shard of a scoring run into ``output_dir`` (of every input, when given)."""
    out_dir = as_location(output_dir)  # a local folder or a URL
    if not out_dir.is_dir():
        if not inputs:
            raise OutputError(f"{output_dir}: no such output folder")
    report = StatusReport(str(output_dir))
    if out_dir.is_dir():
        report.running = live_leases(out_dir)
    if inputs:
        for s in find_shards(list(inputs)):
            report.shards.append(shard_status(str(s.name), out_dir / s.name, score_column, s.path))
        return report
    try:
        outputs = find_shards([out_dir])
    except InputError:
        outputs = []
    names = {str(s.name) for s in outputs}
    for s in outputs:
        report.shards.append(shard_status(str(s.name), s.path, score_column))
    for partial in sorted(out_dir.rglob(".*.partial")):  # shards begun but without an output yet
        name = str((partial.parent / partial.name[1:].removesuffix(".partial")).relative_to(out_dir))
        if name not in names:
            report.shards.append(shard_status(name, out_dir / name, score_column))
    report.shards.sort(key=lambda s: s.name)
    return report
