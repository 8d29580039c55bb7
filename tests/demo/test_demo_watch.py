"""The demo's waits follow what the machine has shown, and a missing evaluation is said."""

import json

from distil.demo.run import before_after, missing_sides, print_table
from distil.demo.watch import FACTOR, FIRST_S, FLOOR_S, StallWatch, awaited, first_budget, stall_message
from distil.doctor import REFERENCE, MicroBench
from distil.hardware import Hardware


def test_first_wait_comes_from_the_estimate_then_from_the_longest_wait():
    assert first_budget(None) == FIRST_S
    assert first_budget(10.0) == FLOOR_S  # never below the floor
    assert first_budget(600.0) == FACTOR * 600.0
    w = StallWatch(start=0.0, first_s=1000.0)
    assert not w.stalled(999.0) and w.stalled(1001.0)
    w.progress(200.0)  # the evaluation before training took 200 s
    assert w.limit() == FACTOR * 200.0
    assert not w.stalled(200.0 + 799.0) and w.stalled(200.0 + 801.0)
    w.progress(230.0)  # a fast step does not shrink the limit
    assert w.limit() == FACTOR * 200.0
    quick = StallWatch(start=0.0)
    quick.progress(5.0)
    assert quick.limit() == FLOOR_S


def test_awaited_names_what_the_job_is_doing():
    assert "stages" in awaited("starting", 0, 12, 0)
    assert awaited("running", 0, 12, 0) == "the evaluation before training and the first step"
    assert awaited("running", 0, 12, 1) == "the first step"
    assert awaited("running", 5, 12, 1) == "step 6 of 12"
    assert awaited("running", 12, 12, 1) == "the evaluation after training"


def test_stall_message_names_the_slowest_stage_and_the_cpu(tmp_path):
    timeline = tmp_path / "timeline.jsonl"
    rec = {"spans": {"learner": [[0.0, 10.0]], "teacher": [[0.0, 120.0]], "rollout": [[0.0, 30.0]]}}
    timeline.write_text(json.dumps(rec) + "\n")
    hw = Hardware(cpu_model="AMD EPYC 7B13", cpu_capability="AVX2", cores=2)
    w = StallWatch(start=0.0)
    w.progress(100.0)
    msg = stall_message("job-1", "step 3 of 12", 500.0, w, timeline, hw)
    assert "teacher at 120.0 busy s/step" in msg
    assert "AMD EPYC 7B13" in msg and "AVX2" in msg and "no native bf16" in msg
    assert "step 3 of 12" in msg and "400s" in msg and "distil.timeline job-1" in msg
    assert "no step has trained yet" in stall_message("j", "x", 1.0, w, tmp_path / "none.jsonl", hw)


def _point(step, p1):
    return {"kind": "eval", "step": step, "score/pass@1": p1}


def test_before_after_says_which_side_is_missing(capsys):
    from rich.console import Console

    both = [_point(0, 0.5), {"kind": "train", "step": 3}, _point(12, 0.7)]
    before, after = before_after(both)
    assert (before["step"], after["step"]) == (0, 12)
    assert missing_sides(before, after, []) == []

    failures = [{"step": 0, "error": "EngineTimeout: generation did not finish within 600s"}]
    before, after = before_after([_point(12, 0.7)])
    assert before is None and after["step"] == 12
    (line,) = missing_sides(before, after, failures)
    assert line.startswith("before training: missing") and "EngineTimeout" in line
    console = Console(width=200, force_terminal=False)
    print_table(console, before, after, "t", failures)
    out = capsys.readouterr().out
    assert "before: missing" in out and "0.700" in out and "EngineTimeout" in out

    before, after = before_after([_point(0, 0.5)])  # only the evaluation before training
    assert after is None
    assert missing_sides(before, after, [])[0] == "after training: missing (no evaluation was recorded)"


def test_expected_demo_scales_with_the_micro_benchmark():
    r = REFERENCE
    ref = MicroBench(r["learner_s"], r["engine_s"], 100.0, 100.0)
    step, total = ref.expected_demo(12)
    # on the reference machine the learner chain is the longer one
    assert step == r["learner"] + r["weight_push"]
    assert total == r["fixed_s"] + 2 * r["eval_s"] + 12 * step
    slow = MicroBench(r["learner_s"], 10 * r["engine_s"], 100.0, 1.0)  # emulated engines
    engines = 10 * (r["rollout"] + r["teacher"] + r["weight_push"]) + r["feedback"]
    assert slow.expected_demo(12)[0] == engines  # now the engine chain sets the pace
    assert slow.eval_s() == 10 * r["eval_s"]
    assert slow.expected_first() > ref.expected_first()
