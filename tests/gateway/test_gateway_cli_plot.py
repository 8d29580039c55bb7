"""`distil plot` draws reward, success, loss, KL and evaluation curves into a PNG; the CLI
talks to a gateway over HTTP (here the API in process behind uvicorn)."""

from __future__ import annotations

import threading
import time

import pytest
import uvicorn
from typer.testing import CliRunner

from distil.cli import app as cli
from distil.gateway.app import create_app
from distil.gateway.plot import plot_metrics
from distil.jobs import JobStore
from tests.teacher.vllm_server import free_port


def test_plot_writes_a_png(tmp_path):
    points = [
        {
            "step": s,
            "kind": "train",
            "reward_mean": s / 10,
            "success_rate": s / 20,
            "loss": 1 / s,
            "kl_teacher_student": 0.1,
            "rollout_kl": 0.01,
        }  # fmt: skip
        for s in range(1, 6)
    ] + [{"step": 5, "kind": "eval", "score/pass@1": 0.2, "accuracy/avg": 0.4}]
    out = plot_metrics(points, tmp_path / "curves.png", title="job")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def served(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "jobs.sqlite3")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store, "cli-token"), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
        time.sleep(0.05)
    monkeypatch.setenv("DISTIL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DISTIL_API_TOKEN", "cli-token")
    yield store
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def test_cli_submit_status_cancel_logs_plot(served, tmp_path):
    runner = CliRunner()
    spec = tmp_path / "job.yaml"
    spec.write_text("name: cli\nsteps: 3\n")
    r = runner.invoke(cli, ["submit", str(spec)])
    assert r.exit_code == 0, r.output
    job_id = r.output.strip()
    served.add_metrics(job_id, 1, {"loss": 1.0, "reward_mean": 0.5})
    r = runner.invoke(cli, ["status"])
    assert r.exit_code == 0 and "queued" in r.output
    assert runner.invoke(cli, ["status", job_id]).exit_code == 0
    r = runner.invoke(cli, ["cancel", job_id])
    assert r.exit_code == 0 and "cancelled" in r.output
    r = runner.invoke(cli, ["logs", job_id])
    assert r.exit_code == 0 and "cancelled" in r.output
    r = runner.invoke(cli, ["logs", job_id, "--follow"])  # ended: the stream closes
    assert r.exit_code == 0
    out = tmp_path / "p.png"
    assert runner.invoke(cli, ["plot", job_id, "-o", str(out)]).exit_code == 0 and out.is_file()
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: {n: 0}\n")
    r = runner.invoke(cli, ["submit", str(bad)])
    assert r.exit_code == 1 and "rollout.n" in r.output
