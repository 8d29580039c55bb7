"""Sandbox fixtures. The tests run real bubblewrap (when the host allows user
namespaces; the bwrap-only tests skip otherwise) and the real process backend, with uid
ranges of their own so leftovers can be counted exactly."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from services.feedback.sandbox import SandboxConfig, SandboxUnavailable, make_sandbox
from services.feedback.sandbox.base import BaseSandbox

BWRAP_UID_BASE = 63000
PROCESS_UID_BASE = 63500
SLOTS = 4


def processes_of(uid_base: int, slots: int = SLOTS) -> list[int]:
    """Live (or zombie) processes owned by the sandbox's slot uids."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if uid_base <= uid < uid_base + slots:
                found.append(int(entry))
    return found


def wait_no_processes(uid_base: int, timeout_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := processes_of(uid_base)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


@pytest.fixture(scope="session")
def sandbox() -> Iterator[BaseSandbox]:
    config = SandboxConfig(backend="bwrap", slots=SLOTS, uid_base=BWRAP_UID_BASE, timeout_s=5)
    try:
        sb = make_sandbox(config)
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap unavailable here: {exc}")
    yield sb
    sb.close()


@pytest.fixture(scope="session")
def process_sandbox() -> Iterator[BaseSandbox]:
    root = tempfile.mkdtemp(prefix="distil-test-workdirs-")  # private, so leftovers are ours
    os.chmod(root, 0o755)
    sb = make_sandbox(
        SandboxConfig(
            backend="process", slots=SLOTS, uid_base=PROCESS_UID_BASE, timeout_s=5, workdir_root=root
        )
    )
    yield sb
    sb.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["bwrap", "process"])
def any_sandbox(request: pytest.FixtureRequest) -> BaseSandbox:
    return request.getfixturevalue("sandbox" if request.param == "bwrap" else "process_sandbox")


@contextmanager
def serve_http(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free local port in a thread; yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
