"""Automatic pick-up: find new finished traces in MLflow and enqueue each once.

The beat task (``tracejudge.online_scan``, every ``online.interval_seconds``)
runs :func:`scan` on a worker. For each experiment in ``online.experiments``:

1. take the experiment's scan lock (a second scanner skips it this round);
2. search traces by when they *ended* (``trace.end_time_ms``: start +
   execution time) from the watermark minus an overlap up to ``now - delay``,
   and-ed with ``online.filter_string``, page by page. A trace is visible
   in the store within seconds of its end, however long it ran (a 10-minute
   agent run included); the overlap (``max(60 s, delay)``) covers that export
   lag. (Until 2026-12-05 the window was on the start time, so a trace that
   became visible more than ~90 s after it started was never picked up.)
3. for each finished trace: skip it if it was judged with the current plan
   (a feedback of ours carries the plan's fingerprint in its metadata, or the
   trace its ``tracejudge.plan`` tag: see :mod:`~tracejudge.controls.judged`);
   else claim its "seen" key (SET NX), and only the claimer enqueues it
   (through sampling; workers apply filters);
4. when every page is done, move the watermark to the window's end. When
   ``max_per_scan`` stopped the scan early, the watermark stays: pages are
   ordered by start time, not end (MLflow cannot order by end), so no end
   time is known below which everything was handled; the next scan reads
   the same window again and the seen keys skip what was enqueued.

A scan that fails (MLflow down) leaves the watermark where it was, so the
next one covers the same window again; the seen keys keep that from
enqueueing a trace twice, across restarts and several beat processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.mlflow_io.search import time_filter
from tracejudge.controls.judged import already_judged
from tracejudge.controls.scanning import scan_each_experiment
from tracejudge.ops import metrics

log = logging.getLogger(__name__)

#: Names under the Redis state: ``watermarks`` ``online:<experiment>``, ``seen`` per trace, a lock per experiment.
WATERMARK = "online:"
SCAN_LOCK = "scanlock:"
PAGE_SIZE = 200
#: The experiments pick-up has scanned (a Redis set): what ``pickup_watermarks`` reports on.
PICKUP_EXPERIMENTS = "pickup:experiments"
SEEN_TTL_SECONDS = 14 * 24 * 3600
#: A trace that appears in the store up to this long after it ended is still picked up.
MIN_OVERLAP_MS = 60_000
FINISHED_STATES = ("OK", "ERROR")


@dataclass
class ScanResult:
    """What one scan did, per experiment id."""

    enqueued: dict[str, int] = field(default_factory=dict)
    already_seen: dict[str, int] = field(default_factory=dict)
    already_judged: dict[str, int] = field(default_factory=dict)
    skipped_locked: list[str] = field(default_factory=list)

    @property
    def total_enqueued(self) -> int:
        return sum(self.enqueued.values())


def scan(
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    fingerprint: str,
    enqueue: Callable[[str, str], Any],
    now_ms: int | None = None,
    lock_seconds: float = 300.0,
) -> ScanResult:
    """Scan every ``online.experiments`` entry once (see the module docstring).

    ``store`` is the :class:`~tracejudge.mlflow_io.store.TraceStore`, ``state`` the
    :class:`~tracejudge.tasks.state.RedisState` (watermarks, seen keys, the scan lock);
    ``enqueue(trace_id, workflow_name)`` queues one trace. Raises ``MlflowUnavailable``
    (watermarks unchanged) when the store does not answer.
    """
    online = config.judges.online
    result = ScanResult()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(online.delay_seconds * 1000)
    scan_each_experiment(
        store, state, config, lock_prefix=SCAN_LOCK, lock_seconds=lock_seconds, skipped=result.skipped_locked,
        # every experiment scanned is one whose lag the metrics report (pickup_watermarks)
        on_each=lambda experiment_id: state.redis.sadd(state.key(PICKUP_EXPERIMENTS), experiment_id),
        scan_one=lambda experiment_id: _scan_experiment(
            experiment_id, store=store, state=state, config=config,
            fingerprint=fingerprint, enqueue=enqueue, cutoff=cutoff, result=result,
        ),
    )
    return result


def _scan_experiment(
    experiment_id: str,
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    fingerprint: str,
    enqueue: Callable[[str, str], Any],
    cutoff: int,
    result: ScanResult,
) -> None:
    online = config.judges.online
    raw = state.watermarks.get(f"{WATERMARK}{experiment_id}")
    watermark = int(raw) if raw is not None else None
    overlap = max(MIN_OVERLAP_MS, int(online.delay_seconds * 1000))
    since = None if watermark is None else watermark - overlap
    filter_string = time_filter(since_ms=since, until_ms=cutoff, extra=online.filter_string, field="end_time_ms")
    handled = 0
    stopped_early = False
    token = None
    while True:
        page = store.search_traces([experiment_id], filter_string=filter_string, max_results=PAGE_SIZE, page_token=token)
        for info in page.traces:
            trace_state = str(getattr(info, "state", "") or "").rsplit(".", 1)[-1].upper()
            if trace_state not in FINISHED_STATES:
                continue
            trace_id = info.trace_id
            tags = dict(getattr(info, "tags", None) or {})
            if already_judged(info, fingerprint):
                result.already_judged[experiment_id] = result.already_judged.get(experiment_id, 0) + 1
            elif state.seen.add(trace_id, ttl_seconds=SEEN_TTL_SECONDS):
                try:
                    enqueue(trace_id, tags.get("mlflow.traceName") or "")
                except BaseException:
                    state.seen.forget(trace_id)  # not queued: the next scan tries again
                    raise
                result.enqueued[experiment_id] = result.enqueued.get(experiment_id, 0) + 1
                handled += 1
            else:
                result.already_seen[experiment_id] = result.already_seen.get(experiment_id, 0) + 1
            if handled >= online.max_per_scan:
                stopped_early = True
                break
        if stopped_early or not page.next_page_token:
            break
        token = page.next_page_token
    new_mark = watermark if stopped_early else cutoff
    if new_mark is not None:  # only forward: a slower scanner never moves it back
        state.watermarks.advance(f"{WATERMARK}{experiment_id}", new_mark)
    log.info(
        "online scan of experiment %s: %d enqueued, %d already seen, %d already judged (watermark %s)",
        experiment_id, result.enqueued.get(experiment_id, 0), result.already_seen.get(experiment_id, 0),
        result.already_judged.get(experiment_id, 0), new_mark,
    )


def run_scan(runtime: Any, send: Callable[[Any], Any]) -> dict[str, Any]:
    """The beat task's body: one scan with the worker's own config, through sampling, ``send`` per trace.

    ``send(request)`` puts an :class:`~tracejudge.payload.EvaluationRequest` on the queue (the
    worker's Celery app). Sampled and sampled-out traces are counted per workflow and day.
    """
    from tracejudge.controls import counters
    from tracejudge.controls.judged import plan_fingerprint
    from tracejudge.payload import EvaluationRequest
    from tracejudge.controls.sampling import sampling_decision

    config = runtime.config
    fingerprint = plan_fingerprint(
        config, runtime.registry.with_config(config), default_model=runtime.settings.default_model,
        environment=runtime.settings.environment,
    )

    def enqueue(trace_id: str, workflow: str) -> None:
        skip = sampling_decision(trace_id, config)
        runtime.state.add_counts({(workflow or None, counters.SKIPPED_SAMPLING if skip else counters.SAMPLED): 1})
        if skip is None:
            send(EvaluationRequest(trace_id=trace_id))

    result = scan(store=runtime.store, state=runtime.state, config=config, fingerprint=fingerprint, enqueue=enqueue)
    for outcome, counts in (("enqueued", result.enqueued), ("already_seen", result.already_seen), ("already_judged", result.already_judged)):
        for experiment_id, n in counts.items():
            metrics.count_pickup(experiment_id, outcome, n)
    return {
        "enqueued": result.enqueued,
        "already_seen": result.already_seen,
        "already_judged": result.already_judged,
        "skipped_locked": result.skipped_locked,
    }


def pickup_watermarks(state: Any) -> dict[str, int | None]:
    """Each scanned experiment's watermark (ms since the epoch; None before its first full scan), in two round trips.

    The pick-up lag is now minus the watermark (``tracejudge_pickup_lag_seconds``, ``tracejudge status``).

    >>> import fakeredis
    >>> from tracejudge.tasks.state import RedisState
    >>> state = RedisState(fakeredis.FakeRedis())
    >>> _ = state.redis.sadd(state.key(PICKUP_EXPERIMENTS), "7"); state.watermarks.advance(f"{WATERMARK}7", 1000)
    >>> pickup_watermarks(state)
    {'7': 1000}
    """
    members = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in state.redis.smembers(state.key(PICKUP_EXPERIMENTS)))
    if not members:
        return {}
    values = state.redis.mget([f"{state.watermarks.prefix}{WATERMARK}{m}" for m in members])
    return {m: int(v) if v is not None else None for m, v in zip(members, values)}
