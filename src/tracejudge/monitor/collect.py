"""The one entry point: :func:`summarise_quality` reads counters from Redis or MLflow and summarises them.

Which source (``MonitorQuery.source``):

* ``redis``: the rollups workers keep as they write (:mod:`tracejudge.monitor.rollup_store`); 100,000 traces in a
  7-day window take about a second (``bench/monitor.py``);
* ``mlflow``: paged ``search_traces`` (the source of truth; every judged trace read back, about 1-2 ms each);
* ``auto`` (default): Redis when it covers the window whole (:mod:`tracejudge.monitor.coverage`), else MLflow;
  ``QualitySummary.source_note`` says why.

Both sources sum the same per-trace contribution of the same reading of MLflow's record
(:mod:`tracejudge.monitor.record`), so they give the same figures; only tracejudge's own results
(LLM_JUDGE/CODE feedback with our key) count in the judges' figures, people's feedback is in ``human_agreement``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from tracejudge.monitor.links import links_for
from tracejudge.monitor.models import QualitySummary
from tracejudge.monitor.record import trace_record
from tracejudge.monitor.rollup import Rollup, rollup_from_traces
from tracejudge.monitor.rollup_store import load_rollup
from tracejudge.monitor.summary import BUCKET_SECONDS, summarise
from tracejudge.monitor.window import BadQuery, MonitorQuery

log = logging.getLogger(__name__)

#: The production controls' daily counters (``tasks/counters.py``): hash of ``<workflow>|<event>`` -> n.
COUNTS_KEY = "tracejudge:counts:{day}"
#: Their daily budget spend (``tasks/budget.py``), nano-USD.
SPENT_KEY = "tracejudge:budget:{day}:spent"
NANO = 1_000_000_000
#: The deferred evaluations' per-trace index (``controls/deferred.py``, ``TRACES_KEY``): trace id -> how many entries
#: of that trace wait in the deferred set or its processing set.
DEFERRED_TRACES_KEY = "tracejudge:deferred:traces"
#: Trace ids asked per ``HMGET``.
LOOKUP_CHUNK = 1000


def summarise_quality(
    query: MonitorQuery,
    *,
    client: Any = None,
    redis: Any = None,
    prefix: str | None = None,
    tracking_uri: str | None = None,
    now_ms: int | None = None,
) -> QualitySummary:
    """Summarise judged quality for ``query`` (see the module docstring for the source).

    Raises :class:`BadQuery` (bad option) and ``ExperimentNotFound``.
    """
    from tracejudge.mlflow_io import query as mlq

    started = time.perf_counter()
    client = client or _client(tracking_uri)
    experiment_id = mlq.resolve_experiment(client, query.experiment)
    start_ms, end_ms = query.window(now_ms=now_ms)
    prefix = _prefix() if prefix is None else prefix
    source = query.source
    if source == "redis" and redis is None:
        raise BadQuery("source=redis: no Redis to read rollups from (set TRACEJUDGE_REDIS_URL)")
    note = None
    if source != "mlflow":
        gap = redis_gap(redis, experiment_id, start_ms, end_ms, prefix=prefix, now_ms=now_ms)
        if source == "auto":
            source = "redis" if gap is None else "mlflow"
            note = "Redis rollups cover the window" if gap is None else f"read MLflow: {gap}"
        elif gap is not None:
            note = f"Redis may miss part of this window: {gap}; --source mlflow reads the record"
    if source == "redis":
        rollup = load_rollup(
            redis, experiment_id, start_ms, end_ms, workflow=query.workflow, environment=query.environment, prefix=prefix
        )
    else:
        rollup = mlflow_rollup(client, experiment_id, start_ms, end_ms, workflow=query.workflow, environment=query.environment)
    summary = summarise(
        rollup,
        experiment_id=experiment_id,
        start_ms=start_ms,
        end_ms=end_ms,
        bucket=query.bucket,
        source=source,
        links=links_for(experiment_id, tracking_uri=tracking_uri or _tracking_uri()),
        workflow=query.workflow,
        environment=query.environment,
        scheduled=scheduled_traces(redis, prefix),
    )
    if redis is not None:
        summary.counters, summary.daily_counters = read_counters(redis, prefix, start_ms, end_ms, workflow=query.workflow)
    summary.source_note = note
    if source == "mlflow":
        summary.human_agreement = human_agreement(client, experiment_id, start_ms, end_ms)
    from tracejudge.monitor.sessions import session_figures

    # filtered like the trace figures, on each session's first turn; their note says how
    summary.sessions = session_figures(
        client, experiment_id, start_ms, end_ms, workflow=query.workflow, environment=query.environment, source=source
    )
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def human_agreement(client: Any, experiment_id: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Judge-vs-human agreement in the window, when people left feedback; best effort (logged, never fatal)."""
    from tracejudge.judges.agreement import agreement_by_judge
    from tracejudge.mlflow_io.feedback import judge_human_pairs

    try:
        return agreement_by_judge(list(judge_human_pairs(client, experiment_id, start_ms, end_ms)))
    except Exception as exc:  # the report stands without it
        log.warning("judge-vs-human agreement not computed: %s", exc)
        return []


