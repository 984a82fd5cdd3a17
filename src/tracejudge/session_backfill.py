"""Judge past conversations: ``tracejudge backfill --sessions`` (see :func:`run_session_backfill`).

Pages through the experiment's traces that carry a session id (``mlflow.trace.session``) in the
window, then, per session (oldest first): skips it while a turn is still running or its last turn
ended less than ``sessions.idle_seconds`` ago (pick-up takes those), skips it when the record says
it is judged over exactly its turns (unless ``force``), and else enqueues it
(``tracejudge.enqueue_session``), holding back while the background queue is deeper than
``max_queue``. There is no checkpoint: run it again, and the sessions judged meanwhile are skipped
by the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracejudge.backfill import hold_back
from tracejudge.config import TraceJudgeConfig
from tracejudge.controls.session_judged import session_judged
from tracejudge.controls.session_pickup import PAGE_SIZE, session_infos
from tracejudge.mlflow_io import sessions as session_io
from tracejudge.mlflow_io.search import time_filter


@dataclass
class SessionBackfillCounts:
    """What a session backfill did."""

    sessions: int = 0
    seen: int = 0
    enqueued: int = 0
    skipped_judged: int = 0
    active: int = 0


@dataclass
class SessionBackfillResult:
    counts: SessionBackfillCounts
    sample_ids: list[str] = field(default_factory=list)
    handles: list[Any] = field(default_factory=list)
    seconds: float = 0.0


def run_session_backfill(
    *,
    store: Any,
    state: Any,
    config: TraceJudgeConfig,
    experiment_id: str,
    planned: list[Any],
    default_model: str,
    enqueue: Callable[[str], Any],
    since_ms: int | None = None,
    until_ms: int | None = None,
    filter_string: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    max_sessions: int | None = None,
    max_queue: int = 1000,
    queue: str = "tracejudge.online",
    now_ms: int | None = None,
    progress: Callable[[SessionBackfillCounts, str], None] | None = None,
    sample_size: int = 10,
) -> SessionBackfillResult:
    """Enqueue every past conversation of the experiment that the record does not show judged (see the module docstring).

    ``enqueue(session_id)`` returns a handle; ``planned`` are the session judges
    (:func:`~tracejudge.controls.session_judged.plan_session`).
    """
    note = progress or (lambda c, s: None)
    counts = SessionBackfillCounts()
    result = SessionBackfillResult(counts=counts)
    started = time.perf_counter()
    extra = " AND ".join(p for p in (session_io.ANY_SESSION, filter_string) if p)
    query = time_filter(since_ms=since_ms, until_ms=until_ms, extra=extra)
    found: dict[str, None] = {}  # session ids in order of their first trace seen
    token = None
    while True:
        page = store.search_traces([experiment_id], filter_string=query, max_results=PAGE_SIZE, page_token=token)
        for info in page.traces:
            sid = session_io.session_of(info)
            if sid is not None:
                found.setdefault(sid, None)
        if not page.next_page_token:
            break
        token = page.next_page_token
    order = list(found)[:max_sessions] if max_sessions is not None else list(found)
    counts.sessions = len(order)
    note(counts, "")
    idle_before = (int(time.time() * 1000) if now_ms is None else now_ms) - int(config.judges.sessions.idle_seconds * 1000)
    for sid in order:
        counts.seen += 1
        infos = session_infos(store, experiment_id, sid)
        if any(not session_io.finished(i) for i in infos) or max(map(session_io.end_ms, infos), default=0) > idle_before:
            counts.active += 1
        elif not force and session_judged(infos, sid, planned, default_model=default_model):
            counts.skipped_judged += 1
        elif dry_run:
            counts.enqueued += 1
            if len(result.sample_ids) < sample_size:
                result.sample_ids.append(sid)
        else:
            hold_back(state, queue=queue, max_queue=max_queue, waiting=lambda why: note(counts, why))
            result.handles.append(enqueue(sid))
            counts.enqueued += 1
            if len(result.sample_ids) < sample_size:
                result.sample_ids.append(sid)
        note(counts, "")
    result.seconds = time.perf_counter() - started
    return result
