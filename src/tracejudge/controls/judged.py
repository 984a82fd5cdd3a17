"""Whether a trace already carries results of the current judge versions.

A full evaluation records the fingerprint of the plan it judged with (each
target's judges, their versions, models and thresholds) in the metadata of
every feedback it writes (``tracejudge.plan``). Pick-up and backfill read it
from the trace infos ``search_traces`` returns (tags and assessments, no
spans) and skip a trace when a valid feedback of ours carries the current
fingerprint, or when its ``tracejudge.plan`` tag does: traces judged by
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
from tracejudge.mlflow_io.writer import PLAN

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
    """Whether the tag, or a valid feedback's metadata, carries ``fingerprint`` (superseded ones do not count)."""
    if tags and tags.get(PLAN_TAG) == fingerprint:
        return True
    for assessment in assessments or ():
        if getattr(assessment, "feedback", None) is None or getattr(assessment, "valid", True) is False:
            continue
        if (getattr(assessment, "metadata", None) or {}).get(PLAN) == fingerprint:
            return True
    return False
