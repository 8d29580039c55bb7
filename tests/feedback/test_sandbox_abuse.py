"""Every abuse case of docs/reference sandbox notes: each is contained and reported with
the right status. Timeouts here are short; the programs are hostile, not slow."""

from __future__ import annotations

import os
import socket
import textwrap

import pytest

from .conftest import wait_no_processes


def run(sb, program: str, **kw):
    return sb.run(textwrap.dedent(program), **kw)


def uid_base(sb) -> int:
    return sb.slots.uid_base if sb.slots.uid_base is not None else -1


# -- time --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        "while True: pass",
        "pow(10, 10**8)",  # C-level: no bytecode boundary to interrupt
        "import re; re.match(r'(a+)+$', 'a' * 64 + 'b')",  # catastrophic backtracking
        "import time; time.sleep(1e9)",
        """
        import signal
        for s in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        while True: pass
        """,
    ],
    ids=["loop", "c-hang", "regex", "sleep", "ignores-signals"],
)
def test_hangs_time_out(any_sandbox, program):
    r = run(any_sandbox, program, timeout_s=1)
    assert r.status == "timeout", r
    assert 0.9 < r.wall_s < 3.0
    assert not wait_no_processes(uid_base(any_sandbox))


# -- processes ---------------------------------------------------------------------------


def test_fork_bomb_is_contained(any_sandbox):
    if not any_sandbox.slots.drop_uid:
        pytest.skip("RLIMIT_NPROC needs a slot uid (run as root); a fork bomb would reach the host's limits")
    r = run(
        any_sandbox,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """,
        timeout_s=2,
    )
    assert r.status in ("timeout", "runtime_error"), r
    assert not wait_no_processes(uid_base(any_sandbox))
    assert os.fork is not None and os.getpid() > 0  # the host still works
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def test_thread_bomb_is_contained(any_sandbox):
    r = run(
        any_sandbox,
        """
        import threading, time
        n = 0
        try:
            while True:
                threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
                n += 1
        except (RuntimeError, MemoryError) as e:
            print("stopped after", n, type(e).__name__)
        """,
        timeout_s=5,
    )
    assert r.status == "ok", r
    assert "stopped after" in r.stdout
    assert int(r.stdout.split()[2]) < 200  # RLIMIT_NPROC / address space, not the host's limits
    assert not wait_no_processes(uid_base(any_sandbox))


def test_double_fork_daemon_leaves_no_survivor(any_sandbox):
    r = run(
        any_sandbox,
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                time.sleep(60)
            os._exit(0)
        print("parent exits")
        """,
        timeout_s=5,
    )
    assert r.status == "ok" and "parent exits" in r.stdout, r
    assert r.wall_s < 2
    assert not wait_no_processes(uid_base(any_sandbox))


# -- memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        "bytearray(10**11)",
        "x = []\nwhile True: x.append(bytearray(10**7))",
        "import mmap; m = mmap.mmap(-1, 10**11); m[-1] = 1",
        "import numpy as np; a = np.ones((10**6, 10**5))",
    ],
    ids=["big-alloc", "gradual", "mmap", "numpy"],
)
def test_memory_hogs_hit_the_memory_limit(any_sandbox, program):
    r = run(any_sandbox, program, timeout_s=10, memory_mb=256)
    assert r.status == "memory_limit", r
    assert not wait_no_processes(uid_base(any_sandbox))


def test_dev_shm_is_small_and_private(sandbox):
    r = run(
        sandbox,
        """
        import os
        written = 0
        try:
            for i in range(100):
                with open(f"/dev/shm/fill{i}", "wb") as f:
                    f.write(b"x" * (8 << 20))
                written += 8
        except OSError as e:
            print("stopped", written, e.errno)
        """,
        timeout_s=10,
    )
    assert r.status == "ok", r
    assert r.stdout.startswith("stopped") and int(r.stdout.split()[1]) <= 64
    assert not any(name.startswith("fill") for name in os.listdir("/dev/shm"))


# -- disk --------------------------------------------------------------------------------


def test_giant_file_hits_the_file_size_limit(any_sandbox):
    r = run(any_sandbox, "with open('big', 'wb') as f:\n    f.write(b'x' * (200 << 20))", timeout_s=10)
    assert r.status == "output_limit" and r.detail == "file-size limit", r


