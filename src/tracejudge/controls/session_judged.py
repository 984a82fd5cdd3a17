"""Which session judges run, their result keys, and whether the record says a session is judged.

A (session, judge) result's key covers the turns it judged (their number and the last trace
id), so a conversation that grew has new keys: its old results no longer count, and the next
evaluation judges it again and supersedes them. Pick-up and backfill read the record from the
trace infos ``search_traces`` returns (assessments, no spans): the session's first trace holds
our results, with ``mlflow.trace.session`` and the turns judged in their metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.judges.plan import PlannedJudge, plan_for_target
from tracejudge.judges.registry import JudgeRegistry
from tracejudge.judges.session_judges import SESSION_TARGET
from tracejudge.mlflow_io import sessions as session_io
from tracejudge.mlflow_io import writer


def plan_session(
    config: TraceJudgeConfig,
    registry: JudgeRegistry,
    *,
    judges: list[Any] | None = None,
    environment: str | None = None,
) -> list[PlannedJudge]:
    """The session judges with their thresholds and models (``judges`` replaces ``judges.sessions.judges``).

    >>> from tracejudge.config import load_config
    >>> cfg = load_config({"observability": {"mlflow": {"judges": {"sessions": {"judges": ["user_frustration"]}}}}})
    >>> [(p.judge.name, p.threshold) for p in plan_session(cfg, JudgeRegistry())]
    [('user_frustration', 0.8)]
    """
    refs = judges if judges is not None else config.judges.sessions.judges
    if not refs:
        return []
    return plan_for_target(SESSION_TARGET, config, registry, judges=list(refs), environment=environment)


def judge_model(planned: PlannedJudge, default_model: str) -> str:
    return "code" if planned.judge.kind == "code" else (planned.model or default_model)


def session_key(first_trace_id: str, session_id: str, judged_through: str, planned: PlannedJudge, model: str) -> str:
    """The idempotency key of one (session, judge) result over the turns judged (``<turns>:<last trace id>``).

    >>> from tracejudge.judges.session_judges import USER_FRUSTRATION
    >>> p = PlannedJudge(judge=USER_FRUSTRATION, threshold=0.8)
    >>> session_key("tr-1", "s", "3:tr-3", p, "m") == session_key("tr-1", "s", "4:tr-4", p, "m")
    False
    """
    return writer.result_key(
        first_trace_id, f"session:{session_id}:{judged_through}", planned.judge.name, planned.judge.version, model, planned.threshold
    )


def session_judged(infos: Sequence[Any], session_id: str, planned: Sequence[PlannedJudge], *, default_model: str) -> bool:
    """Whether the session's trace infos (all of its turns) carry a final result of every planned judge
    over exactly these turns (a transient failure does not count: it is judged again).

    >>> session_judged([], "s", [], default_model="m")
    False
    """
    if not infos or not planned:
        return False
    ordered = sorted(infos, key=session_io.start_ms)
    first, through = ordered[0], f"{len(ordered)}:{ordered[-1].trace_id}"
    final = writer.existing_results(session_io.session_assessments(getattr(first, "assessments", None) or [], session_id))
    return all(
        session_key(first.trace_id, session_id, through, p, judge_model(p, default_model)) in final for p in planned
    )
