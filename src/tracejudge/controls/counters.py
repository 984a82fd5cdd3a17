"""Daily counters of the production controls, in Redis, for monitoring.

One hash per UTC day, ``tracejudge:counts:<day>``, with fields
``<workflow>|<event>``: ``sampled``, ``skipped_sampling``, ``skipped_filter``,
``skipped_judge_sampling`` (one per judge left out of a sampled trace),
``cache_hit``, ``cache_miss``, ``budget_exceeded``, ``retry_scheduled``,
``retries_exhausted``. A trace skipped by
``enqueue`` has no workflow name unless the caller gave one (``*`` then).

>>> field("article_writer", SAMPLED)
'article_writer|sampled'
"""

from __future__ import annotations

import atexit
import threading
from collections import Counter
from typing import Any

from tracejudge.controls.budget import KEY_TTL_SECONDS, utc_day

SAMPLED = "sampled"
SKIPPED_SAMPLING = "skipped_sampling"
SKIPPED_FILTER = "skipped_filter"
SKIPPED_JUDGE_SAMPLING = "skipped_judge_sampling"
CACHE_HIT = "cache_hit"
CACHE_MISS = "cache_miss"
BUDGET_EXCEEDED = "budget_exceeded"
#: A background evaluation left transient failures and was put off for a retry (``controls.retries``)...
RETRY_SCHEDULED = "retry_scheduled"
#: ... or had used up its retries (the trace keeps its non-final results until a backfill).
RETRIES_EXHAUSTED = "retries_exhausted"
ANY_WORKFLOW = "*"


def counts_key(prefix: str, day: str | None = None) -> str:
    return f"{prefix}tracejudge:counts:{day or utc_day()}"


def field(workflow: str | None, event: str) -> str:
    return f"{workflow or ANY_WORKFLOW}|{event}"


def _queue_counts(pipe: Any, prefix: str, counts: dict[tuple[str | None, str], int]) -> None:
    key = counts_key(prefix)
    for (workflow, event), n in counts.items():
        pipe.hincrby(key, field(workflow, event), n)
    pipe.expire(key, KEY_TTL_SECONDS)


def add(redis: Any, prefix: str, counts: dict[tuple[str | None, str], int]) -> None:
    """Add ``{(workflow, event): n}`` to today's counters (sync client, one round trip)."""
    if counts:
        pipe = redis.pipeline(transaction=False)
        _queue_counts(pipe, prefix, counts)
        pipe.execute()


async def add_async(redis: Any, prefix: str, counts: dict[tuple[str | None, str], int]) -> None:
    """:func:`add` with an asyncio client."""
    if counts:
        pipe = redis.pipeline(transaction=False)
        _queue_counts(pipe, prefix, counts)
        await pipe.execute()


def read(redis: Any, prefix: str, day: str | None = None) -> dict[str, dict[str, int]]:
    """Today's (or ``day``'s) counters as ``{workflow: {event: n}}``."""
    raw = redis.hgetall(counts_key(prefix, day))
    out: dict[str, dict[str, int]] = {}
    for name, value in raw.items():
        text = name.decode() if isinstance(name, bytes) else str(name)
        workflow, _, event = text.rpartition("|")
        out.setdefault(workflow, {})[event] = int(value)
    return out


class BatchedCounter:
    """Counts kept in the process and added to Redis at most once per ``interval`` seconds.

    ``enqueue`` counts skipped traces here, so a skipped trace costs no Redis
    round trip on the caller's path; the counts are flushed by a timer thread
    and at exit.
    """

    def __init__(self, redis_factory: Any, prefix_factory: Any, *, interval: float = 1.0) -> None:
        self._redis_factory = redis_factory
        self._prefix_factory = prefix_factory
        self._interval = interval
        self._counts: Counter[tuple[str | None, str]] = Counter()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        atexit.register(self.flush)

    def incr(self, workflow: str | None, event: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(workflow, event)] += n
            if self._timer is None:
                self._timer = threading.Timer(self._interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = dict(self._counts), Counter()
            self._timer = None
        if not counts:
            return
        try:
            add(self._redis_factory(), self._prefix_factory(), counts)
        except Exception:  # monitoring counts are best effort; put them back for the next flush
            with self._lock:
                self._counts.update(counts)
