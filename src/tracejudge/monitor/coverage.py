"""What the Redis rollups cover, so ``--source auto`` never reads a window Redis does not hold whole.

Redis covers ``[start, end)`` when all of these hold:

* workers were recording before ``start``: the ``since`` record (wall-clock time of the first recording, kept
  alive by every recording, gone with the rollups after 35 idle days) is at or before ``start``. A trace that
  started after ``since`` was judged after it, so it was recorded (a trace judged before ``since`` was not);
* ``start`` is within the last 35 days (older buckets have expired);
* no trace of the window is *pending*: marked before its write-back and not recorded since (a rollup write that
  failed, a worker lost in between, a budget-deferred evaluation). Marks younger than :data:`IN_FLIGHT_MS`
  are evaluations in flight, not gaps.

Evaluations in ``sync`` mode record into Redis too when ``TRACEJUDGE_REDIS_URL`` is set; one that ran without a
Redis leaves no trace here, which is why ``--source mlflow`` remains the source of truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tracejudge.monitor.rollup import BUCKET_MS, bucket_of
from tracejudge.monitor.rollup_store import TTL_SECONDS, base_key

#: A pending mark younger than this is an evaluation between its write-back and its rollup (the lock's holder
#: writes within seconds); older, the rollup write was lost.
IN_FLIGHT_MS = 10 * 60 * 1000


@dataclass
class Coverage:
    """What Redis holds of an experiment's judged traces."""

    since_ms: int | None  #: workers have recorded every judgement from here (None: nothing recorded)
    oldest_ms: int  #: the oldest bucket start still kept (35 days)
    pending: dict[str, int] = field(default_factory=dict)  #: trace id -> bucket, rollup not recorded (not in flight)

    @property
    def from_ms(self) -> int | None:
        """Where complete coverage starts (None: nowhere)."""
        return None if self.since_ms is None else max(self.since_ms, self.oldest_ms)

    def gap(self, start_ms: int, end_ms: int) -> str | None:
        """Why Redis does not cover ``[start_ms, end_ms)``, or None when it does."""
        if self.since_ms is None:
            return "Redis holds no rollups for this experiment"
        if start_ms < self.oldest_ms:
            return "the window starts more than 35 days ago (older rollups have expired)"
        if start_ms < self.since_ms:
            return f"workers started recording rollups only at {_iso(self.since_ms)}"
        missed = sorted(t for t, b in self.pending.items() if start_ms <= b < end_ms)
        if missed:
            return f"{len(missed)} trace(s) of the window were judged but not recorded in Redis (e.g. {missed[0]})"
        return None


def read_coverage(redis: Any, experiment_id: str, *, prefix: str = "", now_ms: int | None = None) -> Coverage:
    """Read the coverage record of one experiment (one round trip; pending marks older than the rollups are ignored)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base = base_key(prefix, experiment_id)
    oldest = bucket_of(now_ms - TTL_SECONDS * 1000) + BUCKET_MS
    pipe = redis.pipeline(transaction=False)
    pipe.get(f"{base}since")
    pipe.zrangebyscore(f"{base}pending", oldest, "+inf", withscores=True)
    pipe.hgetall(f"{base}pending_at")
    since, pending, marked = pipe.execute()
    at = {_text(k): int(float(v)) for k, v in (marked or {}).items()}
    gaps = {
        _text(member): int(score)
        for member, score in pending
        if now_ms - at.get(_text(member), 0) >= IN_FLIGHT_MS
    }
    return Coverage(since_ms=int(since) if since is not None else None, oldest_ms=oldest, pending=gaps)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _iso(ms: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
