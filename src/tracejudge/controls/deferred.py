"""Evaluations put off until the budget renews (``budget.on_exceed: defer``).

A deferred request is kept in a Redis sorted set scored by the start of the
next UTC day, and the beat task :func:`release_due` sends the due ones again
with their own evaluation id, so a caller waiting on the handle gets the
verdict when it comes. Judge results already made are on the trace and are
reused; only the calls the budget refused are made again.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from tracejudge.payload import EvaluationRequest

DEFERRED_KEY = "tracejudge:deferred"


def next_utc_day(now: float | None = None) -> float:
    """The epoch second at which the next UTC day (and a new budget) starts.

    >>> next_utc_day(0.0)
    86400.0
    """
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc) + timedelta(days=1)
    return start.timestamp()


def defer(redis: Any, prefix: str, request: EvaluationRequest, *, until: float | None = None) -> float:
    """Keep ``request`` until ``until`` (default: the next UTC day); returns that time."""
    when = next_utc_day() if until is None else until
    redis.zadd(f"{prefix}{DEFERRED_KEY}", {request.model_dump_json(exclude_none=True): when})
    return when


def release_due(redis: Any, prefix: str, send: Callable[[EvaluationRequest], Any], *, now: float | None = None, limit: int = 1000) -> int:
    """Send the deferred requests that are due; returns how many were sent.

    Each is removed before it is sent (ZREM decides who sends it, so two beat
    processes never send one twice); one that cannot be sent is put back.
    """
    key = f"{prefix}{DEFERRED_KEY}"
    due = redis.zrangebyscore(key, "-inf", time.time() if now is None else now, start=0, num=limit)
    sent = 0
    for raw in due:
        if not redis.zrem(key, raw):
            continue  # another releaser took it
        request = EvaluationRequest.model_validate(json.loads(raw))
        try:
            send(request)
        except Exception:
            redis.zadd(key, {raw: time.time() + 60})
            raise
        sent += 1
    return sent


def pending(redis: Any, prefix: str) -> int:
    return int(redis.zcard(f"{prefix}{DEFERRED_KEY}"))


def release(runtime: Any, send: Callable[[EvaluationRequest], Any]) -> int:
    """The beat task's body: send the due deferred evaluations (none without Redis)."""
    state = runtime.state
    if getattr(state, "redis", None) is None:
        return 0
    return release_due(state.redis, state.prefix, send)
