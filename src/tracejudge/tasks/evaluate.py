"""Evaluate one trace: fetch, plan, judge, write back, verdict. Safe to run twice.

The steps, for one :class:`EvaluationRequest`, all under a per-trace Redis
lock (so the one read sees whatever another delivery wrote before):

1. fetch the trace once (spans, tags, assessments), waiting up to
   ``trace_wait_seconds`` for one that is not exported yet (:func:`read_trace`),
   unless the filters leave it out (:func:`skip_filtered`);
2. plan (target, judge) pairs and give each an idempotency key (:func:`plan`);
3. take the results already on the trace (our keys in assessment metadata)
   and those cached in Redis by an earlier attempt that could not write
   them (:func:`take_known`), and judge only the rest (:func:`judge_the_rest`);
4. cache new results in Redis at once, then write every result not yet on
   the trace (concurrently, bounded; a full evaluation's carry the plan's
   fingerprint in their metadata) (:func:`write_back`);
5. tag the trace (status, score), log ``quality_assessment.json`` and the
   quality metrics on its run as the artifact settings ask (:func:`make_verdict`,
   :func:`write_back`), and return the verdict.

Each step is a function of the :class:`Evaluation` it fills in; a step that ends
the evaluation early (an error or skip verdict) raises :class:`EndedEarly`.

So a redelivered task makes no LLM calls for work already judged and adds
no second assessment; an MLflow outage (:class:`MlflowUnavailable`) is
raised for the caller to retry, and the retry picks up where it stopped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from tracejudge.config import TraceJudgeConfig, log_unused_keys_once
from tracejudge.controls.review import route_for_review
from tracejudge.judges import errors
from tracejudge.judges.model import JudgeResult
from tracejudge.judges.plan import JudgePlan, build_plan
from tracejudge.judges.prompt import AGENT_VARIABLES
from tracejudge.judges.registry import UnknownJudgeError
from tracejudge.judges.runner import JudgeJob, run_judges
from tracejudge.mlflow_io import tool_record, writer
from tracejudge.mlflow_io.reader import (
    UNCOUNTED,
    InvalidTraceId,
    LoadedTrace,
    TraceIncomplete,
    TraceNotReady,
    add_agent_data,
    check_trace_id,
    trace_tool_calls,
    trace_tool_usage,
)
from tracejudge.controls import counters, retries
from tracejudge.controls.judged import PLAN_TAG, fingerprint, has_plan
from tracejudge.payload import EvaluationRequest
from tracejudge.ops import metrics
from tracejudge.tasks import rollup_step
from tracejudge.tasks.quarantine import blocked_result, quarantined
from tracejudge.tasks.runtime import Runtime
from tracejudge.controls.sampling import filter_reason, judge_sampled
from tracejudge.tasks.state import EvaluationBusy, RedisState
from tracejudge.verdict import (
    QualityVerdict,
    build_verdict,
    error_verdict,
    quality_metrics,
    quality_report,
    skipped_verdict,
    unmatched_override_warnings,
)

log = logging.getLogger(__name__)

#: A delivery waits this much longer than another holder of the trace's lock may need (see :func:`lock_wait_seconds`).
LOCK_WAIT_MARGIN_SECONDS = 30.0
#: The judging's wait on the event loop ends this long after its overall deadline (``tasks.loop.LoopStalled``):
#: the deadline itself is a callback of the loop, and a judge that blocks the loop stops it.
LOOP_WAIT_MARGIN_SECONDS = 30.0

# Error codes of evaluations that could not run at all (permanent: no retry).
TRACE_NOT_FOUND = "TRACE_NOT_FOUND"
#: The trace is in the store but not whole when the wait ends (fewer spans than MLflow counted).
TRACE_INCOMPLETE = "TRACE_INCOMPLETE"
INVALID_TRACE_ID = "INVALID_TRACE_ID"
INVALID_PAYLOAD = "INVALID_PAYLOAD"
UNKNOWN_JUDGE = "UNKNOWN_JUDGE"
NO_TARGETS = "NO_TARGETS"
#: The trace tags every evaluation writes (what users filter on; see :func:`summary_calls`).
STATUS_TAG = "tracejudge.status"
SCORE_TAG = "tracejudge.score"
ATTEMPT_TAG = "tracejudge.attempt"
RETRY_OF_TAG = "tracejudge.retry_of"

__all__ = ["EvaluationBusy", "EvaluationDeferred", "evaluate_request", "plan_jobs", "verdict_json"]


class EvaluationDeferred(RuntimeError):
    """The daily budget is spent and ``budget.on_exceed: defer``: run this request again next UTC day."""

    def __init__(self, message: str, *, request: EvaluationRequest) -> None:
        super().__init__(message)
        self.request = request


def evaluate_request(request: EvaluationRequest, runtime: Runtime) -> QualityVerdict:
    """Run one evaluation end to end (see the module docstring), step by step.

    Raises only what is worth a retry: ``MlflowUnavailable`` and :class:`EvaluationBusy`.
    """
    ev = Evaluation.start(request, runtime)
    try:
        check_id(ev)  # before a lock is named after it
        attempt = retry_attempt(runtime, ev.request.retry_of)
        # The lock is taken before the trace is read, so the one read (spans, tags, assessments) sees what another
        # delivery wrote before it released the lock. Its holder may be waiting for the trace's export first.
        started = time.monotonic()
        with runtime.state.trace_lock(ev.trace_id, timeout=lock_wait_seconds(ev.execution)) as held:
            read_trace(ev, started=started)
            skip_filtered(ev)
            plan(ev)
            take_known(ev)
            judge_the_rest(ev, held)
            verdict = make_verdict(ev, attempt=attempt)
            write_back(ev, verdict, held)
            after_write_back(ev, verdict)
    except EndedEarly as end:
        return ended(runtime, end.verdict)
    log.info("evaluated %s: %s (judged %d, reused %d)", ev.trace_id, verdict.summary(), verdict.judged, verdict.reused)
    return verdict


class EndedEarly(Exception):
    """A step's verdict that ends the evaluation before any write-back (an error, a skip)."""

    def __init__(self, verdict: QualityVerdict) -> None:
        super().__init__(verdict.summary())
        self.verdict = verdict


