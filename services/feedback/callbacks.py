"""Late answers from external feedback endpoints arrive on our callback route and are
handed to the waiting grader thread here."""

from __future__ import annotations

import threading

from pydantic import BaseModel


class ExternalAnswer(BaseModel):
    """What an external endpoint answers (at once, or later through the callback)."""

    feedback: str | None = None
    reward: float | None = None


class _Waiter:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.answer: ExternalAnswer | None = None

    def set(self, answer: ExternalAnswer) -> None:
        self.answer = answer
        self._event.set()

    def wait(self, timeout_s: float) -> ExternalAnswer | None:
        self._event.wait(timeout_s)
        return self.answer


class CallbackRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self.late = 0  # answers that came after their item had moved on (or never asked)

    def expect(self, request_id: str) -> _Waiter:
        with self._lock:
            waiter = self._waiting[request_id] = _Waiter()
        return waiter

    def forget(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def deliver(self, request_id: str, answer: ExternalAnswer) -> bool:
        """True if someone was still waiting for this answer."""
        with self._lock:
            waiter = self._waiting.get(request_id)
            if waiter is None:
                self.late += 1
                return False
        waiter.set(answer)
        return True
