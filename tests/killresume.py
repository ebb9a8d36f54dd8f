"""Kill-and-resume harness: SIGKILL a real `phifilter` subprocess at random points, rerun, compare.

A :class:`KillResumeCase` says how to run one command and how to judge it:

* ``argv``: the arguments after ``python -m phifilter`` (the same for every run);
* ``progress``: a function returning how much work is visible on disk now (rows checkpointed,
  shards finished, answers cached, ...), or None to kill after a random delay instead;
* ``total``: the progress of a finished run (kill targets are drawn below it);
* ``compare``: asserts that the finished output equals the uninterrupted reference run;
* ``outputs``: files or folders that must hold no temporaries once the rerun has finished;
* ``after_kill`` (optional): invariants that must hold right after each kill (for example:
  every published output file is whole).

:func:`run_kill_resume` runs the command ``kills`` times, each time SIGKILLing it once the
progress has reached a random target (plus a random few milliseconds), checks ``after_kill``,
then lets a final run finish and checks ``compare`` and the absence of temporaries. Each kill
continues from what the previous killed runs left, so one chain exercises repeated resumes.

Adding a command is a few lines, e.g. for `embed` (once it exists)::

    case = KillResumeCase(
        argv=["embed", str(src), "-o", str(out), "-q"],
        progress=lambda: rows_in_folder(out),          # rows of finished + checkpointed shards
        total=n_rows,
        compare=lambda: assert_tables_equal(ref, out),
        outputs=[out],
    )
    records = run_kill_resume(case, seed)

and for `ablate` (its progress: finished (arm, seed) results on disk; the comparison: the
results table equals an uninterrupted run's)::

    case = KillResumeCase(argv=["ablate", scored, "-o", out, "--preset", "tiny", ...],
                          progress=lambda: len(list(out.glob("runs/*/result.json"))), total=n_runs,
                          compare=lambda: assert_results_equal(ref, out), outputs=[out])
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pyarrow.parquet as pq

from conftest import REPO, cli_env

# ".lock": an output lock (``.phifilter.lock``, ``<cache>.lock``) is deleted by the run that ends;
# ".lease": a shard's lease file (phifilter.leases) goes when its shard is done
TEMPORARY_MARKS = (".tmp-", ".partial", ".old-", ".repack", ".lock", ".lease")
STOP_GRACE_S = 120.0  # how long a run may take to stop cleanly after SIGTERM or SIGINT


@dataclass
class KillResumeCase:
    argv: Sequence[str]
    compare: Callable[[], None]
    outputs: Sequence[Path]
    progress: Callable[[], int] | None = None
    total: int | None = None
    kill_window: tuple[float, float] = (0.5, 5.0)  # seconds after start, when progress is None
    jitter: float = 0.05  # extra random seconds after the progress target is reached
    after_kill: Callable[[], None] | None = None
    env: dict | None = None
    timeout: float = 300.0


@dataclass
class KillRecord:
    seed: int
    attempt: int
    target: float  # progress target (or delay in seconds) drawn for this kill
    progress: int | None  # progress on disk right after the kill
    killed: bool  # False: the run had already finished when the kill came
    returncode: int | None = None


@dataclass
class ChainResult:
    records: list[KillRecord] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.records)


def temporaries(paths: Sequence[Path]) -> list[Path]:
    """Hidden temporaries, checkpoint folders and half-swapped folders under ``paths``."""
    found = []
    for root in paths:
        root = Path(root)
        candidates = [root] if root.exists() else []
        if root.is_dir():
            candidates += list(root.rglob("*"))
        # a file output's temporaries live next to it
        candidates += [p for p in root.parent.glob(f".{root.name}*")]
        found += [p for p in candidates if any(m in p.name for m in TEMPORARY_MARKS)]
    return sorted(set(found))


def locks(paths: Sequence[Path]) -> list[Path]:
    """Lock files (``.phifilter.lock``, ``<cache>.lock``) under or beside ``paths``."""
    return [p for p in temporaries(paths) if p.name.endswith(".lock") or ".phifilter.lock" in p.name]


def _popen(case: KillResumeCase) -> subprocess.Popen:
    env = cli_env()
    env.update(case.env or {})
    return subprocess.Popen([sys.executable, "-m", "phifilter", *map(str, case.argv)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig``; a run told to stop (SIGTERM, SIGINT) must end by itself within the grace time."""
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        proc.wait()
        return
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {STOP_GRACE_S:g} s after {signal.Signals(sig).name}") from None