@dataclass
class Evaluation:
    """One evaluation's state, filled in by the steps of :func:`evaluate_request` in their order."""

    request: EvaluationRequest
    runtime: Runtime
    config: TraceJudgeConfig
    loaded: LoadedTrace = None  # type: ignore[assignment]  # read_trace
    judge_plan: JudgePlan = None  # type: ignore[assignment]  # plan: built once, the jobs and the fingerprint come from it
    jobs: list[JudgeJob] = field(default_factory=list)  # plan
    sampled_out: list[str] = field(default_factory=list)  # plan
    on_trace: dict[str, JudgeResult] = field(default_factory=dict)  # take_known: final results on the trace
    known: dict[str, JudgeResult] = field(default_factory=dict)  # take_known: those + results cached in Redis
    fresh: list[JudgeResult] = field(default_factory=list)  # judge_the_rest
    tool_calls: Any = None  # judge_the_rest: the trace's tool calls, counted once
    tools: Any = None  # judge_the_rest: the same as each feedback's metadata carries it (``tool_record``)

    @classmethod
    def start(cls, request: EvaluationRequest, runtime: Runtime) -> "Evaluation":
        """The request's config, and its environment: the payload's, else TRACEJUDGE_ENVIRONMENT, else the config's."""
        config = request.config or runtime.config
        log_unused_keys_once(config, log)
        environment = request.environment or runtime.settings.environment
        return cls(request=request.model_copy(update={"environment": environment}), runtime=runtime, config=config)

    @property
    def trace_id(self) -> str:
        return self.request.trace_id

    @property
    def execution(self) -> Any:
        return self.config.judges.execution

    @property
    def partial(self) -> bool:
        """A partial run (``judges=...``): its assessments only, no tags, report or plan fingerprint."""
        return self.request.judges is not None

    def error(self, code: str, message: str, **fields: Any) -> EndedEarly:
        """An error verdict ending the evaluation."""
        return EndedEarly(error_verdict(
            self.trace_id, code, message, self.config, evaluation_id=self.request.evaluation_id,
            environment=self.request.environment, **fields,
        ))

    def skipped(self, reason: str) -> EndedEarly:
        """A skipped verdict ending the evaluation."""
        return EndedEarly(skipped_verdict(
            self.trace_id, reason, self.config, evaluation_id=self.request.evaluation_id, workflow_name=self.loaded.workflow_name,
        ))


