"""Generated code tasks for the CPU demo and the comparison benchmark.

Each family is a one-line Python function specified in words with a parameter (a
multiplier, a threshold, a character...). Instances differ in the parameter, so a
held-out instance is a problem never seen in training (its prompt text and expected
outputs differ) while staying within reach of a 135M instruct model, which writes short
functions but often misreads the spec; execution feedback (which input gave which wrong
output) and successful siblings tell it exactly what went wrong.

Tests are function-call tests graded by the sandbox: 3 public (training feedback) and 5
private (evaluation) per task.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from distil.data import CallTest, Task

INSTRUCTION = "Write a Python function `f` for this. Answer with only the code in a ```python block.\n\n"


@dataclass(frozen=True)
class Family:
    name: str
    spec: Callable[[int], str]  # parameter -> specification text
    solve: Callable[[int], Callable]  # parameter -> reference implementation
    source: Callable[[int], str]  # parameter -> reference solution source
    inputs: Callable[[random.Random], list]  # rng -> one call's positional arguments
    params: tuple[int, ...]


def _ints(rng: random.Random) -> list:
    return [rng.randint(-20, 50)]


def _lists(rng: random.Random) -> list:
    return [[rng.randint(-10, 30) for _ in range(rng.randint(1, 6))]]


def _words(rng: random.Random) -> list:
    return ["".join(rng.choice("abcdeio") for _ in range(rng.randint(2, 7)))]


FAMILIES: tuple[Family, ...] = (
    Family(
        "affine",
        lambda k: f"f(x) returns x multiplied by {k}, plus {k + 1}.",
        lambda k: lambda x: x * k + k + 1,
        lambda k: f"def f(x):\n    return x * {k} + {k + 1}\n",
        _ints,
        tuple(range(2, 12)),
    ),
    Family(
        "repeat",
        lambda k: f"f(s) returns the string s repeated {k} times.",
        lambda k: lambda s: s * k,
        lambda k: f"def f(s):\n    return s * {k}\n",
        _words,
        tuple(range(2, 10)),
    ),
    Family(
        "sum_above",
        lambda k: f"f(xs) returns the sum of the numbers in the list xs that are greater than {k}.",
        lambda k: lambda xs: sum(v for v in xs if v > k),
        lambda k: f"def f(xs):\n    return sum(v for v in xs if v > {k})\n",
        _lists,
        tuple(range(0, 12)),
    ),
    Family(
        "divisible",
        lambda k: f"f(n) returns True if the integer n is divisible by {k}, and False otherwise.",
        lambda k: lambda n: n % k == 0,
        lambda k: f"def f(n):\n    return n % {k} == 0\n",
        _ints,
        tuple(range(2, 12)),
    ),
    Family(
        "count_char",
        lambda k: f"f(s) returns how many times the letter '{'abcdeio'[k]}' appears in the string s.",
        lambda k: lambda s, c="abcdeio"[k]: s.count(c),
        lambda k: f"def f(s):\n    return s.count({'abcdeio'[k]!r})\n",
        _words,
        tuple(range(0, 7)),
    ),
    Family(
        "add_to_each",
        lambda k: f"f(xs) returns a new list with {k} added to every number of the list xs.",
        lambda k: lambda xs: [v + k for v in xs],
        lambda k: f"def f(xs):\n    return [v + {k} for v in xs]\n",
        _lists,
        tuple(range(1, 12)),
    ),
)


# The never-solved regime of the comparison (paper, Section 6.3) made exact: the prompt names
# a rule without saying what it does, so no sample of the base model passes (its pass rate
# is 0 by construction, not by a finite sample), a 0/1 reward never fires, and only a teacher
# that sees the reference solution knows the rule. Not part of the demo's split.
SECRET = Family(
    "secret_rule",
    lambda k: f"f(x) applies secret rule number {k} to the integer x and returns the result.",
    lambda k: lambda x: x * (k + 3) - 2 * k,
    lambda k: f"def f(x):\n    return x * {k + 3} - {2 * k}\n",
    _ints,
    tuple(range(1, 5)),
)


def _task(family: Family, param: int, seed: int) -> Task:
    rng = random.Random(f"{family.name}-{param}-{seed}")
    fn = family.solve(param)
    calls = []
    while len(calls) < 8:
        args = family.inputs(rng)
        if args not in calls:
            calls.append(args)
    tests = [CallTest(fn="f", args=a, expected=fn(*a)) for a in calls]
    return Task(
        id=f"{family.name}-{param}",
        prompt=INSTRUCTION + family.spec(param),
        verifier="code",
        public_tests=tests[:3],
        private_tests=tests[3:],
        reference_solution=family.source(param),
        metadata={"family": family.name, "param": param, "source": "distil.demo"},
    )


def make_tasks(seed: int = 0) -> list[Task]:
    """Every (family, parameter) instance, in a fixed order."""
    return [_task(f, p, seed) for f in FAMILIES for p in f.params]


def secret_tasks(seed: int = 0) -> list[Task]:
    """The ``SECRET`` family's instances (the comparison's never-solved regime)."""
    return [_task(SECRET, p, seed) for p in SECRET.params]


def make_split(eval_fraction: float = 0.3, seed: int = 0) -> tuple[list[Task], list[Task]]:
    """(train, held-out): per family, a seeded random ``eval_fraction`` of its parameters is
    held out, so evaluation problems never appear in training."""
    rng = random.Random(seed)
    train, held = [], []
    for family in FAMILIES:
        params = list(family.params)
        rng.shuffle(params)
        n_eval = max(1, round(len(params) * eval_fraction))
        chosen = set(params[:n_eval])
        for p in family.params:
            (held if p in chosen else train).append(_task(family, p, seed))
    return train, held
