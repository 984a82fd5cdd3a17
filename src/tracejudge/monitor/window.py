"""What to summarise: an experiment, optional workflow and environment, a time window and a bucket size."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field, field_validator

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadQuery(ValueError):
    """A query option we cannot read; the message names the option."""


def parse_time(text: str, *, option: str = "--since", now_ms: int | None = None) -> int:
    """A time as ms since the epoch: a duration back from now (``7d``, ``24h``, ``90m``, ``2w``) or an ISO date/time.

    >>> parse_time("2d", now_ms=2 * 86400_000 + 5)
    5
    >>> parse_time("1970-01-02")
    86400000
    >>> parse_time("7days")
    Traceback (most recent call last):
    ...
    tracejudge.monitor.window.BadQuery: --since: cannot read '7days'; use a number and m, h, d or w (90m, 24h, 7d, 2w) or an ISO date or time (2026-11-01, 2026-11-01T08:00:00Z)
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (text or "").strip()
    match = DURATION.match(value)
    if match:
        return now_ms - int(float(match.group(1)) * UNIT_SECONDS[match.group(2)] * 1000)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(
            f"{option}: cannot read {value!r}; use a number and m, h, d or w (90m, 24h, 7d, 2w) "
            "or an ISO date or time (2026-11-01, 2026-11-01T08:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return int(parsed.timestamp() * 1000)


class MonitorQuery(BaseModel):
    """One summary request (the report's options, the dashboard's query parameters).

    >>> q = MonitorQuery(experiment="1", since="7d")
    >>> q.bucket, q.source
    ('day', 'auto')
    """

    experiment: str = Field(description="experiment id or name")
    workflow: str | None = None
    environment: str | None = None
    since: str = "7d"
    until: str | None = None
    bucket: Literal["hour", "day"] = "day"
    source: Literal["auto", "mlflow", "redis"] = "auto"

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, value: str) -> str:
        if not value or not value.strip():
            raise ValueError("experiment: give an experiment id or name")
        return value.strip()

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None, info) -> str | None:  # type: ignore[no-untyped-def]
        if value is not None:
            try:
                parse_time(value, option=info.field_name)
            except BadQuery as exc:  # the error already names the field once ("since: ..."), not twice
                raise ValueError(str(exc).removeprefix(f"{info.field_name}: ")) from None
        return value

    @field_validator("workflow", "environment")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    def window(self, *, now_ms: int | None = None) -> tuple[int, int]:
        """``(start_ms, end_ms)``; until defaults to now."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        start = parse_time(self.since, option="--since", now_ms=now_ms)
        end = parse_time(self.until, option="--until", now_ms=now_ms) if self.until else now_ms
        if start >= end:
            raise BadQuery(f"--since ({self.since}) must be before --until ({self.until or 'now'})")
        return start, end