def check_id(ev: Evaluation) -> None:
    """A malformed trace id ends it at once (``INVALID_TRACE_ID``)."""
    try:
        check_trace_id(ev.trace_id)
    except InvalidTraceId as exc:
        raise ev.error(INVALID_TRACE_ID, str(exc)) from None


def read_trace(ev: Evaluation, *, started: float) -> None:
    """The one read of the trace (under the lock), waiting for what is left of ``trace_wait_seconds``; tool calls
    and steps only if a judge reads them (:func:`plan`). Not found, not whole: an error verdict saying why."""
    execution, runtime = ev.execution, ev.runtime
    try:
        ev.loaded = runtime.store.wait_for_trace(
            ev.trace_id, wait_seconds=trace_wait_left(execution.trace_wait_seconds, started=started), agent=False
        )
    except InvalidTraceId as exc:
        raise ev.error(INVALID_TRACE_ID, str(exc)) from None
    except TraceIncomplete as exc:  # never judged in part: the verdict says what is missing
        message = (
            f"{exc} after waiting {execution.trace_wait_seconds:g} s (trace_wait_seconds); not judged in part. "
            "MLflow's exporter drops spans it fails to write (see its debug log); raise trace_wait_seconds "
            "if the export is only slow"
        )
        raise ev.error(TRACE_INCOMPLETE, message) from None
    except TraceNotReady as exc:
        # the reader's reason names the trace once; add where and how long we looked
        message = (
            f"{exc}; waited {execution.trace_wait_seconds:g} s (judges.execution.trace_wait_seconds) on "
            f"{runtime.settings.mlflow_tracking_uri or 'the default tracking URI'}"
        )
        raise ev.error(TRACE_NOT_FOUND, message) from None


def skip_filtered(ev: Evaluation) -> None:
    """A trace the config's filters leave out ends skipped (counted)."""
    loaded = ev.loaded
    skip = filter_reason(ev.config.judges.filters, workflow=loaded.workflow_name, tags=loaded.tags, state=loaded.state)
    if skip is not None:
        count(ev.runtime, loaded.workflow_name, counters.SKIPPED_FILTER)
        log.info("not judging %s: %s", ev.trace_id, skip)
        raise ev.skipped(f"filtered out: {skip}")


def plan(ev: Evaluation) -> None:
    """The plan and its jobs (each with its key), the agent data read if a judge needs it; an unknown judge,
    every judge sampled out (a skip, not an error) or no judges at all end it."""
    try:
        ev.judge_plan = runtime_plan(ev.config, ev.runtime, ev.request)
        ev.jobs, ev.sampled_out = plan_jobs(ev.loaded, ev.judge_plan, ev.runtime, ev.request)
        if any(reads_agent_data(job.judge) for job in ev.jobs):
            add_agent_data(ev.loaded)  # the jobs' inputs are the targets' own: filled in place
    except UnknownJudgeError as exc:
        raise ev.error(UNKNOWN_JUDGE, exc.message) from None
    if not ev.jobs and ev.sampled_out:  # the user's per-judge sampling left every judge out: not an error
        raise ev.skipped(f"every judge was sampled out on this trace ({', '.join(ev.sampled_out)}; judges.sampling.judges)")
    if not ev.jobs:
        raise ev.error(
            NO_TARGETS,
            "the plan has no judges for this trace (no workflow_defaults, and no node_overrides matching its nodes)",
            workflow_name=ev.loaded.workflow_name,
        )


