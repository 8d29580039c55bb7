"""External endpoint (a human reviewer, an LLM critic): we POST each trajectory; the
endpoint answers at once with feedback text (and optionally a reward), or answers 202 and
posts the answer later to our callback URL. After ``timeout_s`` the response proceeds
without it and is counted (``external_timed_out``). Protocol: docs/feedback.md."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..callbacks import CallbackRegistry, ExternalAnswer
from ..group import GroupContext, ResponseFeedback


class ExternalSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["external"] = "external"
    url: str
    timeout_s: float = Field(default=30.0, gt=0, description="per group, for sync answers and callbacks")
    use_reward: bool = Field(
        default=False, description="replace the verifier's reward when the endpoint gives one"
    )
    only_failures: bool = Field(default=False, description="ask only about responses that failed")
    max_concurrency: int = Field(default=16, ge=1)
    headers: dict[str, str] = {}


class ExternalSource:
    kind = "external"

    def __init__(
        self,
        config: ExternalSourceConfig,
        callbacks: CallbackRegistry | None = None,
        callback_base_url: str | None = None,
    ) -> None:
        self.config = config
        self.callbacks = callbacks
        self.callback_base_url = callback_base_url.rstrip("/") if callback_base_url else None
        self._client = httpx.Client(timeout=config.timeout_s, headers=config.headers)
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="external-feedback")

    def _payload(self, ctx: GroupContext, item: ResponseFeedback, request_id: str) -> dict:
        callback = None
        if self.callbacks is not None and self.callback_base_url:
            callback = f"{self.callback_base_url}/v1/feedback/callback/{request_id}"
        return {
            "request_id": request_id,
            "job_id": ctx.job_id,
            "group_id": ctx.group_id,
            "task_id": ctx.task.id,
            "prompt": ctx.task.prompt,
            "response": ctx.responses[item.index],
            "index": item.index,
            "reward": item.reward,
            "success": item.success,
            "tests": [
                {"status": t.status, "input": t.input[:500], "error": t.error[:500]} for t in item.tests
            ],
            "environment_feedback": item.texts.get("environment"),
            "callback_url": callback,
        }

    def _ask(
        self, ctx: GroupContext, item: ResponseFeedback, deadline_s: float
    ) -> tuple[str, ExternalAnswer | None]:
        request_id = uuid.uuid4().hex
        waiter = self.callbacks.expect(request_id) if self.callbacks is not None else None
        try:
            try:
                reply = self._client.post(self.config.url, json=self._payload(ctx, item, request_id))
            except httpx.TimeoutException:
                return "timed_out", None
            except httpx.HTTPError:
                return "failed", None
            if reply.status_code == 202 and waiter is not None:
                answer = waiter.wait(deadline_s)
                return ("answered", answer) if answer is not None else ("timed_out", None)
            if reply.status_code != 200:
                return "failed", None
            try:
                return "answered", ExternalAnswer.model_validate(reply.json())
            except (ValueError, ValidationError):
                return "failed", None
        finally:
            if self.callbacks is not None:
                self.callbacks.forget(request_id)

    def apply(self, ctx: GroupContext) -> None:
        asked = [item for item in ctx.items if not (self.config.only_failures and item.success)]
        futures = [self._pool.submit(self._ask, ctx, item, self.config.timeout_s) for item in asked]
        for item, future in zip(asked, futures, strict=True):
            status, answer = future.result()
            item.external = status
            ctx.count(f"external_{status}")
            if answer is None:
                continue
            if answer.feedback:
                item.texts[self.kind] = answer.feedback
            if self.config.use_reward and answer.reward is not None:
                item.reward = answer.reward

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
