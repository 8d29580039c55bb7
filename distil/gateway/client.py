"""A small HTTP client of the gateway for the CLI: where the gateway is and its token."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from distil.paths import data_dir


def stack_file() -> Path:
    return data_dir() / "stack.json"


def gateway_url() -> str:
    if os.environ.get("DISTIL_URL"):
        return os.environ["DISTIL_URL"].rstrip("/")
    path = stack_file()
    if path.is_file():
        return json.loads(path.read_text())["url"]
    return "http://127.0.0.1:8000"


class GatewayError(RuntimeError):
    pass


class GatewayClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout_s: float = 30.0) -> None:
        from distil.gateway.auth import load_token

        self.url = (url or gateway_url()).rstrip("/")
        self.token = token or load_token(create=False)
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=timeout_s
        )

    def _check(self, r: httpx.Response) -> Any:
        if r.status_code == 422:
            detail = r.json().get("detail", [])
            lines = [f"  {e.get('loc')}: {e.get('msg')}" for e in detail if isinstance(e, dict)]
            raise GatewayError("invalid job spec:\n" + "\n".join(lines))
        if r.status_code >= 400:
            try:
                msg = r.json().get("detail", r.text)
            except ValueError:
                msg = r.text
            raise GatewayError(f"{r.request.method} {r.request.url.path}: HTTP {r.status_code}: {msg}")
        return r.json()

    def request(self, method: str, path: str, **kw) -> Any:
        try:
            return self._check(self.http.request(method, path, **kw))
        except httpx.TransportError as exc:
            raise GatewayError(
                f"cannot reach the gateway at {self.url} ({exc}); is `distil up` running?"
            ) from exc

    def submit(self, path: Path) -> dict:
        text = path.read_text(encoding="utf-8")
        ctype = "application/yaml" if path.suffix in (".yaml", ".yml") else "application/json"
        return self.request("POST", "/v1/jobs", content=text, headers={"Content-Type": ctype})

    def events(self, job_id: str, follow: bool = True, after: int = 0) -> Iterator[tuple[str, dict]]:
        params = {"follow": str(follow).lower(), "after": after}
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/events", params=params, timeout=None) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                kind, data, seq = "message", "", None
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        seq = int(line[4:]) if line[4:].isdigit() else None
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif not line and data:
                        # each event's data, with its sequence number (resume with after=seq)
                        yield kind, json.loads(data) | ({"seq": seq} if seq is not None else {})
                        kind, data, seq = "message", "", None
        except httpx.TransportError as exc:
            raise GatewayError(f"lost the event stream of {job_id}: {exc}") from exc