def take_known(ev: Evaluation) -> None:
    """The results not to judge again: final ones on the trace, and those an earlier attempt cached in Redis.

    Only final results are reused (a score, a permanent error of the input). A transient failure (timeout, rate
    limit, provider error, deadline, budget...) is judged again. Every new result supersedes our valid assessment
    at its (span, judge), whatever changed (threshold, model, rubric, version: a new key), so a trace never shows
    two valid ones of ours for one (span, judge). ``force``: nothing is reused.
    """
    if ev.request.force:  # re-judge everything; the new assessments supersede ours already there
        ev.on_trace, ev.known = {}, {}
        return
    ev.on_trace = writer.existing_results(ev.loaded.assessments)
    ev.known = {**ev.runtime.state.cached_results([j.key for j in ev.jobs if j.key not in ev.on_trace]), **ev.on_trace}


def judge_the_rest(ev: Evaluation, held: Any) -> None:
    """Judge what is not known: quarantined code judges answered LOOP_BLOCKED, the rest on the loop under the
    overall deadline (counted from here: the waits for the trace and the lock are not judging time), final
    results cached at once. Budget refusals are counted; with ``on_exceed: defer`` what was judged is written
    and the evaluation is deferred (:class:`EvaluationDeferred`)."""
    runtime, state, execution = ev.runtime, ev.runtime.state, ev.execution
    todo = [job for job in ev.jobs if job.key not in ev.known]
    # a code judge that blocked a worker's event loop is answered LOOP_BLOCKED for a while (tasks/quarantine.py)
    stuck = quarantined(state, [(j.judge.name, j.judge.version) for j in todo if j.judge.kind == "code"])
    ev.fresh = [blocked_result(j, stuck[(j.judge.name, j.judge.version)]) for j in todo if (j.judge.name, j.judge.version) in stuck]
    todo = [j for j in todo if (j.judge.name, j.judge.version) not in stuck]
    # the trace's tool calls per tool, in each feedback's metadata: what the monitor counts (``tool_record``)
    ev.tool_calls = trace_tool_calls(ev.loaded)
    ev.tools = tool_record.trace_text(ev.tool_calls)
    if not todo:
        return
    ev.fresh += judge_jobs(
        runtime, todo, config=ev.config, force=ev.request.force,
        loop_timeout=execution.overall_timeout_seconds + LOOP_WAIT_MARGIN_SECONDS,
    )
    state.cache_results([r for r in ev.fresh if writer.is_final(r)])  # transient failures are judged again
    over_budget = [r for r in ev.fresh if r.error is not None and r.error.type == errors.BUDGET_EXCEEDED]
    if not over_budget:
        return
    count(runtime, ev.loaded.workflow_name, counters.BUDGET_EXCEEDED, len(over_budget))
    if ev.config.judges.budget.on_exceed == "defer":
        done = [r for r in ev.fresh if not _never_reused(r)]
        check_lock(held, ev.trace_id)
        rollup_step.before_writeback(runtime, ev.loaded)  # recorded when the deferred run writes its verdict
        runtime.store.write_all(
            runtime.store.result_calls(
                ev.trace_id, done, evaluation_id=ev.request.evaluation_id,
                overrides=writer.supersedes(ev.loaded.assessments, done), tools=ev.tools,
            )
        )
        raise EvaluationDeferred(
            f"{len(over_budget)} judge call(s) of {ev.trace_id} deferred to the next UTC day: {over_budget[0].error.message}",
            request=ev.request,
        )


def results_of(ev: Evaluation) -> list[JudgeResult]:
    """Every job's result, in the plan's order: the new one, else the known one."""
    by_key = {**ev.known, **{r.key: r for r in ev.fresh}}
    return [by_key[job.key] for job in ev.jobs]


