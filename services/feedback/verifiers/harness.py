"""The in-sandbox harness programs for function-call and check(candidate) tests.

Requests travel on stdin (read and closed before the candidate is imported); the verdict
is one line on stdout starting with a per-run random nonce. Expected values never enter
the sandbox for call tests: the result comes back as JSON and is compared here, in the
trusted parent. check(candidate) tests run twice: once with the candidate, recording the
plain-data result of every call, then the asserts are replayed on those results in a
second sandbox run that holds no candidate code -- the verdict comes from that run only.
"""

from __future__ import annotations

import json
import secrets
from functools import cache
from pathlib import Path

_HERE = Path(__file__).parent


@cache
def program(kind: str) -> str:
    """``call`` and ``check`` run with the candidate; ``replay`` runs without it."""
    body = (_HERE / f"_harness_{kind}.py").read_text()
    if kind == "replay":
        return body
    return (_HERE / "_harness_common.py").read_text() + "\n" + body


def request(**fields: object) -> tuple[str, str]:
    """(stdin text, nonce) for one harness run."""
    nonce = "@@verdict-" + secrets.token_hex(16) + "@@"
    return json.dumps({"nonce": nonce, **fields}), nonce


def verdict(stdout: str, nonce: str) -> dict | None:
    """The harness's verdict, or None if there is none or more than one (forgery)."""
    lines = [line for line in stdout.splitlines() if line.startswith(nonce)]
    if len(lines) != 1:
        return None
    try:
        value = json.loads(lines[0][len(nonce) :])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
