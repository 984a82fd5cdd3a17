"""Session figures for the report, the dashboard and the alerts: conversations judged, per-judge means, failure rate.

Read from the record (our session results on each session's first trace, through
``mlflow_io.sessions.session_results``), whatever source the trace figures came from: there
are few sessions next to traces, and one paged search reads them.

They honour the report's filters as the trace figures read from MLflow do, on the session's
first turn (the trace its results sit on): the window (a session counts where it began), the
workflow (that trace's name) and the environment (as its record names it, else production).
:func:`scope_note` says so in the figures, so a filtered report never mixes in other sessions
unannounced.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable
from typing import Any

from tracejudge.mlflow_io.sessions import SessionResultRow, session_results
from tracejudge.monitor.models import SessionFigures, SessionJudgeStats
from tracejudge.monitor.record import DEFAULT_ENVIRONMENT

log = logging.getLogger(__name__)


def figures_from_rows(rows: Iterable[SessionResultRow]) -> SessionFigures | None:
    """Aggregate session results; None when there are none.

    >>> r = [SessionResultRow("s1", "user_frustration", 0.9, True, None, 3, 0),
    ...      SessionResultRow("s2", "user_frustration", 0.2, False, None, 5, 0)]
    >>> f = figures_from_rows(r)
    >>> f.sessions, f.failure_rate, f.judges[0].mean, f.mean_turns
    (2, 0.5, 0.55, 4.0)
    """
    rows = list(rows)
    if not rows:
        return None
    sessions: dict[str, bool] = {}
    turns: dict[str, int] = {}
    by_judge: dict[str, list[SessionResultRow]] = {}
    for row in rows:
        failed = row.error_code is not None or not row.passed
        sessions[row.session_id] = sessions.get(row.session_id, False) or failed
        turns[row.session_id] = max(turns.get(row.session_id, 0), row.turns)
        by_judge.setdefault(row.judge, []).append(row)
    judges = []
    for name, judged in sorted(by_judge.items()):
        scored = [r for r in judged if r.value is not None]
        below = sum(1 for r in scored if not r.passed)
        judges.append(
            SessionJudgeStats(
                judge=name,
                count=len(scored),
                mean=round(statistics.fmean(r.value for r in scored), 6) if scored else None,  # type: ignore[misc]
                below=below,
                failure_rate=round(below / len(scored), 6) if scored else None,
                errors=len(judged) - len(scored),
            )
        )
    failed = sum(1 for bad in sessions.values() if bad)
    return SessionFigures(
        sessions=len(sessions),
        failed=failed,
        failure_rate=round(failed / len(sessions), 6),
        mean_turns=round(statistics.fmean(turns.values()), 3),
        judges=judges,
    )


def session_figures(
    client: Any,
    experiment_id: str,
    start_ms: int,
    end_ms: int,
    *,
    workflow: str | None = None,
    environment: str | None = None,
    source: str = "mlflow",
) -> SessionFigures | None:
    """The window's session figures from MLflow, filtered as the trace figures are; best effort (a failure is
    logged, the report stands without them). ``source``: where the trace figures came from (for the note)."""
    try:
        rows = session_results(client, experiment_id, start_ms, end_ms, workflow=workflow)
    except Exception as exc:
        log.warning("session figures not computed: %s", exc)
        return None
    if environment is not None:
        rows = [r for r in rows if (r.environment or DEFAULT_ENVIRONMENT) == environment]
    figures = figures_from_rows(rows)
    if figures is not None:
        figures.note = scope_note(workflow=workflow, environment=environment, source=source)
    return figures


def scope_note(*, workflow: str | None = None, environment: str | None = None, source: str = "mlflow") -> str | None:
    """How the report's filters applied to the session figures (None: no filter, nothing to say).

    >>> scope_note(workflow="support_bot", source="redis")
    'only sessions whose first turn is a support_bot trace; read from MLflow (sessions have no Redis rollups)'
    """
    parts = []
    if workflow:
        parts.append(f"only sessions whose first turn is a {workflow} trace")
    if environment:
        parts.append(
            f"only environment {environment} as the first turn's record names it (none named: {DEFAULT_ENVIRONMENT})"
        )
    if source != "mlflow":
        parts.append("read from MLflow (sessions have no Redis rollups)")
    return "; ".join(parts) or None
