"""Which judges run on which target, with which threshold and model (design section 4.4).

Every target gets ``judges.workflow_defaults``; a node named in
``judges.node_overrides`` also gets its entries there, an entry for a judge
already in the defaults replacing it for that node. A threshold comes from
the config entry, else the judge's own default, else the environment
threshold (production 0.80, development 0.70, experimental 0.60).

A config that names no judges at all (no ``workflow_defaults``, no
``node_overrides``: ``enqueue(trace_id)`` with no config) gets the default
plan: ``relevance``, ``coherence`` and ``harmfulness`` on the workflow root, at
the environment threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tracejudge.config import DEFAULT_ROOT_JUDGES, JudgeRef, TraceJudgeConfig
from tracejudge.judges.model import AnyJudge
from tracejudge.judges.registry import JudgeRegistry

WORKFLOW_TARGET = "workflow"


@dataclass(frozen=True)
class PlannedJudge:
    judge: AnyJudge
    threshold: float
    model: str | None = None


def plan_for_target(
    target: str,
    config: TraceJudgeConfig,
    registry: JudgeRegistry,
    *,
    judges: Sequence[JudgeRef] | None = None,
    environment: str | None = None,
) -> list[PlannedJudge]:
    """The judges for one target (a node id, or ``"workflow"`` for the root span).

    ``judges`` replaces the config's plan for this call (every target gets exactly those).

    >>> from tracejudge.config import load_config
    >>> cfg = load_config({"observability": {"mlflow": {"judges": {"workflow_defaults": [{"name": "coherence"}]}}}})
    >>> [p.judge.name for p in plan_for_target("write", cfg, JudgeRegistry())]
    ['coherence']
    >>> [(p.judge.name, p.threshold) for p in plan_for_target("workflow", load_config({}), JudgeRegistry())]
    [('relevance', 0.8), ('coherence', 0.8), ('harmfulness', 0.8)]
    """
    if judges is not None:
        refs: dict[str, JudgeRef] = {ref.name: ref for ref in judges}
    elif not config.has_plan:
        names = DEFAULT_ROOT_JUDGES if target == WORKFLOW_TARGET else ()
        refs = {name: JudgeRef(name=name) for name in names}
    else:
        refs = {ref.name: ref for ref in config.judges.workflow_defaults}
        if target != WORKFLOW_TARGET:
            for ref in config.judges.node_overrides.get(target, []):
                refs[ref.name] = ref
    default_threshold = config.environment_threshold(environment)
    planned = []
    for ref in refs.values():
        judge = registry.get(ref.name)
        threshold = ref.threshold if ref.threshold is not None else judge.threshold
        planned.append(
            PlannedJudge(
                judge=judge,
                threshold=threshold if threshold is not None else default_threshold,
                model=ref.model or judge.model,
            )
        )
    return planned


@dataclass(frozen=True)
class JudgePlan:
    """The plan of every target at once, built once per evaluation (and per scan): the workflow root and each
    ``node_overrides`` node by name, every other node ``others``.

    >>> from tracejudge.config import load_config
    >>> cfg = load_config({"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"],
    ...     "node_overrides": {"write": [{"name": "relevance", "threshold": 0.9}]}}}}})
    >>> plan = build_plan(cfg, JudgeRegistry())
    >>> [p.judge.name for p in plan.for_target("write")], [p.judge.name for p in plan.for_target("other")]
    (['coherence', 'relevance'], ['coherence'])
    """

    targets: dict[str, list[PlannedJudge]] = field(default_factory=dict)
    others: list[PlannedJudge] = field(default_factory=list)

    def for_target(self, target: str) -> list[PlannedJudge]:
        return self.targets.get(target, self.others)


def build_plan(
    config: TraceJudgeConfig,
    registry: JudgeRegistry,
    *,
    judges: Sequence[JudgeRef] | None = None,
    environment: str | None = None,
) -> JudgePlan:
    """:func:`plan_for_target` for the workflow root and each ``node_overrides`` key, and what every other node gets."""
    names = [WORKFLOW_TARGET, *([] if judges is not None else config.judges.node_overrides)]
    targets = {name: plan_for_target(name, config, registry, judges=judges, environment=environment) for name in names}
    # every other node: the call's judges, else workflow_defaults; with no plan at all, only the root is judged
    others = targets[WORKFLOW_TARGET] if judges is not None or config.has_plan else []
    return JudgePlan(targets=targets, others=others)
