"""Rebuild the Redis rollups of a window from MLflow's record (they are a cache of it).

Every judged trace of the window is recorded again through the same replace script the workers use (its
contribution replaced, never added), pending marks of traces MLflow has no verdict for are taken back, and when
the window reaches the present the coverage record moves back to its start: Redis then holds every judged trace
from there. What ``tracejudge report --rebuild-rollups`` runs before it reports.

>>> from tracejudge.monitor.rebuild import Rebuilt
>>> Rebuilt(traces=3, dropped=1).text()
'rebuilt the rollups of 3 judged trace(s) from MLflow; 1 trace(s) without a verdict taken out'
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tracejudge.monitor.record import trace_record
from tracejudge.monitor.rollup import BUCKET_MS
from tracejudge.monitor.rollup_store import TTL_SECONDS, base_key, record_verdict

#: A window ending this close to now counts as reaching the present (for the coverage record).
PRESENT_MS = 60_000


@dataclass
class Rebuilt:
    traces: int
    dropped: int

    def text(self) -> str:
        return (f"rebuilt the rollups of {self.traces} judged trace(s) from MLflow; "
                f"{self.dropped} trace(s) without a verdict taken out")


def rebuild_rollups(
    client: Any, redis: Any, experiment_id: str, start_ms: int, end_ms: int, *, prefix: str = "",
    now_ms: int | None = None, batch: int = 200,
) -> Rebuilt:
    """Record every judged trace of ``[start_ms, end_ms)`` again from MLflow (see the module docstring)."""
    from tracejudge.mlflow_io.query import judged_traces

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base = base_key(prefix, experiment_id)
    pending = {
        (m.decode() if isinstance(m, bytes) else str(m))
        for m in redis.zrangebyscore(f"{base}pending", start_ms, end_ms - BUCKET_MS)  # whole buckets: their traces are read
    }
    n = 0
    pipe = redis.pipeline(transaction=False)
    for row in judged_traces(client, experiment_id, start_ms, end_ms):
        record_verdict(pipe, trace_record(row), experiment_id=experiment_id, prefix=prefix, now_ms=now_ms)
        pending.discard(row.trace_id)
        n += 1
        if n % batch == 0:
            pipe.execute()
    for trace_id in pending:  # marked, but MLflow has no verdict for it: whatever Redis held for it goes
        record_verdict(pipe, None, experiment_id=experiment_id, prefix=prefix, trace_id=trace_id, now_ms=now_ms)
    pipe.execute()
    since = redis.get(f"{base}since")
    if end_ms >= now_ms - PRESENT_MS and (since is None or int(since) > start_ms):
        redis.set(f"{base}since", max(start_ms, now_ms - TTL_SECONDS * 1000), px=TTL_SECONDS * 1000)
    return Rebuilt(traces=n, dropped=len(pending))


def rebuild_window(query: Any, *, redis: Any, client: Any = None, prefix: str | None = None,
                   now_ms: int | None = None) -> Rebuilt:
    """:func:`rebuild_rollups` for a :class:`~tracejudge.monitor.window.MonitorQuery`'s experiment and window."""
    from tracejudge.mlflow_io.query import resolve_experiment
    from tracejudge.monitor.collect import _client, _prefix

    client = client or _client(None)
    start_ms, end_ms = query.window(now_ms=now_ms)
    return rebuild_rollups(
        client, redis, resolve_experiment(client, query.experiment), start_ms, end_ms,
        prefix=_prefix() if prefix is None else prefix, now_ms=now_ms,
    )
