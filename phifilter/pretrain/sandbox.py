"""Run untrusted generated code (pass@k) inside a bubblewrap sandbox that is a boundary.

What the sandbox is
    ``bwrap --unshare-all`` (bubblewrap): new user, PID, mount, IPC, network, UTS and cgroup
    namespaces. The filesystem is an empty root with only the interpreter's own prefix (its
    ``site-packages`` hidden by an empty read-only mount) and the shared libraries it links
    (``/usr/lib``, ``/usr/lib64`` and their ``/lib`` links) bound read-only, a fresh ``/proc``
    of the new PID namespace, a minimal ``/dev``, and a size-capped private tmpfs at ``/tmp``,
    the working folder and the only writable place. Nothing else of the host is there: no
    project, no home, no ``/etc``, no shell or other programs. The environment is emptied
    (``--clearenv``) and set to PATH, HOME, TMPDIR and LANG only. The code runs as uid/gid 65534
    inside, with no capabilities, in its own session (``--new-session``: no terminal to push
    input into), and ``--die-with-parent``: when bwrap dies, its PID namespace dies with it, and
    every process the code started dies with that.

    Not root on the host either: run as root, bwrap would map the sandbox's uid to host uid 0
    (and the kernel exempts uid 0 from the process-count limit). So as root an outer bwrap (real
    root, a mount namespace only) binds the interpreter where any user can reach it, drops to a
    fresh unused host uid (one per run, like systemd's DynamicUser, so concurrent runs do not
    share a process count) with ``setpriv``, and runs the sandbox above from there, through
    unprivileged user namespaces. Run as another user, the sandbox is started directly.

    Limits, set in the child before exec and inherited by everything inside: processes
    (:data:`PROCESS_LIMIT` beyond what the uid already runs), address space
    (:data:`MEMORY_LIMIT`), CPU seconds (the timeout plus one), file size (:data:`FILE_LIMIT`),
    open files (64), no core dumps; the tmpfs holds at most :data:`TMPFS_SIZE` bytes. The
    parent reads the output through one pipe, keeping at most :data:`OUTPUT_LIMIT` characters,
    and at the wall-clock timeout kills bwrap's whole process group, which takes the namespace
    down: a process holding stdout open cannot make a run outlast its timeout.

What passes
    A program passes only when it ran to its end and returned normally. Like HumanEval's harness,
    any exception out of the program fails it, ``SystemExit`` included (``sys.exit(0)``,
    ``exit()``, ``raise SystemExit(0)``). Unlike an exception, ``os._exit(0)``, ``os.execv`` of
    another program or a signal would end the process with whatever status the code chooses, so
    the status of the process that runs the code is not trusted: a supervisor process forks
    the process that runs the code and waits for it; the child, once the program has returned,
    writes one byte to a pipe and exits 0; the supervisor exits 0 only when the child exited 0
    *and* that byte arrived, and its exit status is the sandbox's. A printed per-run token
    (read by the parent in the output) was the other design; it gives nothing more: any secret
    the harness holds while the code runs is the code's to read (its memory, its descriptors),
    so a token only moves the question to how the secret is kept. Here there is no secret: the
    code cannot reach the supervisor's exit status, and the supervisor sets itself non-dumpable
    so the code (same uid) can neither ptrace it nor open its descriptors through /proc.

What it does not promise
    Code written to fool this harness on purpose can still make a failing program pass: it can
    find the pipe's descriptor and write the byte itself, as code in HumanEval's harness can
    write to its result list. pass@k measures models, not adversaries; the promise is about the
    host: whatever the code does, it runs unprivileged, sees and changes nothing of the host, and
    is gone when the run returns. Kernel bugs (the sandbox shares the host's kernel) and CPU side
    channels are outside it; run evaluations of unknown models in a VM as well if that matters.

Without isolation
    Where bwrap is missing or fails its self-check (:func:`sandbox_problem`), :func:`run_program`
    and pass@k refuse with one ``Error:`` line naming the fix. Setting the environment variable
    ``PHIFILTER_UNSAFE_NO_SANDBOX=1`` runs the code anyway, as the calling user in a temporary
    folder with the same harness and limits but no namespaces: only for code you would run
    yourself (see docs/reliability.md).
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import PhifilterError

UNSAFE_ENV = "PHIFILTER_UNSAFE_NO_SANDBOX"
SANDBOX_UID = 65534  # uid and gid inside the sandbox ("nobody")
PROCESS_LIMIT = 64  # processes (threads included) the code may have at once
MEMORY_LIMIT = 2 << 30  # bytes of address space per process
FILE_LIMIT = 16 << 20  # largest file the program may write
TMPFS_SIZE = 64 << 20  # bytes the private /tmp holds
OPEN_FILES = 64
OUTPUT_LIMIT = 4096  # characters of stdout/stderr kept for the report
# A range of host uids no account uses; as root each run takes one at random (see the docstring).
_DYNAMIC_UID_BASE, _DYNAMIC_UID_SPAN = 0x50000000, 1 << 24

# Runs as the supervisor inside the sandbox: reads the program from stdin, forks the process
# that runs it, and exits 0 only when that process returned from the program normally.
HARNESS = r'''# phifilter-sandbox-harness
import os, sys
program = sys.stdin.read()
sys.stdin.close()
try:
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace, no /proc/<pid>/fd
except Exception:
    pass
try:
    code = compile(program, "<completion>", "exec")
except BaseException:
    import traceback
    traceback.print_exc()
    os._exit(1)
done_r, done_w = os.pipe()
child = os.fork()
if child == 0:
    os.close(done_r)
    del program
    try:
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    except BaseException:  # SystemExit too: leaving before the end is not passing
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os.write(done_w, b"1")
    os._exit(0)
os.close(done_w)
_, status = os.waitpid(child, 0)
os.set_blocking(done_r, False)
try:
    done = os.read(done_r, 1)
except BlockingIOError:
    done = b""
os._exit(0 if status == 0 and done == b"1" else 1)
'''


@dataclass
class ExecResult:
    status: str  # "passed", "failed" (non-zero exit, exception or early exit), "timeout"
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _interpreter() -> tuple[str, str]:
    """(interpreter executable, its prefix): the base interpreter, never a virtualenv's."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    return exe, os.path.realpath(sys.base_prefix)