def make_verdict(ev: Evaluation, *, attempt: int) -> QualityVerdict:
    """The verdict over every job's result (reused + new); the judge results counted in the metrics."""
    request, loaded = ev.request, ev.loaded
    results = results_of(ev)
    metrics.count_judge_results(ev.fresh, reused=[ev.known[job.key] for job in ev.jobs if job.key in ev.known])
    return build_verdict(
        ev.trace_id,
        results,
        ev.config,
        evaluation_id=request.evaluation_id,
        workflow_name=loaded.workflow_name,
        environment=request.environment,
        reused=len(results) - len(ev.fresh),
        aggregations={job.judge.name: job.judge.aggregations for job in ev.jobs if job.judge.aggregations},
        warnings=trace_warnings(loaded, ev.config, request),
        attempt=attempt,
        retry_of=request.retry_of,
        partial=ev.partial,
        sampled_out=ev.sampled_out,
        tool_usage=trace_tool_usage(loaded, calls=ev.tool_calls),
    )


def write_back(ev: Evaluation, verdict: QualityVerdict, held: Any) -> None:
    """One concurrent batch: the assessments not yet on the trace, the tags, the report and metrics; then the
    trace's rollups replaced (``record_rollup``).

    A partial run (judges=...) writes its assessments only, without the plan's fingerprint: the full evaluation's
    tags, report and run metrics stay as they are, and pick-up does not count it as judged.
    """
    runtime, loaded, request = ev.runtime, ev.loaded, ev.request
    unwritten = [r for r in results_of(ev) if r.key not in ev.on_trace]
    overrides = writer.supersedes(loaded.assessments, unwritten)
    planned = None if ev.partial else fingerprint(ev.judge_plan, ev.config, default_model=runtime.settings.default_model)
    calls = runtime.store.result_calls(
        ev.trace_id, unwritten, evaluation_id=request.evaluation_id, overrides=overrides, plan=planned, tools=ev.tools
    )
    if not ev.partial:
        # the fingerprint goes on the trace as a tag only when no feedback carries it there (rare: every
        # result reused under a changed plan), so pick-up does not enqueue the trace again and again
        plan_tag = planned if not unwritten and not has_plan(loaded.tags, loaded.assessments, planned) else None
        calls += summary_calls(runtime, loaded, verdict, ev.config, plan=plan_tag)
    check_lock(held, ev.trace_id)  # right before the write-back: still ours, asked of Redis
    rollup_step.before_writeback(runtime, loaded)
    runtime.store.write_all(calls)
    lag = first_verdict_lag(loaded)
    if lag is not None:
        metrics.observe_trace_lag(lag)
    runtime.state.forget_results([r.key for r in unwritten if r.key])  # on the trace now: the cache has done its job
    record_rollup(runtime, loaded, verdict, request, written=unwritten, overrides=overrides, plan=planned, tools=ev.tools)


def after_write_back(ev: Evaluation, verdict: QualityVerdict) -> None:
    """A full evaluation's follow-ups: human review routing, and a retry of its transient failures."""
    if ev.partial:
        return
    state = ev.runtime.state
    route_for_review(trace_id=ev.trace_id, experiment_id=ev.loaded.experiment_id, verdict=verdict, config=ev.config,
                     redis=getattr(state, "redis", None), key_prefix=getattr(state, "prefix", ""))
    retry_transient_failures(ev.runtime, ev.loaded, results_of(ev), ev.request)


def ended(runtime: Runtime, verdict: QualityVerdict) -> QualityVerdict:
    """A verdict that ends the evaluation before any write-back, counted in the pipeline's counts
    (``rollup_step.count_ended``: ``tracejudge status``, the pipeline rules) as a written one is."""
    return rollup_step.count_ended(runtime, verdict)


