"""The gateway's bearer token: ``$DISTIL_API_TOKEN``, else the file named by
``$DISTIL_API_TOKEN_FILE``, else ``<data_dir>/api-token`` (created with a random token,
mode 0600, on first start so a fresh install is never open)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from distil.paths import data_dir


def token_file() -> Path:
    return Path(os.environ.get("DISTIL_API_TOKEN_FILE") or data_dir() / "api-token")


def load_token(create: bool = True) -> str:
    env = os.environ.get("DISTIL_API_TOKEN")
    if env:
        return env.strip()
    path = token_file()
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    if not create:
        raise RuntimeError(f"no API token: set DISTIL_API_TOKEN or write one to {path}")
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def check_bearer(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())
