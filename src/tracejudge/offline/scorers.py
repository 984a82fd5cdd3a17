"""Our judges as MLflow scorers: the same judge offline (``mlflow.genai.evaluate``, ``optimize_prompts``) as online.

A :class:`TraceJudgeScorer` runs one judge of a plan the way a worker does: the same registry (built-ins, YAML
custom judges, registered ones), prompt, rubric, version, model, threshold, LLM client, retries and rate limit
(the process's :class:`~tracejudge.tasks.runtime.Runtime`). Given a trace (``mlflow.genai.evaluate`` with a
``predict_fn`` records one per row) it reads the trace's targets as a worker does and judges each target the plan
gives the judge, so the same text gets the same score online and offline; given only ``inputs``/``outputs`` it
judges them as the workflow root. It returns MLflow ``Feedback`` carrying our metadata (threshold, passed,
judge_version) and the whole result (``tracejudge.result``), from which :func:`row_verdict` rebuilds the
verdict with the workers' rule.

>>> [s.name for s in scorers({"observability": {"mlflow": {"judges": {"workflow_defaults": ["relevance", "coherence"]}}}})]
['relevance', 'coherence']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Feedback
from mlflow.genai.scorers import Scorer
from pydantic import PrivateAttr

from tracejudge.config import TraceJudgeConfig, load_config
from tracejudge.judges.model import JudgeInput, JudgeResult
from tracejudge.judges.plan import WORKFLOW_TARGET, plan_for_target
from tracejudge.judges.registry import JudgeRegistry, default_registry
from tracejudge.judges.runner import JudgeJob, run_one
from tracejudge.verdict import QualityVerdict, build_verdict

__all__ = ["RESULT_KEY", "TraceJudgeScorer", "as_scorer", "row_verdict", "scorers"]

#: Feedback metadata key holding the whole :class:`JudgeResult` as JSON (the verdict is rebuilt from it).
RESULT_KEY = "tracejudge.result"


def _config(config: TraceJudgeConfig | Mapping[str, Any] | str | None) -> TraceJudgeConfig:
    if isinstance(config, TraceJudgeConfig):
        return config
    return load_config(config)  # a path, a mapping, or $TRACEJUDGE_CONFIG


def _registry(config: TraceJudgeConfig) -> JudgeRegistry:
    from tracejudge.tasks.runtime import import_judge_modules

    import_judge_modules()
    return default_registry().with_config(config)


class TraceJudgeScorer(Scorer):
    """One judge of a tracejudge plan as an ``mlflow.genai`` scorer; build it with :func:`as_scorer`."""

    judge_name: str
    _config: TraceJudgeConfig = PrivateAttr()
    _registry: JudgeRegistry = PrivateAttr()

    def __call__(self, *, inputs: Any = None, outputs: Any = None, expectations: Any = None, trace: Any = None) -> Any:
        results = self.judge(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)
        feedbacks = [_feedback(self.name, result) for result in results]
        if not feedbacks:
            return Feedback(name=self.name, error=f"the plan gives {self.judge_name!r} no target in this trace")
        return feedbacks[0] if len(feedbacks) == 1 else feedbacks

    def judge(self, *, inputs: Any = None, outputs: Any = None, expectations: Any = None, trace: Any = None) -> list[JudgeResult]:
        """Our results for this judge on the row (one per target the plan gives it), as a worker would judge them."""
        from tracejudge.tasks.runtime import get_runtime

        config = self._config
        jobs = []
        for target, judge_input in _targets(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace):
            for planned in plan_for_target(target, config, self._registry):
                if planned.judge.name == self.judge_name:
                    jobs.append(JudgeJob(judge=planned.judge, input=judge_input, threshold=planned.threshold, model=planned.model))
        execution = config.judges.execution
        runtime = get_runtime(config=config, use_redis=execution.rate_limit_per_second is not None)
        limiter = runtime.limiter(execution.rate_limit_per_second) if execution.rate_limit_per_second else None

        async def run_all() -> list[JudgeResult]:
            import asyncio

            return list(await asyncio.gather(*(
                run_one(job, client=runtime.llm, execution=execution, default_model=runtime.settings.default_model, limiter=limiter)
                for job in jobs
            )))

        return runtime.run(run_all()) if jobs else []


def as_scorer(name: str, *, config: TraceJudgeConfig | Mapping[str, Any] | str | None = None) -> TraceJudgeScorer:
    """The judge ``name`` of ``config`` (a path, a mapping, a config; default ``$TRACEJUDGE_CONFIG``) as a scorer.

    >>> as_scorer("relevance").name
    'relevance'
    """
    cfg = _config(config)
    registry = _registry(cfg)
    registry.get(name)  # an unknown judge is an error here, naming the known ones
    scorer = TraceJudgeScorer(name=name, judge_name=name, timeout=0)  # our own deadlines apply (execution)
    scorer._config, scorer._registry = cfg, registry
    return scorer


def scorers(config: TraceJudgeConfig | Mapping[str, Any] | str | None = None) -> list[TraceJudgeScorer]:
    """A scorer for every judge of the plan (defaults, node overrides, gate and retry judges), in plan order."""
    cfg = _config(config)
    names: list[str] = []
    refs = [*cfg.judges.workflow_defaults, *(ref for refs in cfg.judges.node_overrides.values() for ref in refs)]
    for name in [ref.name for ref in refs] or [p.judge.name for p in plan_for_target(WORKFLOW_TARGET, cfg, _registry(cfg))]:
        if name not in names:
            names.append(name)
    return [as_scorer(name, config=cfg) for name in names]


def row_verdict(trace_id: str, feedbacks: Sequence[Any], config: TraceJudgeConfig | Mapping[str, Any] | str | None = None) -> QualityVerdict:
    """The verdict of one evaluated row, by the workers' rule, from the feedbacks our scorers returned."""
    results = []
    for feedback in feedbacks:  # Feedback objects, or the dicts of evaluate's result_df
        metadata = feedback.get("metadata") if isinstance(feedback, Mapping) else getattr(feedback, "metadata", None)
        raw = (metadata or {}).get(RESULT_KEY)
        if raw:
            results.append(JudgeResult.model_validate_json(raw))
    return build_verdict(trace_id, results, _config(config))


