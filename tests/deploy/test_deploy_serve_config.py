"""The placement files (deploy/serve/*.yaml) and their loader: every file parses with the
pydantic models and Ray Serve's own schema, every import path resolves, the GPU files fit
their GPUs, and bad files are refused with the field that is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.gateway.serve_config import ServeConfigError, import_attr, load, serve_config
from distil.gateway.stages import stage_apps
from distil.jobs.spec import with_defaults

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "deploy/serve").glob("*.yaml"))


def test_the_three_placements_ship():
    assert {p.stem for p in CONFIGS} == {"cpu", "h200x1", "h200x8"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_parses_and_its_import_paths_resolve(path):
    cfg = load(path)
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(cfg.serve)  # what `serve deploy` / KubeRay accept
    for app in schema.applications:
        assert callable(import_attr(app.import_path))
    assert schema.applications[cfg.gateway_index].route_prefix == "/"


def reserved_gpus(place: dict) -> float:
    return (
        place.get("rollout_gpus", 0) * place.get("rollout_replicas", 1)
        + place.get("teacher_gpus", 0) * place.get("teacher_replicas", 1)
        + place.get("learner_gpus", 0) * place.get("learner_gpus_per_rank", 1)
    )


def test_h200x1_shares_one_gpu_within_its_memory():
    cfg = load(ROOT / "deploy/serve/h200x1.yaml")
    d = cfg.gateway.job_defaults
    assert reserved_gpus(d["placement"]) == pytest.approx(1.0) == cfg.distil.ray.num_gpus
    budget = cfg.distil.gpu_budget
    engines = 2 * d["engine"]["gpu_memory_utilization"] * budget.gpu_memory_gib  # rollout + self-teacher
    assert engines + budget.learner_gib_per_rank <= budget.gpu_memory_gib - 4  # room for CUDA contexts
    weights_and_activations = 6.0  # GiB of a ~1.5B bf16 engine besides its KV cache (see the file)
    assert (
        d["engine"]["kv_cache_gib"] + weights_and_activations <= d["engine"]["gpu_memory_utilization"] * 140
    )


def test_h200x8_places_rollout_teacher_and_learner_on_whole_gpus():
    cfg = load(ROOT / "deploy/serve/h200x8.yaml")
    place = cfg.gateway.job_defaults["placement"]
    assert reserved_gpus(place) == cfg.distil.ray.num_gpus == 8
    assert place["rollout_gpus"] * place["rollout_replicas"] == 2
    assert place["teacher_gpus"] * place["teacher_replicas"] == 2
    assert place["learner_gpus"] == 4


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "placement.yaml"
    path.write_text(text)
    return path


GATEWAY = """applications:
  - name: gateway
    route_prefix: /
    import_path: distil.gateway.deployment:build_app
    args:
      job_defaults:
{defaults}
"""


def test_bad_files_name_each_wrong_field(tmp_path):
    text = (
        "aplications: []\n"
        + GATEWAY.format(defaults="        placement: {rollout_gpus: -1}")
        + "  - name: extra\n    route_prefix: /x\n    import_path: services.nope:build_app\n"
        + "distil:\n  ray: {nmu_cpus: 3}\n"
    )
    with pytest.raises(ServeConfigError) as err:
        load(write(tmp_path, text))
    msg = str(err.value)
    assert "distil.ray.nmu_cpus: Extra inputs are not permitted" in msg
    assert "aplications: not a Ray Serve config field" in msg
    assert "applications.0.args.job_defaults" in msg and "placement.rollout_gpus" in msg
    assert "applications.1.import_path: cannot import 'services.nope:build_app'" in msg


def test_missing_gateway_and_missing_file_are_refused(tmp_path):
    with pytest.raises(ServeConfigError, match="exactly one must have import_path distil.gateway"):
        load(write(tmp_path, "applications:\n  - {name: x, route_prefix: /, import_path: distil.cli:app}\n"))
    with pytest.raises(ServeConfigError, match="no such file"):
        load(tmp_path / "nope.yaml")
    with pytest.raises(ServeConfigError, match="not valid YAML"):
        load(write(tmp_path, "applications: [\n"))


def test_placements_that_do_not_fit_are_refused(tmp_path):
    shared = "        placement: {rollout_gpus: 0.25, teacher_gpus: 0.25, learner_gpus: 1, learner_gpus_per_rank: 0.5}\n"
    engine = "        engine: {gpu_memory_utilization: 0.4}"
    budget = "distil:\n  ray: {num_gpus: 1}\n  gpu_budget: {gpu_memory_gib: 140, learner_gib_per_rank: 64}\n"
    with pytest.raises(
        ServeConfigError, match=r"rollout vLLM 56.0 \+ teacher vLLM 56.0 \+ learner 64.0 = 176.0 GiB"
    ):
        load(write(tmp_path, GATEWAY.format(defaults=shared + engine) + budget))
    with pytest.raises(ServeConfigError, match="set distil.gpu_budget"):
        load(write(tmp_path, GATEWAY.format(defaults=shared.rstrip("\n"))))
    too_many = "        placement: {rollout_gpus: 1, rollout_replicas: 4, learner_gpus: 8}"
    with pytest.raises(ServeConfigError, match="one job reserves 12 GPUs but distil.ray.num_gpus is 8"):
        load(write(tmp_path, GATEWAY.format(defaults=too_many) + "distil:\n  ray: {num_gpus: 8}\n"))
    tp = "        placement: {rollout_gpus: 1, teacher_gpus: 2}\n        engine: {tensor_parallel_size: 2}"
    with pytest.raises(
        ServeConfigError, match="placement.rollout_gpus: the rollout engine shards over 2 GPUs"
    ):
        load(write(tmp_path, GATEWAY.format(defaults=tp)))


def test_serve_config_puts_the_bus_url_and_env_into_the_applications():
    cfg = load(ROOT / "deploy/serve/cpu.yaml")
    out = serve_config(cfg, "redis://r:6379/0", {"DISTIL_DATA_DIR": "/d"})
    app = out["applications"][cfg.gateway_index]
    assert app["args"]["bus"]["url"] == "redis://r:6379/0"
    assert app["runtime_env"]["env_vars"] == {"DISTIL_DATA_DIR": "/d"}
    assert "bus" not in (cfg.serve["applications"][0]["args"])  # the loaded file is left as it was
    assert "distil" not in out


def test_job_defaults_lie_under_the_submitted_spec():
    defaults = {"placement": {"rollout_gpus": 0.25, "learner_gpus": 1}, "engine": {"kv_cache_gib": 24}}
    spec = {"placement": {"learner_gpus": 2}, "engine": {"max_model_len": 256}, "steps": 3}
    merged = with_defaults(spec, defaults)
    assert merged == {
        "placement": {"rollout_gpus": 0.25, "learner_gpus": 2},
        "engine": {"kv_cache_gib": 24, "max_model_len": 256},
        "steps": 3,
    }
    assert defaults == {
        "placement": {"rollout_gpus": 0.25, "learner_gpus": 1},
        "engine": {"kv_cache_gib": 24},
    }


def test_replicas_are_applications_of_their_own():
    apps = stage_apps("j1", rollout_replicas=2, teacher_replicas=3)
    assert apps == [
        ("rollout", "distil-j1-rollout", "/jobs/j1/rollout"),
        ("rollout", "distil-j1-rollout-1", "/jobs/j1/rollout-1"),
        ("teacher", "distil-j1-teacher", "/jobs/j1/teacher"),
        ("teacher", "distil-j1-teacher-1", "/jobs/j1/teacher-1"),
        ("teacher", "distil-j1-teacher-2", "/jobs/j1/teacher-2"),
        ("learner", "distil-j1-learner", "/jobs/j1/learner"),
    ]
    assert [a[1] for a in stage_apps("j1")] == ["distil-j1-rollout", "distil-j1-teacher", "distil-j1-learner"]
