"""Automatic pick-up: find new finished traces in MLflow and enqueue each once.

The beat task (``tracejudge.online_scan``, every ``online.interval_seconds``)
runs :func:`scan` on a worker. For each experiment in ``online.experiments``:

1. take the experiment's scan lock (a second scanner skips it this round);
2. search traces with ``trace.timestamp_ms`` from the watermark (minus an
   overlap, so a trace exported late is still seen) up to ``now - delay``,
   and-ed with ``online.filter_string``, oldest first, page by page;
3. for each finished trace: skip it if its ``tracejudge.plan`` tag says it
   was judged with the current plan; else claim its "seen" key (SET NX), and
   only the claimer enqueues it (through sampling; workers apply filters);
4. when every page is done, move the watermark to the window's end (or to
   the last trace handled, when ``max_per_scan`` stopped it early).

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
from tracejudge.mlflow_io.search import iter_pages, resolve_experiment, time_filter
from tracejudge.tasks.judged import already_judged

log = logging.getLogger(__name__)

WATERMARK_KEY = "tracejudge:online:watermark:"
SEEN_KEY = "tracejudge:online:seen:"
SCAN_LOCK_KEY = "tracejudge:online:scanlock:"
SEEN_TTL_SECONDS = 14 * 24 * 3600
#: A trace that appears in the store up to this long after its start time is still picked up.
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
    client: Any,
    redis: Any,
    prefix: str,
    config: TraceJudgeConfig,
    fingerprint: str,
    enqueue: Callable[[str, str], Any],
    now_ms: int | None = None,
    lock_seconds: float = 300.0,
) -> ScanResult:
    """Scan every ``online.experiments`` entry once (see the module docstring).

    ``enqueue(trace_id, workflow_name)`` queues one trace. Raises
    ``MlflowUnavailable`` (watermarks unchanged) when the store does not answer.
    """
    online = config.judges.online
    result = ScanResult()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now_ms - int(online.delay_seconds * 1000)
    for index, ref in enumerate(online.experiments):
        experiment_id = resolve_experiment(
            client, ref, where=f"{config.location('judges')}.online.experiments[{index}]"
        )
        lock = redis.lock(f"{prefix}{SCAN_LOCK_KEY}{experiment_id}", timeout=lock_seconds, blocking=False)
        if not lock.acquire(blocking=False):
            result.skipped_locked.append(experiment_id)
            continue
        try:
            _scan_experiment(
                experiment_id, client=client, redis=redis, prefix=prefix, config=config,
                fingerprint=fingerprint, enqueue=enqueue, cutoff=cutoff, result=result,
            )
        finally:
            try:
                lock.release()
            except Exception:  # expired: the next scan takes it
                pass
    return result


def _scan_experiment(
    experiment_id: str,
    *,
    client: Any,
    redis: Any,
    prefix: str,
    config: TraceJudgeConfig,
    fingerprint: str,
    enqueue: Callable[[str, str], Any],
    cutoff: int,
    result: ScanResult,
) -> None:
    online = config.judges.online
    watermark_key = f"{prefix}{WATERMARK_KEY}{experiment_id}"
    raw = redis.get(watermark_key)
    watermark = int(raw) if raw is not None else None
    overlap = max(MIN_OVERLAP_MS, int(online.delay_seconds * 1000))
    since = None if watermark is None else watermark - overlap
    filter_string = time_filter(since_ms=since, until_ms=cutoff, extra=online.filter_string)
    handled = 0
    last_ts: int | None = None
    stopped_early = False
    for page in iter_pages(client, experiment_id, filter_string=filter_string):
        for trace in page.traces:
            info = trace.info
            state = str(getattr(info, "state", "") or "").rsplit(".", 1)[-1].upper()
            if state not in FINISHED_STATES:
                continue
            trace_id = info.trace_id
            tags = dict(getattr(info, "tags", None) or {})
            ts = int(getattr(info, "request_time", None) or getattr(info, "timestamp_ms", 0) or 0)
            if already_judged(tags, fingerprint):
                result.already_judged[experiment_id] = result.already_judged.get(experiment_id, 0) + 1
            elif redis.set(f"{prefix}{SEEN_KEY}{trace_id}", "1", nx=True, ex=SEEN_TTL_SECONDS):
                try:
                    enqueue(trace_id, tags.get("mlflow.traceName") or "")
                except BaseException:
                    redis.delete(f"{prefix}{SEEN_KEY}{trace_id}")  # not queued: the next scan tries again
                    raise
                result.enqueued[experiment_id] = result.enqueued.get(experiment_id, 0) + 1
                handled += 1
            else:
                result.already_seen[experiment_id] = result.already_seen.get(experiment_id, 0) + 1
            last_ts = ts or last_ts
            if handled >= online.max_per_scan:
                stopped_early = True
                break
        if stopped_early:
            break
    new_mark = (last_ts if stopped_early and last_ts is not None else cutoff)
    # Only forward: a slower scanner must not move it back.
    redis.eval(
        "local cur = tonumber(redis.call('GET', KEYS[1]) or '-1') "
        "if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end return 1",
        1,
        watermark_key,
        new_mark,
    )
    log.info(
        "online scan of experiment %s: %d enqueued, %d already seen, %d already judged (watermark %s)",
        experiment_id, result.enqueued.get(experiment_id, 0), result.already_seen.get(experiment_id, 0),
        result.already_judged.get(experiment_id, 0), new_mark,
    )