def judge_jobs(
    runtime: Runtime, jobs: list[JudgeJob], *, config: TraceJudgeConfig, force: bool, loop_timeout: float | None = None
) -> list[JudgeResult]:
    """Judge ``jobs`` on the process's event loop (a trace's and a session's alike): the runtime's LLM client,
    its shared rate limiter and the controls (budget; the result cache unless ``force``), under the overall
    deadline (``overall_timeout_seconds``) counted from now. ``loop_timeout``: how long to wait on the loop
    before ``tasks.loop.LoopStalled`` (None: no bound)."""
    execution = config.judges.execution
    return runtime.run(
        run_judges(
            jobs,
            client=runtime.llm,
            execution=execution,
            default_model=runtime.settings.default_model,
            deadline=time.monotonic() + execution.overall_timeout_seconds,
            limiter=runtime.limiter(execution.rate_limit_per_second),
            controls=runtime.controls(config, use_cache=not force),
        ),
        timeout=loop_timeout,
    )


def check_lock(held: Any, trace_id: str) -> None:
    """Right before a write-back: the trace's lock must still be ours (asked of Redis, not only the renewer).

    Lost (expired while this process was paused, say), another delivery may hold it and write now: writing
    too would put two results of ours on one (span, judge). So nothing is written: :class:`EvaluationBusy`,
    the task retries later, and the judged results wait in Redis.
    """
    if not held.still_held():
        raise EvaluationBusy(
            f"the evaluation lock of {trace_id} was lost before the write-back; retrying later "
            "(judged results wait in Redis)"
        )


def trace_wait_left(trace_wait_seconds: float, *, started: float, now: float | None = None) -> float:
    """What is left of ``trace_wait_seconds`` counted from the delivery's start, not from getting the lock.

    A second delivery of a trace that is not exported (yet) first waits for the lock while the first
    delivery waits for the trace; it must not wait the whole ``trace_wait_seconds`` again afterwards
    (seen: 44 s for a missing trace with the 30 s setting). It still looks once (0 left).

    >>> trace_wait_left(30, started=100.0, now=114.0), trace_wait_left(30, started=100.0, now=140.0)
    (16.0, 0.0)
    """
    spent = (time.monotonic() if now is None else now) - started
    return max(0.0, float(trace_wait_seconds) - spent)


def lock_wait_seconds(execution: Any) -> float:
    """How long a delivery waits for another holder of the trace's lock: the holder may wait for the trace
    (``trace_wait_seconds``), then judge (``overall_timeout_seconds``), then write back (the margin).

    >>> from tracejudge.config.models import ExecutionConfig
    >>> lock_wait_seconds(ExecutionConfig(trace_wait_seconds=30, overall_timeout_seconds=300))
    360.0
    """
    return float(execution.trace_wait_seconds + execution.overall_timeout_seconds + LOCK_WAIT_MARGIN_SECONDS)


def record_rollup(
    runtime: Runtime,
    loaded: LoadedTrace,
    verdict: QualityVerdict,
    request: EvaluationRequest,
    *,
    written: list[JudgeResult],
    overrides: dict[str, str],
    plan: str | None,
    tools: str | None = None,
) -> None:
    """Replace the trace's contribution to the monitor's Redis rollups with what its record now says
    (``tasks/rollup_step.py``: one script call; never fails the evaluation). A partial run writes no tags."""
    config = request.config or runtime.config
    environment = request.environment or runtime.settings.environment or config.judges.environment or "production"
    feedbacks = [
        writer.feedback(loaded.trace_id, r, evaluation_id=request.evaluation_id, plan=plan, tools=tools) for r in written
    ]
    partial = request.judges is not None
    rollup_step.record(
        runtime, loaded, written=feedbacks, superseded=overrides.values(), tags={} if partial else verdict_tags(verdict),
        environment=environment,
        verdict=verdict,  # the pipeline's counts by verdict time (ops.pipeline; a partial run's as partial), same round trip
        lag_seconds=first_verdict_lag(loaded),
    )


def first_verdict_lag(loaded: LoadedTrace, *, now: float | None = None) -> float | None:
    """The trace's end to its verdict on the trace, in seconds, for the trace's first judging only; None for a
    trace that already held results of ours (a re-judge, a backfill, a retry of its failures: its lag would be
    the age of the trace, not how far the pipeline is behind, and would set off ``pipeline_lag``), or whose start
    time is unknown.
    """
    if not loaded.timestamp_ms or any(writer.is_ours(a) for a in loaded.assessments or ()):
        return None
    return (time.time() if now is None else now) - (loaded.timestamp_ms + loaded.duration_ms) / 1000