def test_workdir_is_a_bounded_tmpfs(sandbox):
    r = run(
        sandbox,
        """
        written = 0
        try:
            for i in range(100):
                with open(f"f{i}", "wb") as f:
                    f.write(b"x" * (8 << 20))
                written += 8
        except OSError as e:
            print("stopped", written, e.errno)
        """,
        timeout_s=10,
    )
    assert r.status == "ok" and r.stdout.startswith("stopped"), r
    assert int(r.stdout.split()[1]) <= 64


@pytest.mark.parametrize(
    "target", ["/x", "/etc/passwd", "/usr/lib/x", "/tmp/distil-escape", "/work/main/escape"]
)
def test_host_paths_are_not_writable(sandbox, target):
    r = run(sandbox, f"open({target!r}, 'w').write('pwned')")
    assert r.status == "runtime_error", r
    assert "Error" in r.stderr
    assert not os.path.exists("/tmp/distil-escape") and not os.path.exists("/work/main/escape")


def test_home_is_the_private_workdir(sandbox):
    r = run(
        sandbox,
        "import os; open(os.path.expanduser('~/.bashrc'), 'w').write('x'); print(os.path.expanduser('~'))",
    )
    assert r.status == "ok" and r.stdout.strip() == "/sandbox", r


# -- secrets -----------------------------------------------------------------------------

FAKE_SECRET = "distil-fake-secret-7f3a9c"


def test_environment_and_proc_do_not_leak_secrets(any_sandbox, monkeypatch):
    monkeypatch.setenv("DISTIL_TEST_SECRET", FAKE_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    r = run(
        any_sandbox,
        """
        import os
        print(dict(os.environ))
        for path in ("/proc/1/environ", "/proc/self/environ", f"/proc/{os.getppid()}/environ"):
            try:
                print(open(path, "rb").read())
            except OSError as e:
                print(path, e)
        """,
    )
    assert r.status == "ok", r
    assert FAKE_SECRET not in r.stdout and FAKE_SECRET not in r.stderr
    assert "OPENBLAS_NUM_THREADS" in r.stdout  # the minimal environment is there


@pytest.mark.parametrize(
    "path",
    ["/root/.ssh", "/etc/shadow", "/etc/passwd", "/work/main/pyproject.toml", "/work/shared", "/home"],
)
def test_host_files_are_invisible(sandbox, path):
    r = run(sandbox, f"import os; print(os.path.exists({path!r}))")
    assert r.status == "ok" and r.stdout.strip() == "False", r


def test_runs_do_not_see_each_others_files(sandbox):
    first = run(sandbox, "open('secret.txt', 'w').write('mine'); import os; print(os.listdir('.'))")
    assert "secret.txt" in first.stdout
    second = run(sandbox, "import os; print(sorted(os.listdir('.')))")
    assert second.stdout.strip() == "['main.py']", second


# -- network -----------------------------------------------------------------------------


def test_no_network(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        r = run(
            sandbox,
            f"""
            import socket
            def attempt(name, fn):
                try:
                    fn()
                    print(name, "OPEN")
                except OSError as e:
                    print(name, "blocked", e.errno)
            attempt("tcp", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
            attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53)))
            attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
            attempt("service", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=2))
            attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
            attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
            attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
            """,
            timeout_s=10,
        )
    finally:
        listener.close()
    assert r.status == "ok", r
    lines = dict(line.split(" ", 1) for line in r.stdout.strip().splitlines())
    assert set(lines) == {"tcp", "udp", "dns", "service", "raw", "netlink", "packet"}
    assert all(v.startswith("blocked") for v in lines.values()), lines


# -- the host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        "import os; os.kill(os.getppid(), 9); print('still here')",
        "import os; os.kill(-1, 9)",
        "import os; os.killpg(0, 9)",
        "import os; os.kill(1, 9); print('still here')",
    ],
    ids=["parent", "everyone", "own-group", "init"],
)
def test_cannot_kill_the_host(any_sandbox, program):
    r = run(any_sandbox, program)
    assert r.status in ("ok", "runtime_error"), r
    assert os.getpid() > 0 and os.getppid() > 1  # this test process and its parent live on
    assert not wait_no_processes(uid_base(any_sandbox))


