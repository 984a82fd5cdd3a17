"""Pick-up of conversations: judge a session once it has been idle for ``sessions.idle_seconds``.

The beat task (``tracejudge.session_scan``, every ``online.interval_seconds``) runs
:func:`scan_sessions` on a worker. For each experiment in ``online.experiments``:

1. take the experiment's session-scan lock (a second scanner skips it this round);
2. search the traces that carry a session id (``mlflow.trace.session``) and started after
   the session watermark (minus an overlap, for late exports), up to now, page by page,
   and group them by session: a session is *idle* when every trace seen is finished and
   the last one ended ``idle_seconds`` ago or more, else *active*;
3. for each idle session, oldest first: read all its turns' infos (one search, no spans)
   and skip it when the record says it is judged (a final result of every session judge
   over exactly these turns on its first trace: :mod:`~tracejudge.controls.session_judged`);
   else claim ``session:<id>:<last trace>`` (SET NX) and only the claimer enqueues it;
4. move the watermark (only forward) to the earliest start of a still-active session's last
   turn, or ``now - idle_seconds``, whichever is earlier; a session that gets a new turn
   after it was judged shows up again through that turn, and is judged again (superseding).

MLflow's assessments are the record; Redis holds the lock, the watermark and the claims,
which may be lost without a session being judged wrongly (a lost claim can enqueue a session
twice: the second evaluation finds the first's results and makes no LLM call).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.controls.scanning import scan_each_experiment
from tracejudge.controls.session_judged import plan_session, session_judged
from tracejudge.mlflow_io import sessions as session_io
from tracejudge.mlflow_io.search import time_filter

log = logging.getLogger(__name__)

WATERMARK = "sessions:"
SCAN_LOCK = "sessionscanlock:"
SEEN_PREFIX = "session:"
PAGE_SIZE = 200
SEEN_TTL_SECONDS = 14 * 24 * 3600
#: A turn that appears in the store up to this long after its start is still seen.
MIN_OVERLAP_MS = 60_000
#: The first scan of an experiment looks back this far (older conversations: ``tracejudge backfill --sessions``).
FIRST_LOOKBACK_MS = 24 * 3600 * 1000


@dataclass
class SessionScanResult:
    """What one scan did, per experiment id."""

    enqueued: dict[str, int] = field(default_factory=dict)
    already_judged: dict[str, int] = field(default_factory=dict)
    already_seen: dict[str, int] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    skipped_locked: list[str] = field(default_factory=list)

    def add(self, counter: dict[str, int], experiment_id: str) -> None:
        counter[experiment_id] = counter.get(experiment_id, 0) + 1


@dataclass
class _Seen:
    """One session as seen in the window: its last turn, and whether it is still going."""

    last_trace_id: str = ""
    last_start: int = 0
    last_end: int = 0
    running: bool = False


def scan_sessions(
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    planned: list[Any],
    default_model: str,
    enqueue: Callable[[str, str], Any],
    now_ms: int | None = None,
    lock_seconds: float = 300.0,
) -> SessionScanResult:
    """Scan every ``online.experiments`` entry once for idle sessions (see the module docstring).

    ``planned``: the session judges (:func:`plan_session`); ``enqueue(session_id, experiment_id)``
    queues one session. Raises ``MlflowUnavailable`` (watermarks unchanged) when the store does not answer.
    """
    result = SessionScanResult()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    scan_each_experiment(
        store, state, config, lock_prefix=SCAN_LOCK, lock_seconds=lock_seconds, skipped=result.skipped_locked,
        scan_one=lambda experiment_id: _scan_experiment(
            experiment_id, store=store, state=state, config=config, planned=planned,
            default_model=default_model, enqueue=enqueue, now_ms=now_ms, result=result,
        ),
    )
    return result


def _scan_experiment(
    experiment_id: str,
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    planned: list[Any],
    default_model: str,
    enqueue: Callable[[str, str], Any],
    now_ms: int,
    result: SessionScanResult,
) -> None:
    sessions_config = config.judges.sessions
    idle_ms = int(sessions_config.idle_seconds * 1000)
    raw = state.watermarks.get(f"{WATERMARK}{experiment_id}")
    since = int(raw) - MIN_OVERLAP_MS if raw is not None else now_ms - FIRST_LOOKBACK_MS
    seen = _sessions_since(store, experiment_id, since, config.judges.online.filter_string)
    idle_before = now_ms - idle_ms
    active = [s for s in seen.values() if s.running or s.last_end > idle_before]
    idle = sorted(
        ((sid, s) for sid, s in seen.items() if not (s.running or s.last_end > idle_before)),
        key=lambda item: (item[1].last_end, item[0]),
    )
    mark = min([idle_before, *(s.last_start for s in active)])
    result.active[experiment_id] = len(active)
    handled = 0
    for sid, last in idle:
        if handled >= sessions_config.max_per_scan:
            mark = min(mark, last.last_start)  # the rest wait for the next scan
            break
        infos = session_infos(store, experiment_id, sid)
        if session_judged(infos, sid, planned, default_model=default_model):
            result.add(result.already_judged, experiment_id)
            continue
        claim = f"{SEEN_PREFIX}{sid}:{last.last_trace_id}"
        if not state.seen.add(claim, ttl_seconds=SEEN_TTL_SECONDS):
            result.add(result.already_seen, experiment_id)
            continue
        try:
            enqueue(sid, experiment_id)
        except BaseException:
            state.seen.forget(claim)  # not queued: the next scan tries again
            raise
        result.add(result.enqueued, experiment_id)
        handled += 1
    state.watermarks.advance(f"{WATERMARK}{experiment_id}", mark)
    log.info(
        "session scan of experiment %s: %d enqueued, %d already judged, %d already claimed, %d still active (watermark %s)",
        experiment_id, result.enqueued.get(experiment_id, 0), result.already_judged.get(experiment_id, 0),
        result.already_seen.get(experiment_id, 0), len(active), mark,
    )


def _sessions_since(store: Any, experiment_id: str, since_ms: int, extra: str | None) -> dict[str, _Seen]:
    """Every session with a turn that started at ``since_ms`` or later: its last turn, and whether one still runs."""
    filter_string = time_filter(since_ms=since_ms, extra=" AND ".join(p for p in (session_io.ANY_SESSION, extra) if p))
    found: dict[str, _Seen] = {}
    token = None
    while True:
        page = store.search_traces([experiment_id], filter_string=filter_string, max_results=PAGE_SIZE, page_token=token)
        for info in page.traces:
            sid = session_io.session_of(info)
            if sid is None:
                continue
            entry = found.setdefault(sid, _Seen())
            entry.running = entry.running or not session_io.finished(info)
            start = session_io.start_ms(info)
            if start >= entry.last_start:
                entry.last_start, entry.last_trace_id = start, info.trace_id
            entry.last_end = max(entry.last_end, session_io.end_ms(info))
        if not page.next_page_token:
            return found
        token = page.next_page_token


def session_infos(store: Any, experiment_id: str, session_id: str) -> list[Any]:
    """The infos (assessments, no spans) of every turn of one session."""
    infos: list[Any] = []
    token = None
    while True:
        page = store.search_traces(
            [experiment_id], filter_string=session_io.session_filter(session_id), max_results=PAGE_SIZE, page_token=token
        )
        infos.extend(page.traces)
        if not page.next_page_token:
            return infos
        token = page.next_page_token


def run_session_scan(runtime: Any, send: Callable[[Any], Any]) -> dict[str, Any]:
    """The beat task's body: one scan with the worker's own config; ``send(request)`` queues a ``SessionRequest``."""
    from tracejudge.payload import SessionRequest

    config = runtime.config
    planned = plan_session(config, runtime.registry.with_config(config))
    if not planned or not config.judges.online.experiments:
        return {"enqueued": {}, "note": "no session judges or no online.experiments"}
    result = scan_sessions(
        store=runtime.store, state=runtime.state, config=config, planned=planned,
        default_model=runtime.settings.default_model,
        enqueue=lambda sid, experiment_id: send(SessionRequest(session_id=sid, experiment_id=experiment_id)),
    )
    return {
        "enqueued": result.enqueued,
        "already_judged": result.already_judged,
        "already_seen": result.already_seen,
        "active": result.active,
        "skipped_locked": result.skipped_locked,
    }