def mlflow_rollup(
    client: Any, experiment_id: str, start_ms: int, end_ms: int, *, workflow: str | None = None, environment: str | None = None
) -> Rollup:
    """Counters built in memory from every judged trace in the window (paged ``search_traces``)."""
    from tracejudge.mlflow_io.query import judged_traces

    records = (trace_record(row) for row in judged_traces(client, experiment_id, start_ms, end_ms, workflow=workflow))
    return rollup_from_traces(r for r in records if environment is None or r.environment == environment)


def read_counters(
    redis: Any, prefix: str, start_ms: int, end_ms: int, *, workflow: str | None = None
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The production controls' daily counters (sampled, skipped, cache hits, budget refusals) and budget spend
    for the UTC days the window touches: totals, and per day. Empty when that feature keeps none."""
    from datetime import datetime, timezone

    days = []
    day_ms = (start_ms // 86_400_000) * 86_400_000
    while day_ms < end_ms:
        days.append(datetime.fromtimestamp(day_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d"))
        day_ms += 86_400_000
    totals: dict[str, float] = {}
    daily: dict[str, dict[str, float]] = {}
    try:
        pipe = redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(prefix + COUNTS_KEY.format(day=day))
            pipe.get(prefix + SPENT_KEY.format(day=day))
        replies = pipe.execute()
    except Exception as exc:  # counters are extras; the summary stands without them
        log.warning("could not read counters from Redis: %s", exc)
        return totals, daily
    for i, day in enumerate(days):
        counts, spent = replies[2 * i], replies[2 * i + 1]
        row: dict[str, float] = {}
        for raw, value in (counts or {}).items():
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            wf, _, event = name.rpartition("|")
            if workflow is not None and wf != workflow:
                continue
            row[event] = row.get(event, 0.0) + float(value)
        if spent is not None:
            row["budget_spent_usd"] = round(int(spent) / NANO, 6)
        if row:
            daily[day] = row
            for k, v in row.items():
                totals[k] = round(totals.get(k, 0.0) + v, 6)
    return totals, daily


def scheduled_traces(redis: Any, prefix: str) -> Callable[[set[str]], set[str] | None] | None:
    """Which of the window's traces with a retry due have an evaluation waiting in the deferred set (an automatic
    retry, or a budget deferral): a lookup of just those trace ids in the set's per-trace index
    (:data:`DEFERRED_TRACES_KEY`), never the deferred requests themselves. None without Redis; the lookup answers
    None when Redis cannot be read (the report then says it did not ask).

    >>> import fakeredis
    >>> r = fakeredis.FakeRedis()
    >>> _ = r.hset("t:" + DEFERRED_TRACES_KEY, "tr-1", 1)
    >>> scheduled_traces(r, "t:")({"tr-1", "tr-2"})
    {'tr-1'}
    """
    if redis is None:
        return None
    key = prefix + DEFERRED_TRACES_KEY

    def lookup(trace_ids: set[str]) -> set[str] | None:
        ids = sorted(trace_ids)
        try:
            if not ids:
                redis.ping()  # none due: still say whether Redis was read
                return set()
            pipe = redis.pipeline(transaction=False)
            for i in range(0, len(ids), LOOKUP_CHUNK):
                pipe.hmget(key, ids[i : i + LOOKUP_CHUNK])
            counts = [n for reply in pipe.execute() for n in reply]
        except Exception as exc:  # coordination is an extra here; the record's figures stand without it
            log.warning("could not read the deferred set from Redis: %s", exc)
            return None
        return {trace_id for trace_id, n in zip(ids, counts) if n is not None and int(n) > 0}

    return lookup


def redis_gap(
    redis: Any, experiment_id: str, start_ms: int, end_ms: int, *, prefix: str = "", now_ms: int | None = None
) -> str | None:
    """Why the Redis rollups do not cover ``[start_ms, end_ms)`` (None: they do; see :mod:`.coverage`)."""
    from tracejudge.monitor.coverage import read_coverage

    if redis is None:
        return "no Redis to read rollups from"
    try:
        return read_coverage(redis, experiment_id, prefix=prefix, now_ms=now_ms).gap(start_ms, end_ms)
    except Exception as exc:  # Redis down: MLflow still answers
        log.warning("Redis unavailable for rollups (%s); reading MLflow", exc)
        return f"Redis unavailable ({type(exc).__name__})"


def _prefix() -> str:
    from tracejudge.config import Settings

    return Settings.from_env().key_prefix


def _tracking_uri() -> str | None:
    from tracejudge.config import Settings

    return Settings.from_env().mlflow_tracking_uri


def _client(tracking_uri: str | None) -> Any:
    """The MLflow client, through ``mlflow_io``'s one door (:class:`~tracejudge.mlflow_io.store.TraceStore`)."""
    from tracejudge.mlflow_io.store import TraceStore

    return TraceStore(tracking_uri or _tracking_uri()).client


__all__ = ["summarise_quality", "mlflow_rollup", "trace_record", "BUCKET_SECONDS"]