def retry_transient_failures(
    runtime: Runtime, loaded: LoadedTrace, results: list[JudgeResult], request: EvaluationRequest
) -> None:
    """Put a background evaluation that left transient failures off for a retry (``controls.retries``)."""
    transient = [r for r in results if not writer.is_final(r) and not _never_reused(r)]
    state = runtime.state
    if not transient or request.gate or request.force or getattr(state, "redis", None) is None:
        return
    failed = retries.failed_evaluations(loaded.assessments, plus=request.evaluation_id)
    delay = retries.retry_delay(failed)
    if delay is None:
        count(runtime, loaded.workflow_name, counters.RETRIES_EXHAUSTED)
        log.warning(
            "%s: %d transient failure(s) after %d evaluations; no more automatic retries (tracejudge backfill re-judges them)",
            loaded.trace_id, len(transient), failed,
        )
        return
    try:
        retries.schedule_retry(state.redis, state.prefix, request, delay=delay, now=time.time())
    except Exception as exc:  # the record (MLflow) still shows the failures: backfill finds them
        log.warning("could not schedule the retry of %s: %s", loaded.trace_id, exc)
        return
    count(runtime, loaded.workflow_name, counters.RETRY_SCHEDULED)
    log.info("%s: %d transient failure(s); judged again in %d s (failed evaluation %d)", loaded.trace_id, len(transient), delay, failed)


def retry_attempt(runtime: Runtime, retry_of: str | None) -> int:
    """This run's attempt number: 1, or one more than the trace it re-runs (its ``tracejudge.attempt`` tag)."""
    if not retry_of:
        return 1
    try:
        tags = runtime.store.client.get_trace(retry_of).info.tags or {}
    except Exception as exc:  # the parent is gone or unreadable: count it as a first run's retry
        log.warning("could not read the attempt number of %s (the trace this one re-runs): %s", retry_of, exc)
        tags = {}
    try:
        return int(tags.get(ATTEMPT_TAG, "1")) + 1
    except ValueError:
        return 2


def trace_warnings(loaded: LoadedTrace, config: TraceJudgeConfig, request: EvaluationRequest) -> list[str]:
    """What the verdict says about the trace itself: override keys matching no node, an unverified span count."""
    notes = unmatched_override_warnings(config, [t.node_id for t in loaded.targets]) if request.judges is None else []
    if not loaded.span_count_known:
        notes.append(
            f"{UNCOUNTED}: MLflow recorded no span count for this trace (mlflow.trace.sizeStats); it was judged on "
            "the spans in the store (none missing its parent), and spans exported later are not in this verdict"
        )
    return notes


def runtime_plan(config: TraceJudgeConfig, runtime: Runtime, request: EvaluationRequest) -> JudgePlan:
    """The request's plan of every target (its ``judges=``, its environment's thresholds)."""
    return build_plan(config, runtime.registry.with_config(config), judges=request.judges, environment=request.environment)


def plan_jobs(
    loaded: LoadedTrace, plan: JudgePlan, runtime: Runtime, request: EvaluationRequest
) -> tuple[list[JudgeJob], list[str]]:
    """Every (target, judge) pair of the plan, each with its idempotency key, and the judges sampled out.

    A judge with its own rate (``sampling.judges``) runs only on the traces its rate samples; the
    names of those it left out of this trace come back second (the verdict says which gating judges
    they were, and does not hold them against the trace).
    """
    config = request.config or runtime.config
    judge_rates = config.judges.sampling.judges
    jobs = []
    left_out = 0
    sampled_out: set[str] = set()
    for target in loaded.targets:
        for planned in plan.for_target(target.node_id):
            rate = judge_rates.get(planned.judge.name)
            if rate is not None and not request.gate and not judge_sampled(loaded.trace_id, planned.judge.name, rate):
                left_out += 1
                sampled_out.add(planned.judge.name)
                continue
            model = planned.model or runtime.settings.default_model
            if planned.judge.kind == "code":
                model = "code"
            key = writer.result_key(
                loaded.trace_id, target.span_id, planned.judge.name, planned.judge.version, model, planned.threshold
            )
            jobs.append(
                JudgeJob(judge=planned.judge, input=target.judge_input, threshold=planned.threshold, model=planned.model, key=key)
            )
    if left_out:
        count(runtime, loaded.workflow_name, counters.SKIPPED_JUDGE_SAMPLING, left_out)
    return jobs, sorted(sampled_out)