def _library_mounts() -> list[str]:
    """bwrap arguments giving the sandbox the host's shared libraries, read-only."""
    args = []
    for path in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _python_binds(exe: str, prefix: str) -> list[str]:
    """The interpreter and its stdlib. A system Python (prefix /usr) needs only its executable:
    its stdlib is in /usr/lib, bound with the libraries; binding all of /usr would bring /usr/bin."""
    if prefix in ("/", "/usr"):
        paths = [exe]
    else:
        paths = [prefix] + ([] if exe.startswith(prefix.rstrip("/") + "/") else [exe])
    args = []
    for path in paths:
        args += _parents(path) + ["--ro-bind", path, path]
    return args


def _parents(path: str) -> list[str]:
    """bwrap arguments making the folders above ``path`` traversable by anyone (bwrap would make
    them 0700, which shuts the sandbox's user out), except those under an existing bind."""
    args = []
    for parent in reversed(Path(path).parents):
        name = str(parent)
        if name in ("/", "/usr", "/usr/lib", "/usr/lib64") or name.startswith(("/usr/lib/", "/usr/lib64/")) \
                or os.path.islink(name):
            continue
        args += ["--perms", "0755", "--dir", name]
    return args


def _python_mounts(exe: str, prefix: str) -> list[str]:
    args = _python_binds(exe, prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = os.path.join(prefix, "lib", version, "site-packages")
    if os.path.isdir(site) and prefix != "/usr":
        args += ["--tmpfs", site, "--remount-ro", site]  # the stdlib only, no installed packages
    return args


def _sandbox_argv(bwrap: str) -> list[str]:
    exe, prefix = _interpreter()
    return [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        *_library_mounts(), *_python_mounts(exe, prefix),
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(TMPFS_SIZE), "--tmpfs", "/tmp", "--chdir", "/tmp",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8",
        "--", exe, "-I", "-B", "-c", HARNESS,
    ]


def _as_fresh_uid(bwrap: str, setpriv: str, inner: list[str]) -> tuple[list[str], int]:
    """As root: an outer bwrap (mount namespace only) that reaches the interpreter, then drops to a
    fresh host uid and starts ``inner`` from there (see the module docstring)."""
    exe, prefix = _interpreter()
    uid = _DYNAMIC_UID_BASE + secrets.randbelow(_DYNAMIC_UID_SPAN)
    outer = [bwrap, "--die-with-parent", "--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(path):
            outer += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            outer += ["--ro-bind", path, path]
    for tool in (bwrap, setpriv):
        if not tool.startswith("/usr/"):
            outer += ["--ro-bind", tool, tool]
    outer += [*_python_binds(exe, prefix), "--bind", "/proc", "/proc", "--dev", "/dev", "--dir", "/tmp", "--",
              setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--"]
    return outer + inner, uid


def _uid_tasks(uid: int) -> int:
    """Tasks (threads included) the host uid runs now: RLIMIT_NPROC counts them all."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def _limits(cpu_seconds: int, processes: int | None) -> None:
    """Runs in the child between fork and exec."""
    os.setsid()  # its own process group: the timeout kills the group
    limits = [(resource.RLIMIT_CPU, cpu_seconds), (resource.RLIMIT_AS, MEMORY_LIMIT),
              (resource.RLIMIT_FSIZE, FILE_LIMIT), (resource.RLIMIT_NOFILE, OPEN_FILES),
              (resource.RLIMIT_CORE, 0)]
    if processes is not None:
        limits.append((resource.RLIMIT_NPROC, processes))
    for res, value in limits:
        try:
            _, hard = resource.getrlimit(res)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass  # a limit the platform does not allow lowering; the others still apply


def _command() -> tuple[list[str], int | None, str | None]:
    """(argv, RLIMIT_NPROC, working folder to make) for one run, in the strongest mode available."""
    if sandbox_problem() is None:
        bwrap = shutil.which("bwrap")
        inner = _sandbox_argv(bwrap)
        if os.geteuid() == 0:
            argv, _ = _as_fresh_uid(bwrap, shutil.which("setpriv"), inner)
            return argv, PROCESS_LIMIT, None
        return inner, _uid_tasks(os.getuid()) + PROCESS_LIMIT, None
    require_sandbox()  # raises unless the unsafe opt-in is set
    nproc = None if os.geteuid() == 0 else _uid_tasks(os.getuid()) + PROCESS_LIMIT
    return [_interpreter()[0], "-I", "-B", "-c", HARNESS], nproc, tempfile.mkdtemp(prefix="phifilter-unsafe-")


def run_program(program: str, timeout: float = 3.0) -> ExecResult:
    """Execute ``program`` in the sandbox: passed when it returns normally within ``timeout`` s.

    Raises :class:`~phifilter.errors.PhifilterError` when no sandbox is available and the
    unsafe opt-in is not set (see the module docstring).
    """
    argv, nproc, workdir = _command()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if workdir:
        env.update(HOME=workdir, TMPDIR=workdir)
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir or "/", env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, close_fds=True,
            preexec_fn=functools.partial(_limits, int(timeout) + 1, nproc),
        )
        try:
            out, timed_out = _communicate(proc, program.encode("utf-8", "replace"), timeout)
        finally:
            _kill_group(proc)
            proc.wait()
        if timed_out:
            return ExecResult("timeout", out)
        return ExecResult("passed" if proc.returncode == 0 else "failed", out)
    finally:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def _communicate(proc: subprocess.Popen, data: bytes, timeout: float) -> tuple[str, bool]:
    """Feed stdin and read stdout until EOF, keeping the tail; (output, timed out).

    Stops at the deadline whatever holds the pipe; after the process itself has exited, waits
    at most a moment for the pipe's other holders (none in the sandbox: its namespace is gone).
    """
    deadline = time.monotonic() + timeout
    kept, view = bytearray(), memoryview(data)
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdout.fileno(), False)
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return _tail(kept), True
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break
            for key, _ in sel.select(min(deadline - now, 0.05)):
                if key.fileobj is proc.stdin:
                    try:
                        view = view[os.write(proc.stdin.fileno(), view[:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        view = view[:0]  # it stopped reading: the output will say why
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    sel.unregister(proc.stdout)
                    continue
                kept += chunk
                del kept[: max(0, len(kept) - 4 * OUTPUT_LIMIT)]
    finally:
        sel.close()
        if not proc.stdin.closed:
            proc.stdin.close()
    if proc.poll() is None:  # output closed: the process is finishing; the deadline still holds
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return _tail(kept), True
    return _tail(kept), False


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child called setsid: its pid is the group id
    except (ProcessLookupError, PermissionError):
        pass


def _tail(out: bytes) -> str:
    return bytes(out).decode("utf-8", "replace")[-OUTPUT_LIMIT:]


# ---------------------------------------------------------------------------------------------
# is there a sandbox?

_PROBE = """\
import os, socket
assert os.getuid() == {uid} and os.getgid() == {uid}, "not the sandbox user"
assert not os.path.exists({host!r}), "the host's folders are visible"
assert not os.path.exists("/etc/shadow"), "the host's /etc is visible"
try:
    open("/usr/lib/phifilter-probe", "w")
except OSError:
    pass
else:
    raise AssertionError("the libraries are writable")
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
except OSError:
    pass
else:
    raise AssertionError("the network is reachable")
"""


@functools.lru_cache(maxsize=None)
def sandbox_problem() -> str | None:
    """Why the sandbox cannot run here (a sentence), or None when it works (checked once)."""
    if not sys.platform.startswith("linux"):
        return "the pass@k sandbox (bubblewrap) needs Linux"
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    root = os.geteuid() == 0
    if root and shutil.which("setpriv") is None:
        return "setpriv (util-linux), needed to leave root, is not installed"
    inner = _sandbox_argv(bwrap)
    argv = _as_fresh_uid(bwrap, shutil.which("setpriv"), inner)[0] if root else inner
    probe = _PROBE.format(uid=SANDBOX_UID, host=os.path.realpath(Path(__file__).parent))
    try:
        done = subprocess.run(argv, input=probe.encode(), capture_output=True, timeout=30, cwd="/",
                              env={"PATH": "/usr/bin:/bin"},
                              preexec_fn=functools.partial(_limits, 30, None))
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start a sandbox ({e})"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        return f"bubblewrap could not start a sandbox ({lines[-1] if lines else f'exit {done.returncode}'})"
    return None


def unsafe_opt_in() -> bool:
    return os.environ.get(UNSAFE_ENV, "") == "1"


def require_sandbox() -> None:
    """Raise one ``Error:`` line unless generated code can be run: in the sandbox, or unisolated
    by the explicit opt-in ``PHIFILTER_UNSAFE_NO_SANDBOX=1``."""
    problem = sandbox_problem()
    if problem is None or unsafe_opt_in():
        return
    raise PhifilterError(
        f"pass@k runs model-generated code, and {problem}; install bubblewrap "
        f"(apt-get install bubblewrap) on Linux with user namespaces enabled, set --pass-samples 0 "
        f"to skip pass@k, or set {UNSAFE_ENV}=1 to run the code unisolated as yourself")


def isolation_summary() -> str:
    """One line for the ablation report: how generated code was run."""
    if sandbox_problem() is None:
        return ("bubblewrap: new user, PID, mount, IPC, network and UTS namespaces, uid 65534, "
                "read-only interpreter, private tmpfs, rlimits")
    if unsafe_opt_in():
        return f"NOT ISOLATED ({UNSAFE_ENV}=1: {sandbox_problem()}); rlimits and a temporary folder only"
    return f"none available ({sandbox_problem()})"
