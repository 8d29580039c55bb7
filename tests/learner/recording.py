"""A weight transport that records what the learner sends instead of delivering it."""

from __future__ import annotations

from services.learner.publish import WeightTransport, WeightUpdate


class RecordingTransport(WeightTransport):
    def __init__(self) -> None:
        self.sent: list[WeightUpdate] = []

    def send(self, update: WeightUpdate) -> list:
        self.sent.append(update)
        return []
