"""The pass@k sandbox as a boundary (issue 20): every escape tried on the old sandbox stays
contained, early exits fail, and without bubblewrap pass@k refuses unless explicitly opted out.

These run real programs in the real bubblewrap sandbox; CI installs bubblewrap (.ci/run), and
a machine where it cannot run fails here with the reason rather than skipping."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from phifilter.errors import PhifilterError
from phifilter.pretrain import sandbox
from phifilter.pretrain.sandbox import PROCESS_LIMIT, UNSAFE_ENV, run_program


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works():
    problem = sandbox.sandbox_problem()
    assert problem is None, f"the pass@k sandbox cannot run here: {problem}"


def _processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return [p for p in found if p != os.getpid()]


def _gone(marker: str, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while _processes_with(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _sleeper(marker: str, seconds: int = 30, say: str = "") -> str:
    """Source that replaces the current process by a Python sleeping ``seconds``, findable by marker."""
    code = f"print({say!r}, flush=True); import time; time.sleep({seconds})" if say else f"import time; time.sleep({seconds})"
    return f"os.execv(sys.executable, [sys.executable, '-S', '-c', {code!r}, {marker!r}])"


# ---------------------------------------------------------------------------------------------
# what passes


def test_passing_and_failing_programs():
    assert run_program("assert sum([1, 2, 3]) == 6\n").status == "passed"
    failed = run_program("assert sum([1, 2, 3]) == 7\n")
    assert failed.status == "failed" and "AssertionError" in failed.output
    assert run_program("def f(\n").status == "failed"  # a syntax error
    # Its own folder is writable, and it runs as __main__ as a script would.
    assert run_program("open('x.txt', 'w').write('hi')\nassert open('x.txt').read() == 'hi'\n"
                       "assert __name__ == '__main__'\n").passed


EARLY_EXITS = {
    "raise SystemExit(0)": "raise SystemExit(0)",
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "exit()": "exit()",
    "quit(0)": "quit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "exec another program": "import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'pass'])",
    "kill itself": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "exit 0 from a thread": "import os, threading\nt = threading.Thread(target=os._exit, args=(0,))\nt.start()\nt.join()",
}


@pytest.mark.parametrize("early", list(EARLY_EXITS.values()), ids=list(EARLY_EXITS))
def test_leaving_before_the_tests_is_a_failure(early):
    # The tests that follow would fail; the early exit must not turn that into a pass.
    assert run_program(early + "\nassert 1 + 1 == 3\n").status == "failed"
    # Leaving early after tests that pass is not passing either: the program did not end normally.
    assert run_program("assert 1 + 1 == 2\n" + early + "\n").status == "failed"


def test_printing_what_a_pass_looks_like_is_not_a_pass():
    program = ("import os, sys\nprint('passed'); print(1); sys.stdout.flush()\n"
               "os.write(1, b'1'); os.write(2, b'1')\nos._exit(0)\n")
    assert run_program(program).status == "failed"


# ---------------------------------------------------------------------------------------------
# the escapes of issue 20


def test_switching_off_the_old_audit_hook_then_running_id_is_not_root():
    program = ("import __main__\n__main__._inside = lambda p: True\n__main__.DENIED_PREFIXES = ('zzz',)\n"
               "import subprocess\nprint(subprocess.run(['id'], capture_output=True, text=True).stdout)\n")
    result = run_program(program)
    assert "uid=0(" not in result.output
    # No programs to run beside the interpreter; if one were there, it would run as nobody.
    assert (result.status == "failed" and "FileNotFoundError" in result.output) or "uid=65534" in result.output


def test_the_code_is_not_root_inside_or_on_the_host():
    marker = f"phifilter-uid-probe-{uuid.uuid4().hex}"
    program = ("import os, sys\nassert os.getuid() == 65534 and os.geteuid() == 65534 and os.getgid() == 65534\n"
               "caps = [l for l in open('/proc/self/status') if l.startswith('CapEff')]\n"
               "assert caps == ['CapEff:\\t0000000000000000\\n'], caps\n" + _sleeper(marker, 20) + "\n")
    got = {}
    runner = threading.Thread(target=lambda: got.setdefault("result", run_program(program, timeout=5)))
    runner.start()
    deadline = time.monotonic() + 10
    while not _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = _processes_with(marker)
    assert pids, "the sandboxed process never appeared"
    status = Path(f"/proc/{pids[0]}/status").read_text()
    uids = [int(x) for x in next(l for l in status.splitlines() if l.startswith("Uid:")).split()[1:]]
    caps = next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1]
    runner.join()
    assert 0 not in uids and int(caps, 16) == 0
    if os.geteuid() != 0:
        assert set(uids) == {os.getuid()}
    assert got["result"].status == "timeout"  # it slept past the timeout, and was killed
    assert _gone(marker)


@pytest.mark.parametrize("attack", [
    "open({target!r}, 'w').write('pwned')",
    "import os\nfd = os.open({target!r}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'pwned')",
    "import os\nfd = os.open({folder!r}, os.O_RDONLY)\nos.open('outside.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd)",
    "import pathlib\npathlib.Path({target!r}).write_text('pwned')",
    "import os\nassert os.system('echo pwned > ' + {target!r}) == 0",
    "import subprocess\nsubprocess.run(['sh', '-c', 'echo pwned > ' + {target!r}])",
    "import os\nos.chdir({folder!r})\nopen('outside.txt', 'w').write('pwned')",
    "import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.system(('echo pwned > ' + {target!r}).encode()) == 0",
], ids=["open", "os.open", "os.open dir_fd", "pathlib", "os.system", "subprocess", "chdir", "ctypes system"])
def test_a_completion_cannot_write_outside_its_folder(tmp_path, attack):
    target = tmp_path / "outside.txt"
    tmp_path.chmod(0o777)  # even a folder anyone may write to stays untouched
    result = run_program(attack.format(target=str(target), folder=str(tmp_path)))
    assert result.status == "failed"
    assert not target.exists()


@pytest.mark.parametrize("attack", [
    "import os\nos.remove({victim!r})",
    "import os\nfd = os.open({folder!r}, os.O_RDONLY)\nos.remove('keep.txt', dir_fd=fd)",
    "import shutil\nshutil.rmtree({folder!r})",
], ids=["remove", "remove dir_fd", "rmtree"])
def test_a_completion_cannot_delete_outside_its_folder(tmp_path, attack):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    tmp_path.chmod(0o777)
    result = run_program(attack.format(victim=str(victim), folder=str(tmp_path)))
    assert result.status == "failed" and victim.read_text() == "precious"


def test_the_parents_environment_and_etc_shadow_are_unreadable(monkeypatch):
    secret = f"AKIA-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    program = f"""\
