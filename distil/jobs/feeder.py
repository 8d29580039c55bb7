"""Which prompt comes next: epochs over the training tasks, shuffled by seed, with a cursor
that survives restarts.

Epoch ``e`` visits the tasks in ``random.Random(seed + e)``'s shuffle of their indices. A
group's id is derived from (epoch, position), so re-issuing a prompt after a restart writes
the same group id and the bus drops the duplicate.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class Cursor:
    epoch: int = 0
    index: int = 0  # position inside the epoch's order
    issued: int = 0  # groups issued so far (all epochs)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Cursor:
        data = data or {}
        return cls(**{k: int(data[k]) for k in ("epoch", "index", "issued") if k in data})


@dataclass(frozen=True, slots=True)
class Issue:
    task_index: int  # index into the training tasks
    group_id: str
    epoch: int


class PromptFeeder:
    def __init__(self, n_tasks: int, *, seed: int, epochs: int | None, cursor: Cursor | None = None) -> None:
        if n_tasks < 1:
            raise ValueError("the training split has no tasks")
        self.n, self.seed, self.epochs = n_tasks, seed, epochs
        self.cursor = cursor or Cursor()
        self._order_epoch = -1
        self._order: list[int] = []

    def order(self, epoch: int) -> list[int]:
        if epoch != self._order_epoch:
            self._order = list(range(self.n))
            random.Random(self.seed + epoch).shuffle(self._order)
            self._order_epoch = epoch
        return self._order

    @property
    def exhausted(self) -> bool:
        return self.epochs is not None and self.cursor.epoch >= self.epochs

    def take(self, count: int) -> list[Issue]:
        """The next ``count`` prompts (fewer when the last epoch ends); advances the cursor."""
        out: list[Issue] = []
        c = self.cursor
        while len(out) < count and not (self.epochs is not None and c.epoch >= self.epochs):
            order = self.order(c.epoch)
            out.append(Issue(order[c.index], f"e{c.epoch}-i{c.index}", c.epoch))
            index, epoch = c.index + 1, c.epoch
            if index >= self.n:
                index, epoch = 0, epoch + 1
            c = Cursor(epoch=epoch, index=index, issued=c.issued + 1)
        self.cursor = c
        return out
