"""Run untrusted generated code: a subprocess in a temporary folder, with limits and no network.

Layers, each cheap, none sufficient alone:

1. A fresh temporary working folder (also HOME and TMPDIR), deleted afterwards; stdin closed
   after the program is read; a minimal environment; ``python -I`` (no user site, no env vars).
2. Resource limits (``setrlimit``): CPU seconds, address space, file size, open files, no core
   dumps; the whole process group is killed at the wall-clock timeout.
3. No network: when ``unshare -n`` works (root, or unprivileged user namespaces) the program
   runs in an empty network namespace; as root it also drops to uid/gid 65534 where that user
   can run the interpreter.
4. A Python audit hook installed before the program runs refuses: writing, creating, deleting
   or renaming files outside the working folder, changing directory, starting processes,
   sockets, and ctypes. Audit hooks cannot be removed from Python code.

This is the level of care the HumanEval authors ask for when running model samples on a
development machine. It is not a security boundary against an adversary who targets it;
run large evaluations of unknown models inside a container or VM as well.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

MEMORY_LIMIT = 2 << 30  # bytes of address space
FILE_LIMIT = 16 << 20  # largest file the program may write
OUTPUT_LIMIT = 4096  # characters of stdout/stderr kept for the report

# Runs inside the child: read the program, lock down, execute it as __main__.
GUARD = r'''
import os, sys
program = sys.stdin.read()
sys.stdin.close()
ROOT = os.path.realpath(os.getcwd())
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link",
               "os.chmod", "os.chown", "os.truncate", "os.utime", "os.setxattr",
               "os.removexattr", "shutil.copyfile", "shutil.copymode", "shutil.copystat",
               "shutil.copytree", "shutil.move", "shutil.rmtree", "shutil.chown"}
DENIED_PREFIXES = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                   "os.forkpty", "pty.", "socket.", "ctypes.", "os.chdir", "os.fchdir",
                   "os.chroot", "os.kill", "os.killpg", "signal.pthread_kill", "os.system",
                   "os.startfile", "webbrowser.", "sys.remote_exec", "sys.setprofile")
_realpath, _join, _fspath, _sep = os.path.realpath, os.path.join, os.fspath, os.sep

def _inside(path):
    if isinstance(path, int):
        return True  # an already-open descriptor (stdout, or a file opened inside)
    try:
        p = _realpath(_join(ROOT, _fspath(path)))
    except Exception:
        return False
    if isinstance(p, bytes):
        p = p.decode(errors="replace")
    return p == ROOT or p.startswith(ROOT + _sep)

def _hook(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = bool(mode and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the working folder: {path!r}")
    elif event in PATH_EVENTS:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not _inside(a):
                raise PermissionError(f"sandbox: {event} outside the working folder: {a!r}")
    elif event.startswith(DENIED_PREFIXES):
        raise PermissionError(f"sandbox: {event} is not allowed")

code = compile(program, "<completion>", "exec")
sys.addaudithook(_hook)
exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
'''


@dataclass
class ExecResult:
    status: str  # "passed", "failed" (non-zero exit or exception), "timeout"
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.lru_cache(maxsize=None)
def isolation_prefix() -> tuple[str, ...]:
    """The strongest working command prefix for network isolation (empty if none works)."""
    unshare = shutil.which("unshare")
    if not unshare:
        return ()
    candidates = []
    if os.geteuid() == 0:
        candidates += [(unshare, "-n", "-S", "65534", "-G", "65534", "--"), (unshare, "-n", "--")]
    candidates.append((unshare, "-r", "-n", "--"))
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, sys.executable, "-I", "-c", "pass"], capture_output=True,
                                   timeout=20, cwd=tempfile.gettempdir())
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return tuple(prefix)
    return ()


def isolation_summary() -> str:
    prefix = isolation_prefix()
    if not prefix:
        return "audit hook and rlimits (no network namespace available)"
    text = "network namespace (unshare -n)"
    if "-S" in prefix:
        text += ", uid 65534"
    return text + ", audit hook, rlimits"


def _limits(cpu_seconds: int) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()
    for res, value in (
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_AS, MEMORY_LIMIT),
        (resource.RLIMIT_FSIZE, FILE_LIMIT),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass  # a limit the platform does not allow lowering; the others still apply


def run_program(program: str, timeout: float = 3.0) -> ExecResult:
    """Execute ``program`` in the sandbox; passed means exit status 0 within ``timeout`` seconds."""
    workdir = tempfile.mkdtemp(prefix="phifilter-sandbox-")
    prefix = isolation_prefix()
    if "-S" in prefix:
        os.chown(workdir, 65534, 65534)  # the dropped-privilege user must own its folder
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    cmd = [*prefix, sys.executable, "-I", "-c", GUARD]
    try:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=functools.partial(_limits, int(timeout) + 1),
            close_fds=True,
        )
        try:
            out, _ = proc.communicate(program.encode("utf-8", "replace"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            return ExecResult("timeout", _tail(out))
        return ExecResult("passed" if proc.returncode == 0 else "failed", _tail(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child called setsid: its pid is the group id
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(out: bytes | None) -> str:
    text = (out or b"").decode("utf-8", "replace")
    return text[-OUTPUT_LIMIT:]
