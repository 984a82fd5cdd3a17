"""Whether a trace already carries results of the current judge versions.

An evaluation tags the trace with ``tracejudge.plan``: a fingerprint of the
plan it judged with (each target's judges, their versions, models and
thresholds). Pick-up and backfill compare a trace's tag with the current
fingerprint, from the trace's tags alone (no spans, no assessments read),
and skip the trace when they match; a changed judge prompt or model changes
the fingerprint, so its traces are judged again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tracejudge.config import JudgeRef, TraceJudgeConfig
from tracejudge.judges.plan import WORKFLOW_TARGET, plan_for_target
from tracejudge.judges.registry import JudgeRegistry

PLAN_TAG = "tracejudge.plan"


def plan_fingerprint(
    config: TraceJudgeConfig,
    registry: JudgeRegistry,
    *,
    judges: Sequence[JudgeRef] | None = None,
    default_model: str = "gpt-4o-mini",
) -> str:
    """A short hash of what the plan judges with.

    >>> from tracejudge.judges.registry import default_registry
    >>> cfg = TraceJudgeConfig.model_validate({"judges": {"workflow_defaults": ["coherence"]}})
    >>> len(plan_fingerprint(cfg, default_registry().with_config(cfg)))
    16
    """
    rows = []
    for target in [WORKFLOW_TARGET, *sorted(config.judges.node_overrides)]:
        for planned in plan_for_target(target, config, registry, judges=judges):
            model = "code" if planned.judge.kind == "code" else (planned.model or default_model)
            rows.append([target, planned.judge.name, planned.judge.version, model, round(planned.threshold, 6)])
    rows.sort()
    blob = json.dumps([rows, sorted(config.judges.sampling.judges.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def already_judged(tags: Mapping[str, Any] | None, fingerprint: str) -> bool:
    """Whether a trace's tags say it was judged with this plan.

    >>> already_judged({"tracejudge.plan": "abc"}, "abc"), already_judged({}, "abc")
    (True, False)
    """
    return bool(tags) and tags.get(PLAN_TAG) == fingerprint
