"""Whether a trace already carries results of the current judge versions.

A full evaluation records the fingerprint of the plan it judged with (each
target's judges, their versions, models and thresholds) in the metadata of
every feedback it writes (``tracejudge.plan``). Pick-up and backfill read it
from the trace infos ``search_traces`` returns (tags and assessments, no
spans) and skip a trace when a valid feedback of ours carries the current
fingerprint and none of those is a transient failure (:func:`has_plan`), or
when its ``tracejudge.plan`` tag does: traces judged by
versions before 2026-11-29 have the tag, and a full evaluation writes it when
its fingerprint is new to the trace but every result was reused (no feedback
to carry it; rare: a changed per-judge sampling rate, say). A changed judge
prompt or model changes the fingerprint, so its traces are judged again.
Partial runs (``judges=``) record no fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tracejudge.config import JudgeRef, TraceJudgeConfig
from tracejudge.judges.plan import WORKFLOW_TARGET, JudgePlan, build_plan
from tracejudge.judges.registry import JudgeRegistry
from tracejudge.mlflow_io.writer import FINAL_ERRORS, KEY, PLAN

#: The trace tag of older versions (and of a full evaluation that wrote no feedback); the same name as the metadata key.
PLAN_TAG = PLAN


def plan_fingerprint(
    config: TraceJudgeConfig,
    registry: JudgeRegistry,
    *,
    judges: Sequence[JudgeRef] | None = None,
    default_model: str = "gpt-4o-mini",
    environment: str | None = None,
) -> str:
    """A short hash of what the plan judges with.

    >>> from tracejudge.judges.registry import default_registry
    >>> cfg = TraceJudgeConfig.model_validate({"judges": {"workflow_defaults": ["coherence"]}})
    >>> len(plan_fingerprint(cfg, default_registry().with_config(cfg)))
    16
    """
    plan = build_plan(config, registry, judges=judges, environment=environment)
    return fingerprint(plan, config, default_model=default_model)


def fingerprint(plan: JudgePlan, config: TraceJudgeConfig, *, default_model: str) -> str:
    """:func:`plan_fingerprint` of a plan already built (the evaluation builds it once, for its jobs and this)."""
    rows = []
    for target in [WORKFLOW_TARGET, *sorted(config.judges.node_overrides)]:
        for planned in plan.for_target(target):
            model = "code" if planned.judge.kind == "code" else (planned.model or default_model)
            rows.append([target, planned.judge.name, planned.judge.version, model, round(planned.threshold, 6)])
    rows.sort()
    blob = json.dumps([rows, sorted(config.judges.sampling.judges.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def already_judged(info: Any, fingerprint: str) -> bool:
    """Whether a trace info (``search_traces``: tags and assessments) says it was judged with this plan.

    >>> from types import SimpleNamespace as Info
    >>> ours = Info(metadata={"tracejudge.plan": "abc"}, feedback=object(), valid=True)
    >>> already_judged(Info(tags={}, assessments=[ours]), "abc"), already_judged(Info(tags={}, assessments=[ours]), "new")
    (True, False)
    >>> already_judged(Info(tags={"tracejudge.plan": "abc"}, assessments=[]), "abc")
    True
    """
    return has_plan(getattr(info, "tags", None), getattr(info, "assessments", None), fingerprint)


def has_plan(tags: Mapping[str, Any] | None, assessments: Iterable[Any] | None, fingerprint: str) -> bool:
    """Whether the trace was judged with this plan, with final results.

    The tag, or a valid feedback's metadata, carries ``fingerprint`` (superseded ones do not count), and
    no valid feedback of ours under this fingerprint is a transient failure (a timeout, a provider error,
    a rate limit...: see ``mlflow_io.writer.FINAL_ERRORS``): such a trace is judged again, and only
    its non-final results are (issue 17).

    >>> from types import SimpleNamespace as A
    >>> ok = A(metadata={"tracejudge.plan": "p", "tracejudge.key": "k1"}, feedback=object(), valid=True, error=None)
    >>> timeout = A(metadata={"tracejudge.plan": "p", "tracejudge.key": "k2"}, feedback=object(), valid=True,
    ...             error=A(error_code="TIMEOUT"))
    >>> has_plan({}, [ok], "p"), has_plan({}, [ok, timeout], "p")
    (True, False)
    """
    ours = [
        a for a in assessments or ()
        if getattr(a, "feedback", None) is not None and getattr(a, "valid", True) is not False
        and (getattr(a, "metadata", None) or {}).get(PLAN) == fingerprint
    ]
    if any(not final_assessment(a) for a in ours):
        return False
    return bool(ours) or bool(tags and tags.get(PLAN_TAG) == fingerprint)


def final_assessment(assessment: Any) -> bool:
    """A score, or an error that judging again would repeat (``FINAL_ERRORS``)."""
    error = getattr(assessment, "error", None)
    return error is None or getattr(error, "error_code", None) in FINAL_ERRORS


def transient_failures(assessments: Iterable[Any] | None) -> int:
    """How many valid feedbacks of ours on a trace are transient failures (to be judged again)."""
    return sum(
        1 for a in assessments or ()
        if getattr(a, "feedback", None) is not None and getattr(a, "valid", True) is not False
        and (getattr(a, "metadata", None) or {}).get(KEY) and not final_assessment(a)
    )
