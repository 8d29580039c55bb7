"""A tiny reference implementation of the external feedback endpoint protocol
(docs/feedback.md): a rule-based "critic" that turns the trajectory's test results into a
short review. Run it with ``uvicorn --factory services.feedback.reference_endpoint:create_app``.

``mode="sync"`` answers at once (200). ``mode="callback"`` answers 202 and posts the review
to the trajectory's ``callback_url`` after ``delay_s``."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict


class Trajectory(BaseModel):
    model_config = ConfigDict(extra="allow")
    request_id: str
    task_id: str
    prompt: str
    response: str
    reward: float | None = None
    success: bool | None = None
    tests: list[dict[str, Any]] = []
    environment_feedback: str | None = None
    callback_url: str | None = None


def review(t: Trajectory) -> dict[str, Any]:
    if t.success:
        return {"feedback": None, "reward": None}
    failed = [x for x in t.tests if x.get("status") != "AC"]
    text = f"Reviewer: the answer fails {len(failed)} of {len(t.tests)} tests."
    if failed:
        first = failed[0]
        text += f" First failure: {first.get('status')}"
        if first.get("input"):
            text += f" on {first['input'][:200]!r}"
        text += "."
    if not t.tests:
        text += " No code could be graded; put the solution in a ```python block."
    return {"feedback": text, "reward": None}


def create_app(mode: Literal["sync", "callback"] = "sync", delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="distil reference feedback endpoint")
    app.state.received = []

    def answer_later(url: str, body: dict[str, Any]) -> None:
        time.sleep(delay_s)
        try:
            httpx.post(url, json=body, timeout=10)
        except httpx.HTTPError:
            pass  # the service proceeds without it after its timeout

    @app.post("/feedback")
    def feedback(t: Trajectory) -> Any:
        app.state.received.append(t.request_id)
        body = review(t)
        if mode == "callback" and t.callback_url:
            threading.Thread(target=answer_later, args=(t.callback_url, body), daemon=True).start()
            return JSONResponse({"status": "pending"}, status_code=202)
        return body

    return app