# -- output ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program,stream",
    [
        ("while True: print('spam' * 100)", "stdout"),
        ("import sys; sys.stdout.write('x' * 10**8)", "stdout"),
        ("import sys\nwhile True: sys.stderr.write('e' * 1000)", "stderr"),
    ],
    ids=["infinite-print", "huge-line", "stderr-flood"],
)
def test_output_floods_are_cut(any_sandbox, program, stream):
    r = run(any_sandbox, program, timeout_s=10)
    assert r.status == "output_limit", r
    assert r.wall_s < 5
    if stream == "stdout":
        assert r.stdout_truncated and len(r.stdout) <= 1 << 20
    else:
        assert r.stderr_truncated and len(r.stderr) <= 64 << 10


def test_invalid_utf8_is_reported_not_fatal(any_sandbox):
    r = run(
        any_sandbox,
        "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe\\n'); sys.stderr.buffer.write(b'\\xc3(')",
    )
    assert r.status == "ok" and r.stdout.startswith("ok \ufffd"), r


def test_big_stdin(any_sandbox):
    data = ("1234567\n" * (10 * 1024 * 1024 // 8)).encode()
    r = run(any_sandbox, "import sys; print(len(sys.stdin.buffer.read()))", stdin=data, timeout_s=10)
    assert r.status == "ok" and int(r.stdout) == len(data), r


def test_reading_a_closed_stdin(any_sandbox):
    assert run(any_sandbox, "import sys; print(repr(sys.stdin.read()))").stdout.strip() == "''"
    r = run(any_sandbox, "import os; os.close(0); input()")
    assert r.status == "runtime_error", r


# -- crashes -----------------------------------------------------------------------------


def test_segfault_reports_the_signal(any_sandbox):
    r = run(any_sandbox, "import ctypes; ctypes.string_at(0)")
    assert r.status == "runtime_error" and r.signal == "SIGSEGV", r


def test_deep_recursion(any_sandbox):
    r = run(any_sandbox, "def f(n): return f(n + 1)\nf(0)")
    assert r.status == "runtime_error" and "RecursionError" in r.stderr, r
    # Through C frames (map) with the limit lifted: the C stack overflows.
    r = run(
        any_sandbox, "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return list(map(f, [n + 1]))\nf(0)"
    )
    assert r.status == "runtime_error" and r.signal == "SIGSEGV", r


def test_plain_exceptions_are_runtime_errors(any_sandbox):
    r = run(any_sandbox, "raise ValueError('boom')")
    assert r.status == "runtime_error" and r.exit_code == 1 and "ValueError: boom" in r.stderr


# -- kernel surface ----------------------------------------------------------------------

SYSCALLS = {"ptrace": 101, "mount": 165, "unshare": 272, "bpf": 321, "io_uring_setup": 425, "setns": 308}


@pytest.mark.parametrize("name", sorted(SYSCALLS))
def test_dangerous_syscalls_are_denied(any_sandbox, name):
    nr = SYSCALLS[name]
    args = {
        "ptrace": "0, 0, 0, 0",  # PTRACE_TRACEME
        "mount": "b'none', b'/sandbox', b'tmpfs', 0, 0",
        "unshare": "0x10000000",  # CLONE_NEWUSER
        "bpf": "0, 0, 0",
        "io_uring_setup": "8, ctypes.create_string_buffer(120)",
        "setns": "0, 0",
    }[name]
    r = run(
        any_sandbox,
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall({nr}, {args})
        print(rc, ctypes.get_errno())
        """,
    )
    assert r.status == "ok", r
    rc, err = map(int, r.stdout.split())
    assert rc == -1 and err == 1, (name, rc, err)  # EPERM from the seccomp filter


def test_new_namespaces_via_clone_are_denied(any_sandbox):
    r = run(
        any_sandbox,
        """
        import ctypes, signal
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.syscall(56, 0x10000000 | 0x40000000 | signal.SIGCHLD, 0, 0, 0, 0)  # clone(NEWUSER|NEWNET)
        print(rc, ctypes.get_errno())
        """,
    )
    assert r.stdout.split() == ["-1", "1"], r


# -- must still work ---------------------------------------------------------------------


def test_numpy_still_imports(any_sandbox):
    r = run(
        any_sandbox,
        "import numpy as np\na = np.arange(9.0).reshape(3, 3)\nprint(float((a @ a).sum()))",
        timeout_s=20,
    )
    assert r.status == "ok", r
    assert float(r.stdout) == 486.0
