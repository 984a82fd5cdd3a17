"""The evaluation's rollup step: keep the monitor's Redis rollups equal to what MLflow's record says.

Two calls around the write-back (:func:`tracejudge.tasks.evaluate.evaluate_request`):

* :func:`before_writeback` marks the trace pending: its record is about to change. Until its rollup is recorded,
  ``report --source auto`` does not trust Redis for its bucket (a failed rollup write, or a worker lost between
  the write-back and the rollup, leaves the mark: Redis then says it does not cover that window);
* :func:`record` reads the trace's record as it stands after the write-back (``monitor.record``) and replaces the
  trace's contribution in Redis with it (one script: the old contribution taken back, the new one added).

A verdict that ends before any write-back (the trace not found or not whole, a bad payload, MLflow given up, a
skip...) changes no record: :func:`count_ended` counts it in the pipeline's counts alone (``ops.pipeline``), so
``tracejudge status`` and the pipeline rules see every verdict a worker returns, as ``tracejudge_evaluations_total``
does.

Never fails the evaluation: MLflow holds the verdict; the rollups are a cache of it. In ``sync`` mode (no worker)
the rollups are recorded too when ``TRACEJUDGE_REDIS_URL`` is set and answers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

#: After a failure, sync mode leaves Redis alone this long (an evaluation must not wait on a Redis that is down).
SYNC_RETRY_SECONDS = 60.0
_sync_lock = threading.Lock()
_sync_clients: dict[str, Any] = {}
_sync_down_until: dict[str, float] = {}


def before_writeback(runtime: Any, loaded: Any) -> None:
    """Mark the trace pending in the rollups (its record is about to change)."""
    redis = _redis(runtime)
    if redis is None or loaded.experiment_id is None:
        return
    from tracejudge.monitor.rollup_store import mark_pending

    try:
        mark_pending(
            redis, experiment_id=loaded.experiment_id, trace_id=loaded.trace_id,
            timestamp_ms=loaded.timestamp_ms or int(time.time() * 1000), prefix=runtime.settings.key_prefix,
        )
    except Exception as exc:
        _failed(runtime, exc, loaded.trace_id)


def record(
    runtime: Any,
    loaded: Any,
    *,
    written: Iterable[Any],
    superseded: Iterable[str],
    tags: Mapping[str, str],
    environment: str | None,
    verdict: Any = None,
    lag_seconds: float | None = None,
) -> None:
    """Replace the trace's contribution in the rollups with what its record now says (see the module docstring).

    ``written``: the feedbacks just written (``writer.feedback`` entities), ``superseded``: the assessment ids they
    override, ``tags``: the trace tags written (none for a partial run); ``verdict``: also counted in the
    pipeline's counts by verdict time (``ops.pipeline``), in the same round trip, by workers.
    """
    redis = _redis(runtime)
    if redis is None:
        return
    if loaded.experiment_id is None:  # no rollup to keep; the verdict still counts
        if verdict is not None:
            count_ended(runtime, verdict, lag_seconds=lag_seconds)
        return
    from tracejudge.monitor.record import record_after_writeback
    from tracejudge.monitor.rollup_store import record_verdict

    try:
        trace = record_after_writeback(loaded, written, superseded=superseded, tags=tags, environment=environment)
        pipe = redis.pipeline(transaction=False)
        record_verdict(
            pipe, trace, experiment_id=loaded.experiment_id, prefix=runtime.settings.key_prefix, trace_id=loaded.trace_id
        )
        if verdict is not None and runtime.redis is not None:
            from tracejudge.ops import pipeline

            pipeline.record_from_verdict(pipe, verdict, lag_seconds=lag_seconds, prefix=runtime.settings.key_prefix)
        pipe.execute()
    except Exception as exc:  # the pending mark stays: Redis says it does not cover this trace's window
        _failed(runtime, exc, loaded.trace_id)
        if verdict is not None and runtime.redis is not None:  # the verdict still counts (a second count of one
            count_ended(runtime, verdict, lag_seconds=lag_seconds)  # evaluation replaces its own entry)


def count_ended(runtime: Any, verdict: Any, *, lag_seconds: float | None = None) -> Any:
    """Count a worker's verdict that ended before any write-back in the pipeline's counts (one round trip, best
    effort: a Redis failure is logged) and return it. Nothing without the worker's Redis (``sync`` mode).

    >>> from types import SimpleNamespace as NS
    >>> count_ended(NS(redis=None), "the verdict")
    'the verdict'
    """
    redis = runtime.redis
    if redis is None:
        return verdict
    from tracejudge.ops import pipeline

    try:
        pipe = redis.pipeline(transaction=False)
        pipeline.record_from_verdict(pipe, verdict, lag_seconds=lag_seconds, prefix=runtime.settings.key_prefix)
        pipe.execute()
    except Exception as exc:
        log.warning("could not count the verdict of %s in the pipeline's counts: %s", getattr(verdict, "trace_id", "?"), exc)
    return verdict


def _failed(runtime: Any, exc: Exception, trace_id: str) -> None:
    log.warning("could not update the monitor rollups for %s: %s", trace_id, exc)
    if runtime.redis is None:
        with _sync_lock:
            _sync_down_until[runtime.settings.redis_url] = time.monotonic() + SYNC_RETRY_SECONDS


def _redis(runtime: Any) -> Any:
    """The worker's Redis; in ``sync`` mode a client of its own when ``TRACEJUDGE_REDIS_URL`` is set (short timeouts)."""
    if runtime.redis is not None:
        return runtime.redis
    settings = runtime.settings
    if "redis_url" not in settings.model_fields_set:
        return None
    url = settings.redis_url
    with _sync_lock:
        if _sync_down_until.get(url, 0.0) > time.monotonic():
            return None
        client = _sync_clients.get(url)
        if client is None:
            import redis

            client = _sync_clients[url] = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        return client