def run_kill_resume(case: KillResumeCase, seed: int, kills: int = 3, sig: int = signal.SIGKILL) -> ChainResult:
    """Stop the command with ``sig`` (SIGKILL, SIGTERM or SIGINT) ``kills`` times at random points,
    then finish it and check the result. A run stopped by SIGTERM or SIGINT must end within
    :data:`STOP_GRACE_S` without a traceback (exit 130 for SIGINT, 143 for SIGTERM, or killed by
    the signal where no command is running to stop)."""
    rng = random.Random(seed)
    result = ChainResult()
    for attempt in range(kills):
        before = case.progress() if case.progress else 0
        proc = _popen(case)
        deadline = time.monotonic() + case.timeout
        if case.progress is not None:
            hi = max(before + 1, (case.total or before + 1) - 1)
            target = rng.uniform(before + 1, hi) if hi > before + 1 else before + 1
            while proc.poll() is None and case.progress() < target and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, case.jitter))
        else:
            target = rng.uniform(*case.kill_window)
            try:
                proc.wait(timeout=target)
            except subprocess.TimeoutExpired:
                pass
        killed = proc.poll() is None
        if killed:
            _stop(proc, sig)
        else:
            proc.wait()
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        if not killed and proc.returncode != 0:
            raise AssertionError(f"phifilter {' '.join(map(str, case.argv))} failed before the kill:\n{err}")
        assert "Traceback" not in err, err
        if killed and sig == signal.SIGINT:
            # 0: it finished as the signal came; -2: it came while the interpreter exited after the
            # command returned, when Python has put back the default handler (as for SIGTERM below)
            assert proc.returncode in (130, 0, -signal.SIGINT), (proc.returncode, err)
        if killed and sig == signal.SIGTERM:  # stopped as on Ctrl-C (143), or killed by the signal
            # (-15) where no command is running to stop: while the interpreter starts, before the
            # CLI sets its handler, or while it exits after the command returned; the output
            # checks below hold either way
            assert proc.returncode in (143, 0, -signal.SIGTERM), (proc.returncode, err)
        if killed and sig != signal.SIGKILL:  # a run that stopped by itself released its locks
            assert not locks(case.outputs), f"locks left after {signal.Signals(sig).name}: {locks(case.outputs)}"
        result.records.append(KillRecord(seed, attempt, target, case.progress() if case.progress else None,
                                         killed, proc.returncode))
        if case.after_kill:
            case.after_kill()
        if not killed:
            break  # it finished: nothing left to interrupt
    env = cli_env()
    env.update(case.env or {})
    final = subprocess.run([sys.executable, "-m", "phifilter", *map(str, case.argv)], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=case.timeout)
    if final.returncode != 0:
        raise AssertionError(f"the resumed run failed:\n{final.stdout}\n{final.stderr}")
    left = temporaries(case.outputs)
    assert not left, f"temporaries left after the resumed run: {left}"
    case.compare()
    return result


# ---------------------------------------------------------------------------------------------
# progress probes shared by the cases


def parquet_rows(folder: Path) -> int:
    """Rows in published Parquet files plus rows checkpointed in partial-shard manifests."""
    rows = 0
    if not folder.is_dir():
        return 0
    for p in folder.rglob("*.parquet"):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        try:
            rows += pq.ParquetFile(p).metadata.num_rows
        except Exception:  # noqa: BLE001 - a file being replaced this instant
            pass
    for m in folder.rglob("manifest.json"):
        try:
            rows += int(json.loads(m.read_text()).get("rows", 0))
        except (OSError, ValueError):
            pass
    return rows


def published_files_are_whole(folder: Path) -> None:
    """Every visible Parquet file under ``folder`` has a readable footer and all its rows."""
    for p in folder.rglob("*.parquet") if folder.is_dir() else []:
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        table = pq.read_table(p)  # raises on a half-written file
        assert table.num_rows == pq.ParquetFile(p).metadata.num_rows
