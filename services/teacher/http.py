"""HTTP calls to remote teachers with bounded retries and exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import os
import random

import httpx

from .config import RetryConfig

log = logging.getLogger(__name__)


class TeacherUnavailable(RuntimeError):
    """A remote teacher did not answer after the configured retries."""


class TeacherRejected(RuntimeError):
    """A remote teacher answered with a client error (4xx): retrying would not help."""


class RemoteClient:
    """An httpx client for one OpenAI-compatible server."""

    def __init__(self, url: str, retry: RetryConfig, api_key_env: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"environment variable {api_key_env} (teacher api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=retry.timeout_s)

    async def request(self, method: str, path: str, json: dict | None = None) -> dict:
        delay = self.retry.backoff_initial_s
        last: Exception | None = None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                r = await self.client.request(method, path, json=json)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                last = exc
            else:
                if r.status_code < 400:
                    return r.json()
                if r.status_code != 429 and r.status_code < 500:
                    raise TeacherRejected(f"{method} {self.url}{path} -> {r.status_code}: {r.text[:500]}")
                last = RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            if attempt < self.retry.attempts:
                log.warning(
                    "teacher %s%s failed (%s); retry %d in %.2fs", self.url, path, last, attempt, delay
                )
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.retry.backoff_max_s)
        raise TeacherUnavailable(
            f"teacher at {self.url} did not answer {method} {path} after {self.retry.attempts} attempts "
            f"(last error: {last}); check the server or raise teacher.retry.attempts/timeout_s"
        )

    async def model_name(self, configured: str | None) -> str:
        if configured:
            return configured
        models = await self.request("GET", "/v1/models")
        data = models.get("data") or []
        if not data:
            raise TeacherRejected(f"teacher at {self.url} serves no models (GET /v1/models is empty)")
        return data[0]["id"]

    async def aclose(self) -> None:
        await self.client.aclose()