def reads_agent_data(judge: Any) -> bool:
    """Whether a judge may read a target's tool calls or steps: an LLM judge whose template names
    ``{tool_calls}`` or ``{trajectory}``, and every code judge (its function gets the whole input).

    >>> from tracejudge.judges import Judge
    >>> reads_agent_data(Judge(name="tools", prompt="Were these right? {tool_calls}")), reads_agent_data(Judge(name="c", prompt="{output}"))
    (True, False)
    """
    return judge.kind == "code" or any(variable in AGENT_VARIABLES for variable in judge.variables)


def count(runtime: Runtime, workflow: str | None, event: str, n: int = 1) -> None:
    """Add to today's control counters (best effort: monitoring must not fail an evaluation)."""
    try:
        runtime.state.add_counts({(workflow, event): n})
    except Exception as exc:
        log.warning("could not count %s for %s: %s", event, workflow, exc)


def _never_reused(result: JudgeResult) -> bool:
    return result.error is not None and result.error.type in writer.NEVER_REUSED


def summary_calls(
    runtime: Runtime, loaded: LoadedTrace, verdict: QualityVerdict, config: TraceJudgeConfig, *, plan: str | None = None
) -> list[Any]:
    """Trace tags, and the report and metrics on the trace's run (or the experiment's online run).

    Two tags: ``tracejudge.status`` and ``tracejudge.score`` (what users filter on; the band is the
    score's, the report's URI follows from the run and is in the verdict), plus the attempt tags when
    they apply and ``plan`` (the ``tracejudge.plan`` tag) when given. The report and the run metrics (the
    same numbers) only as the artifact settings ask (``config.write_report``: neither with
    ``artifact_level: minimal``, ``log_artifacts: false`` or ``artifacts.quality: false``; then no run is
    looked up or linked either). Sets ``verdict.artifact_uri``; returns the MLflow calls to make (see
    ``TraceStore.write_all``).
    """
    store = runtime.store
    run_id = store.report_run(loaded) if config.write_report else None
    if run_id is not None:
        verdict.artifact_uri = store.report_uri(run_id, loaded.trace_id)
    tags = verdict_tags(verdict)
    if verdict.attempt > 1 or verdict.retry_of:
        tags[ATTEMPT_TAG] = str(verdict.attempt)
    if verdict.retry_of:
        tags[RETRY_OF_TAG] = verdict.retry_of
    if plan:  # what it was judged with, when no feedback of this run carries it (see evaluate_request)
        tags[PLAN_TAG] = plan
    return store.summary_calls(
        loaded.trace_id,
        run_id=run_id,
        tags=tags,
        report=quality_report(verdict) if run_id is not None else None,
        metrics=quality_metrics(verdict) if run_id is not None else None,
        step=loaded.timestamp_ms or 0,
        experiment_id=loaded.experiment_id,
    )


def verdict_tags(verdict: QualityVerdict) -> dict[str, str]:
    """The two tags every full evaluation writes: ``tracejudge.status`` and ``tracejudge.score``."""
    return {STATUS_TAG: verdict.status, SCORE_TAG: "" if verdict.overall_score is None else f"{verdict.overall_score:.4f}"}


def verdict_json(verdict: QualityVerdict) -> dict[str, Any]:
    """The verdict as the task's JSON result: compact, a one-line summary first (see ``QualityVerdict.to_result``)."""
    return verdict.to_result()