def _targets(*, inputs: Any, outputs: Any, expectations: Any, trace: Any) -> list[tuple[str, JudgeInput]]:
    if trace is not None and getattr(getattr(trace, "data", None), "spans", None):
        from tracejudge.mlflow_io.reader import extract_targets

        return [(t.node_id, t.judge_input) for t in extract_targets(trace)]
    expected = expectations.get("expected_response", expectations) if isinstance(expectations, Mapping) else expectations
    judge_input = JudgeInput(
        target=WORKFLOW_TARGET, output=outputs, input=inputs, expected=expected or None,
        inputs=dict(inputs) if isinstance(inputs, Mapping) else {},
    )
    return [(WORKFLOW_TARGET, judge_input)]


def _feedback(name: str, result: JudgeResult) -> Feedback:
    metadata = {
        "threshold": str(result.threshold),
        "passed": str(result.passed).lower(),
        "judge_version": result.judge_version or "",
        "target": result.target,
        RESULT_KEY: result.model_dump_json(),
    }
    source = AssessmentSource(source_type=AssessmentSourceType.LLM_JUDGE, source_id=result.model or name)
    if result.error is not None:
        error = AssessmentError(error_code=result.error.type, error_message=result.error.message)
        return Feedback(name=name, error=error, source=source, metadata=metadata, span_id=result.span_id)
    return Feedback(name=name, value=result.score, rationale=result.rationale, source=source, metadata=metadata,
                    span_id=result.span_id)

