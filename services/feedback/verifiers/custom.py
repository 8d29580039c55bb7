"""Custom verifier: an HTTP endpoint grades the response.

Request (POST, JSON): ``{"task_id", "prompt", "response", "answer", "metadata"}``.
Answer (200, JSON): ``{"reward": float, "success": bool (optional, default reward >= 1),
"feedback": str | null (optional)}``. Anything else counts as a verifier failure
(SANDBOX_ERROR: not the model's fault, no feedback)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distil.data import Task

from .protocol import Grade, Split, TestOutcome


class CustomVerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, description="used when the task names no verifier_url")
    timeout_s: float = Field(default=30.0, gt=0)


class VerifierAnswer(BaseModel):
    reward: float
    success: bool | None = None
    feedback: str | None = None


class CustomVerifier:
    def __init__(self, config: CustomVerifierConfig | None = None) -> None:
        self.config = config or CustomVerifierConfig()
        self._client = httpx.Client(timeout=self.config.timeout_s)

    def grade(self, task: Task, response: str, *, split: Split = "public", truncated: bool = False) -> Grade:
        url = task.verifier_url or self.config.url
        if not url:
            return self._failure("no verifier_url on the task and none configured")
        payload = {
            "task_id": task.id,
            "prompt": task.prompt,
            "response": response,
            "answer": task.answer,
            "metadata": task.metadata,
        }
        try:
            reply = self._client.post(url, json=payload)
            reply.raise_for_status()
            answer = VerifierAnswer.model_validate(reply.json())
        except (httpx.HTTPError, ValueError, ValidationError) as exc:
            return self._failure(f"verifier endpoint {url} failed: {exc}")
        success = answer.success if answer.success is not None else answer.reward >= 1.0
        return Grade(
            reward=answer.reward,
            success=success,
            fraction_passed=1.0 if success else 0.0,
            tests=[TestOutcome(index=0, status="AC" if success else "WA")],
            feedback=None if success else answer.feedback,
            answer_key=" ".join(response.split()),  # the endpoint extracts no answer: the text
        )

    @staticmethod
    def _failure(detail: str) -> Grade:
        return Grade(
            reward=0.0, success=False, tests=[TestOutcome(index=0, status="SANDBOX_ERROR", error=detail)]
        )

    def close(self) -> None:
        self._client.close()
