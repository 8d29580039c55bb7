"""The step-time breakdown: interval arithmetic, and spans surviving the bus encoding."""

import numpy as np
import pytest

from distil.bus import Group, Response, decode_group, encode_group
from distil.timeline import breakdown, intersect, length, timed, union


def test_union_merges_overlaps_and_drops_empty():
    assert union([(3, 4), (0, 1), (0.5, 2), (5, 5)]) == [(0, 2), (3, 4)]
    assert length([(0, 1), (0.5, 2), (3, 4)]) == pytest.approx(3.0)


def test_intersect():
    assert intersect([(0, 2), (3, 6)], [(1, 4), (5, 7)]) == [(1, 2), (3, 4), (5, 6)]
    assert intersect([(0, 1)], [(2, 3)]) == []


def test_breakdown_overhead_and_overlap():
    # 10 s window: rollout busy 0-4 and 6-8, learner 3-7, weight push 7-7.5 -> idle 8-10 only.
    spans = {"rollout": [(0, 4), (6, 8)], "learner": [(3, 7)], "weight_push": [(7, 7.5)]}
    b = breakdown(spans, (0, 10))
    assert b["rollout_s"] == pytest.approx(6.0)
    assert b["learner_s"] == pytest.approx(4.0)
    assert b["any_busy_s"] == pytest.approx(8.0)
    assert b["overhead_frac"] == pytest.approx(0.2)
    assert b["rollout_overlaps_learner_s"] == pytest.approx(2.0)  # 3-4 and 6-7
    assert b["serial_s"] == pytest.approx(10.5)
    assert b["overlap_speedup"] == pytest.approx(1.05)


def test_breakdown_clips_to_the_window_and_rejects_an_empty_one():
    b = breakdown({"teacher": [(-5, 1), (9, 20)]}, (0, 10))
    assert b["teacher_s"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="empty time window"):
        breakdown({}, (3, 3))


def test_stage_spans_travel_with_the_group():
    g = Group(job_id="j", group_id="g1", prompt_token_ids=np.array([1, 2], dtype=np.int32))
    g.responses = [
        Response(token_ids=np.array([3], dtype=np.int32), logprobs=np.array([-0.1], dtype=np.float32))
    ]
    with timed(g, "rollout"):
        pass
    with pytest.raises(RuntimeError), timed(g, "teacher"):
        raise RuntimeError("a failed stage records no span")
    back = decode_group(encode_group(g))
    assert [s.stage for s in back.spans] == ["rollout"]
    assert back.spans[0].end >= back.spans[0].start > 0


def test_report_from_a_timeline_file(tmp_path, capsys):
    import json

    from distil.timeline import load, main, steady_state

    path = tmp_path / "timeline.jsonl"
    steps = [
        {"step": 1, "spans": {"rollout": [[0, 5]], "learner": [[5, 10]], "weight_push": [[10, 11]]}},
        {"step": 2, "spans": {"rollout": [[6, 12]], "learner": [[12, 20]], "weight_push": [[20, 21]]}},
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in steps))
    spans, window = steady_state(load(path))
    assert window == (10, 21)  # from the end of step 1's training to the end of the last step
    b = breakdown(spans, window)
    assert b["overhead_frac"] == pytest.approx(0.0)  # 10-11 push, 11-12 rollout, 12-20 learner, 20-21 push
    assert b["rollout_overlaps_learner_s"] == pytest.approx(0.0)
    main([str(path)])
    assert "overhead" in capsys.readouterr().out
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no steps yet"):
        load(empty)


def test_slowest_note_names_the_busiest_stage_or_says_none_trained(tmp_path):
    import json

    from distil.timeline import busiest, slowest_note

    path = tmp_path / "timeline.jsonl"
    assert slowest_note(path) == "no step has trained yet"
    steps = [
        {"spans": {"learner": [[0.0, 10.0]], "weight_push": [[10.0, 40.0]]}},
        {"spans": {"learner": [[40.0, 50.0]], "weight_push": [[50.0, 70.0]], "rollout": [[40.0, 45.0]]}},
    ]
    path.write_text("".join(json.dumps(s) + "\n" for s in steps))
    assert busiest([json.loads(x) for x in path.read_text().splitlines()]) == ("weight_push", 25.0)
    assert slowest_note(path) == "slowest stage so far: weight_push at 25.0 busy s/step"
    path.write_text('{"spans": {}}\n')  # a record without the learner's span
    assert slowest_note(path) == "no step has trained yet"