import os
found = [k for k, v in os.environ.items() if {secret!r} in v]
for pid in [str(os.getppid()), "1"] + [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        data = open(f"/proc/{{pid}}/environ", "rb").read()
    except OSError:
        continue
    if {secret!r}.encode() in data:
        found.append(pid)
for name in ("/etc/shadow", "/etc/passwd", "/root/.bashrc", {str(REPO / "setup.cfg")!r}):
    try:
        found.append(open(name).read()[:100])
    except OSError:
        pass
print("clean" if not found else found)
"""
    result = run_program(program)
    assert result.passed and result.output.strip() == "clean", result.output
    assert secret not in result.output


def test_a_double_fork_and_setsid_does_not_outlive_the_run():
    marker = f"phifilter-daemon-{uuid.uuid4().hex}"
    program = f"""\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        {_sleeper(marker, 60, say="daemon up")}
    os._exit(0)
time.sleep(1.0)
"""
    result = run_program(program, timeout=10)
    assert "daemon up" in result.output  # it did start
    assert result.passed
    assert _gone(marker), "a process started in the sandbox outlived the run"


def test_a_child_holding_stdout_does_not_stall_the_timeout():
    marker = f"phifilter-holder-{uuid.uuid4().hex}"
    holder = f"import os, sys, time\nif os.fork() == 0:\n    {_sleeper(marker, 60)}\n"
    started = time.monotonic()
    assert run_program(holder + "time.sleep(60)\n", timeout=2).status == "timeout"
    timed_out_after = time.monotonic() - started
    started = time.monotonic()
    assert run_program(holder + "time.sleep(0.5)\n", timeout=20).status == "passed"
    passed_after = time.monotonic() - started
    # The holder sleeps 60 s; the runs end with their timeout (2 s) or their program (0.5 s).
    assert timed_out_after < 15 and passed_after < 15, (timed_out_after, passed_after)
    assert _gone(marker)


def test_a_fork_bomb_is_bounded_by_the_process_limit():
    program = """\
import os, time
n = 0
try:
    while n < 10000:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print("forks", n, type(e).__name__, flush=True)
"""
    result = run_program(program, timeout=20)
    assert result.passed and "forks" in result.output, result.output
    n = int(result.output.split()[1])
    assert 0 < n < PROCESS_LIMIT
    # An unbounded bomb ends with the timeout, and takes every process it made with it.
    marker = f"phifilter-bomb-{uuid.uuid4().hex}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = run_program(f"import os, sys\nos.execv(sys.executable, [sys.executable, '-S', '-c', {bomb!r}, {marker!r}])\n",
                         timeout=3)
    assert result.status in ("timeout", "failed")
    assert _gone(marker)


def test_memory_and_disk_hogs_are_stopped():
    result = run_program("b = bytearray(3 << 30)\n", timeout=10)
    assert result.status == "failed" and "MemoryError" in result.output
    result = run_program("with open('big', 'wb') as f:\n    for _ in range(200):\n        f.write(bytes(1 << 20))\n",
                         timeout=10)
    assert result.status == "failed"


def test_an_infinite_loop_is_killed_by_the_timeout():
    assert run_program("while True:\n    pass\n", timeout=1.0).status == "timeout"
    assert run_program("import time\ntime.sleep(60)\n", timeout=1.0).status == "timeout"


def test_the_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    port = server.getsockname()[1]
    got = []

    def accept():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    result = run_program(
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\n",
        timeout=4,
    )
    thread.join()
    server.close()
    assert result.status == "failed" and got == []
    result = run_program("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)\n", timeout=4)
    assert result.status == "failed" and "Error" in result.output


# ---------------------------------------------------------------------------------------------
# without bubblewrap


@pytest.fixture
def no_bwrap(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without bwrap
    sandbox.sandbox_problem.cache_clear()
    yield
    monkeypatch.undo()
    sandbox.sandbox_problem.cache_clear()


def test_without_bubblewrap_running_code_is_refused(no_bwrap, monkeypatch):
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    assert "bubblewrap (bwrap) is not installed" in sandbox.sandbox_problem()
    with pytest.raises(PhifilterError, match=r"apt-get install bubblewrap.*PHIFILTER_UNSAFE_NO_SANDBOX=1"):
        run_program("assert True\n")


def test_the_unsafe_opt_in_runs_code_unisolated_with_the_same_pass_rule(no_bwrap, monkeypatch):
    monkeypatch.setenv(UNSAFE_ENV, "1")
    assert run_program("assert sum([1, 2, 3]) == 6\n").passed
    assert run_program("import os\nos._exit(0)\nassert False\n").status == "failed"
    assert run_program("raise SystemExit(0)\n").status == "failed"
    assert "NOT ISOLATED" in sandbox.isolation_summary()


def test_ablate_with_pass_at_k_refuses_before_training_without_bubblewrap(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != UNSAFE_ENV}
    env.update(PATH=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "phifilter", "ablate", str(tmp_path / "missing"), "-o",
                           str(tmp_path / "out"), "--pass-samples", "1", "-q"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: pass@k runs model-generated code"), done.stderr
    assert "apt-get install bubblewrap" in lines[0] and "--pass-samples 0" in lines[0]
    assert not (tmp_path / "out").exists()
