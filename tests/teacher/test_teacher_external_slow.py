"""An external teacher that answers too slowly: a real local HTTP server that accepts the
OpenAI-compatible requests and sits on ``/v1/completions`` past the client's timeout. Each
request is tried ``retry.attempts`` times with backoff, then the group proceeds without a
teacher signal and that is counted."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from transformers import AutoTokenizer

from distil.bus import Feedback, Group, Response
from services.teacher.config import ExternalTeacherConfig, RetryConfig
from services.teacher.external import ExternalTeacher
from services.teacher.stage import TeacherStage

HANG_S = 30.0  # how long the server sits on a completion (the test releases it at teardown)


class SlowTeacherServer:
    """Answers ``/tokenize`` with the student's tokenizer (so the teacher passes its tokenizer
    check) and never answers ``/v1/completions`` within the client's timeout; counts every
    completion request by prompt."""

    def __init__(self, tokenizer):
        self.completions: Counter[tuple[int, ...]] = Counter()
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/tokenize":
                    ids = tokenizer.encode(body["prompt"], add_special_tokens=body["add_special_tokens"])
                    return self._json({"tokens": ids, "count": len(ids)})
                if self.path == "/v1/completions":
                    server.completions[tuple(body["prompt"])] += 1
                    server.release.wait(HANG_S)  # past the client's timeout: it gives up first
                    return None
                self.send_error(404)

            def _json(self, obj):
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def slow_server(tokenizer):
    s = SlowTeacherServer(tokenizer)
    yield s
    s.close()


def test_external_teacher_too_slow_retries_with_backoff_then_proceeds_without_signal(slow_server, tokenizer):
    retry = RetryConfig(attempts=3, backoff_initial_s=0.2, backoff_max_s=1.0, timeout_s=0.5)
    cfg = ExternalTeacherConfig(url=slow_server.url, model="teacher", top_k=5, retry=retry)
    teacher = ExternalTeacher(cfg, tokenizer)
    feedbacks = [Feedback(solution_text="2+3 = 5"), Feedback(feedback_text="Wrong: expected 5."), Feedback()]

    def response(text: str, fb: Feedback) -> Response:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
        return Response(token_ids=ids, logprobs=np.full(len(ids), -1.0, np.float32), text=text, feedback=fb)

    group = Group(
        job_id="j",
        group_id="g1",
        prompt_text="What is 2+3?",
        responses=[
            response(t, fb) for t, fb in zip(["It is 5.", "It is 6.", "Maybe 4."], feedbacks, strict=True)
        ],
    )
    stage = TeacherStage(teacher)
    t0 = time.monotonic()
    out = asyncio.run(stage.handle(group))
    elapsed = time.monotonic() - t0
    # Two responses have a teacher signal: each of their requests was tried exactly 3 times.
    assert sorted(slow_server.completions.values()) == [3, 3]
    # 3 timeouts of 0.5 s plus 2 backoff sleeps of 0.2 and 0.4 s, each jittered by 0.5-1.5x;
    # well below the server's hang: the client timed out, it did not wait for the server.
    assert 3 * 0.5 + 0.5 * (0.2 + 0.4) <= elapsed < HANG_S / 3, elapsed
    assert all(r.teacher is None for r in out.responses)
    m = stage.metrics()
    assert m["teacher_unavailable"] == 2 and m["teacher_groups_without_signal"] == 1
    assert m["teacher_skipped_no_signal"] == 1 and m["teacher_scored"] == 0
    assert out.metadata["teacher_unavailable"] == "2"
