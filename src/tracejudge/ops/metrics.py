"""Prometheus metrics of tracejudge: every name in one place, recorded where the events already happen.

Recorded only in a process that turned them on (:func:`enable`: a worker with ``TRACEJUDGE_METRICS_PORT``
set, or a child of ``tracejudge worker --processes N``); elsewhere each hook is one boolean test.
Served by :mod:`tracejudge.ops.server` at ``/metrics``. With several worker processes each records into
``PROMETHEUS_MULTIPROC_DIR`` (set by the supervisor before the child starts) and the one server sums
them (prometheus_client's multiprocess mode); read at scrape time, from Redis, by
:mod:`tracejudge.ops.readings`: ``tracejudge_queue_depth``, ``tracejudge_oldest_message_age_seconds``,
``tracejudge_pickup_lag_seconds`` and ``tracejudge_budget_remaining_usd``.

Label values are bounded: queue names, verdict statuses, judge names and models of the config, error
codes, MLflow operation names, experiment ids. Never a trace id.

>>> from prometheus_client import REGISTRY
>>> enable(); count_judge_call(judge="relevance", model="m", outcome="scored")
>>> REGISTRY.get_sample_value("tracejudge_judge_calls_total", {"judge": "relevance", "model": "m", "outcome": "scored"}) >= 1
True
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVALUATIONS", "JUDGE_CALLS", "JUDGE_CALL_SECONDS", "EVALUATION_SECONDS", "TRACE_LAG_SECONDS", "LLM_TOKENS",
    "JUDGE_COST", "MLFLOW_CALLS", "RATE_LIMIT_WAIT", "EVENT_LOOP_LAG", "PICKUP_TRACES", "SCRAPE_TIME_METRICS",
    "QUEUE", "enable", "disable", "enabled",
    "count_evaluation", "count_judge_call", "count_judge_results", "observe_llm_call", "observe_rate_limit_wait",
    "count_mlflow_call", "observe_trace_lag", "set_event_loop_lag", "count_pickup",
]

#: LLM round trips and rate-limit waits: 10 ms .. 2 min.
_CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: An evaluation, and a trace's end to its verdict (the SLO number): 50 ms .. 1 h.
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

EVALUATIONS = Counter(
    "tracejudge_evaluations_total",
    "Evaluations a worker finished, by queue and outcome: the verdict's status (passed, failed, error, "
    "skipped; partial for a run of some judges), retried / deferred (no verdict yet), or exception (a bug).",
    ["queue", "status"],
)
JUDGE_CALLS = Counter(
    "tracejudge_judge_calls_total",
    "Judge results of evaluations, by judge, model and outcome: scored (a new LLM or code judge result), "
    "cached (the judge result cache answered), reused (already on the trace or in Redis), or the error code.",
    ["judge", "model", "outcome"],
)
JUDGE_CALL_SECONDS = Histogram(
    "tracejudge_judge_call_seconds", "One LLM request's round trip (each attempt), by model.", ["model"], buckets=_CALL_BUCKETS
)
EVALUATION_SECONDS = Histogram(
    "tracejudge_evaluation_seconds", "An evaluation task's start to its verdict, by queue.", ["queue"], buckets=_LAG_BUCKETS
)
TRACE_LAG_SECONDS = Histogram(
    "tracejudge_trace_lag_seconds",
    "The trace's end to its verdict being written to MLflow, by queue (what a pipeline SLO is about).",
    ["queue"],
    buckets=_LAG_BUCKETS,
)
LLM_TOKENS = Counter("tracejudge_llm_tokens_total", "LLM tokens paid for, by model and kind (prompt, completion).", ["model", "kind"])
JUDGE_COST = Counter("tracejudge_judge_cost_usd_total", "USD spent on judge calls (judges.pricing), by model.", ["model"])
MLFLOW_CALLS = Counter(
    "tracejudge_mlflow_calls_total",
    "Calls to MLflow by operation and outcome (ok, not_ready, unavailable, error).",
    ["op", "outcome"],
)
RATE_LIMIT_WAIT = Histogram(
    "tracejudge_rate_limit_wait_seconds",
    "Time a judge call waited for the shared rate limiter (slot or 429 cool-down), by model.",
    ["model"],
    buckets=(0.0, *_CALL_BUCKETS),
)
EVENT_LOOP_LAG = Gauge(
    "tracejudge_event_loop_lag_seconds",
    "How late the worker's event loop runs a callback (the worst live process): seconds it has been blocked.",
    multiprocess_mode="livemax",
)
PICKUP_TRACES = Counter(
    "tracejudge_pickup_traces_total",
    "Traces the online pick-up found, by experiment and outcome (enqueued, already_seen, already_judged).",
    ["experiment", "outcome"],
)
#: Gauges read from Redis when Prometheus scrapes (``ops/readings.py``), not recorded by processes.
SCRAPE_TIME_METRICS = (
    "tracejudge_queue_depth",
    "tracejudge_oldest_message_age_seconds",
    "tracejudge_pickup_lag_seconds",
    "tracejudge_budget_remaining_usd",
)

#: The queue of the evaluation running in this thread (set by the worker's task shell), for the histograms.
QUEUE: contextvars.ContextVar[str] = contextvars.ContextVar("tracejudge_queue", default="")

_enabled = False


def enable() -> None:
    """Record metrics in this process from now on (a worker with a metrics port, or a supervised child)."""
    global _enabled
    _enabled = True


def disable() -> None:
    global _enabled
    _enabled = False


def enabled() -> bool:
    return _enabled


def count_evaluation(*, queue: str, status: str, seconds: float | None = None) -> None:
    """One evaluation task finished (``status``: the verdict's, ``partial``, ``retried`` or ``deferred``)."""
    if not _enabled:
        return
    EVALUATIONS.labels(queue=queue, status=status).inc()
    if seconds is not None:
        EVALUATION_SECONDS.labels(queue=queue).observe(seconds)


def count_judge_call(*, judge: str, model: str, outcome: str, n: int = 1) -> None:
    if _enabled and n:
        JUDGE_CALLS.labels(judge=judge, model=model, outcome=outcome).inc(n)


def count_judge_results(fresh: Iterable[Any], reused: Iterable[Any] = ()) -> None:
    """An evaluation's judge results (``JudgeResult``): the new ones (scored, cached or an error code, with
    their tokens and cost) and those reused from the trace or Redis."""
    if not _enabled:
        return
    for result in fresh:
        model = result.model or "none"
        if result.cached:
            outcome = "cached"
        elif result.error is not None:
            outcome = result.error.type
        else:
            outcome = "scored"
        JUDGE_CALLS.labels(judge=result.name, model=model, outcome=outcome).inc()
        if result.cached:
            continue  # paid for by the call that filled the cache
        tokens = result.tokens
        if tokens.prompt:
            LLM_TOKENS.labels(model=model, kind="prompt").inc(tokens.prompt)
        if tokens.completion:
            LLM_TOKENS.labels(model=model, kind="completion").inc(tokens.completion)
        if result.cost_usd:
            JUDGE_COST.labels(model=model).inc(result.cost_usd)
    for result in reused:
        JUDGE_CALLS.labels(judge=result.name, model=result.model or "none", outcome="reused").inc()


def observe_llm_call(*, model: str, seconds: float) -> None:
    if _enabled:
        JUDGE_CALL_SECONDS.labels(model=model).observe(seconds)


def observe_rate_limit_wait(*, model: str, seconds: float) -> None:
    if _enabled:
        RATE_LIMIT_WAIT.labels(model=model).observe(max(0.0, seconds))


def count_mlflow_call(op: str, outcome: str) -> None:
    if _enabled:
        MLFLOW_CALLS.labels(op=op, outcome=outcome).inc()


def observe_trace_lag(seconds: float) -> None:
    """The trace ended ``seconds`` before its verdict was written (labelled with the running task's queue)."""
    if _enabled:
        TRACE_LAG_SECONDS.labels(queue=QUEUE.get() or "none").observe(max(0.0, seconds))


def set_event_loop_lag(seconds: float) -> None:
    if _enabled:
        EVENT_LOOP_LAG.set(seconds)


def count_pickup(experiment: str, outcome: str, n: int) -> None:
    if _enabled and n:
        PICKUP_TRACES.labels(experiment=experiment, outcome=outcome).inc(n)
