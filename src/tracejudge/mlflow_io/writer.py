"""Write judge results back to MLflow, idempotently.

One feedback assessment per (target, judge): value = score (a float, so
``feedback.relevance > 0.8`` filters work), rationale, source LLM_JUDGE with
the model, ``span_id`` = the node's span, metadata (strings) with threshold,
passed, duration, tokens, attempts, the evaluation id, an idempotency key
and, for a full evaluation, the plan's fingerprint (``tracejudge.plan``: what
pick-up and backfill read to skip a trace judged with the current plan). A
failed judge is a feedback with an ``AssessmentError`` and no value.

MLflow does not de-duplicate assessments, so every write carries a key
derived from (trace, span, judge, judge version, model, threshold); before
judging, the caller reads the keys already on the trace and skips them.

One valid assessment of ours per (span, judge name), whatever changed: a new
result for a (span, judge) names our valid one there in ``overrides`` (see
:func:`supersedes`), so MLflow marks it invalid and searches such as
``feedback.relevance > 0.8`` and every reader see only the new one. A new
threshold, model, rubric or judge version makes a new key, and so a new
result that supersedes the old. Assessments of people (source ``HUMAN``) are
never ours, so never superseded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tracejudge.judges.model import ErrorInfo, JudgeResult, TokenUsage
from tracejudge.mlflow_io.reader import MlflowUnavailable
from tracejudge.ops import metrics

log = logging.getLogger(__name__)

KEY = "tracejudge.key"
#: Metadata key of a full evaluation's feedbacks: the plan's fingerprint (``controls.judged.plan_fingerprint``).
PLAN = "tracejudge.plan"
#: Metadata key of the trace's tool calls per tool (``tool_record``: what the monitor counts), on each feedback
#: an evaluation of a trace that made tool calls writes.
TOOLS = "tracejudge.tools"
EVALUATION_ID = "evaluation_id"
ARTIFACT_NAME = "quality_assessment.json"
ONLINE_RUN_TAG = "tracejudge.role"
ONLINE_RUN_NAME = "tracejudge-online"
DEFAULT_WRITE_CONCURRENCY = 8
TAG_PREFIX = "tracejudge."
#: Error codes of results that are never reused: the next evaluation judges again.
NEVER_REUSED = frozenset({"BUDGET_EXCEEDED"})
_UNAVAILABLE = re.compile(
    r"Max retries exceeded|Connection refused|ConnectionError|Failed to establish|Read timed out|"
    r"RemoteDisconnected|status code 50[234]|Bad Gateway|Service Unavailable",
    re.I,
)

T = TypeVar("T")


def result_key(trace_id: str, span_id: str | None, judge: str, version: str, model: str | None, threshold: float) -> str:
    """The idempotency key of one (trace, span, judge) result.

    >>> len(result_key("tr-1", "s1", "coherence", "abc", "gpt-4o-mini", 0.8))
    24
    """
    blob = f"{trace_id}|{span_id}|{judge}|{version}|{model}|{threshold:.6f}"
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


#: Judge errors that are final, like a score: the input itself is wrong, so judging again gives the same.
#: Every other error (timeouts, rate limits, provider errors, deadlines, budgets...) is transient: never
#: reused, judged again by the next evaluation, and the new result supersedes the failed assessment.
FINAL_ERRORS = frozenset({"MISSING_VARIABLE", "UNKNOWN_JUDGE"})


#: A trace is given up on after this many evaluations ended with transient failures (the first + 3 automatic
#: retries, ``controls.retries.BACKOFF_SECONDS``); after that only ``tracejudge backfill`` judges it again.
#: Here, with the record's other rules, because the report reads it from the record too (``monitor``).
MAX_FAILED_EVALUATIONS = 4


def failed_evaluations(assessments: Iterable[Any], *, plus: str | None = None) -> int:
    """How many evaluations wrote a non-final feedback of ours on the trace (valid or superseded).

    ``plus``: an evaluation id to count as failed too (the one finishing now, before its write lands).

    >>> from types import SimpleNamespace as A
    >>> failed = lambda e, v=True: A(metadata={"tracejudge.key": "k", "evaluation_id": e}, feedback=1, valid=v,
    ...                              error=A(error_code="TIMEOUT"))
    >>> failed_evaluations([failed("e1", v=False), failed("e2")]), failed_evaluations([failed("e1")], plus="e3")
    (2, 2)
    """
    ids = set()
    for assessment in assessments:
        metadata = getattr(assessment, "metadata", None) or {}
        error = getattr(assessment, "error", None)
        if not metadata.get(KEY) or getattr(assessment, "feedback", None) is None or error is None:
            continue
        if getattr(error, "error_code", None) in FINAL_ERRORS:
            continue
        ids.add(metadata.get(EVALUATION_ID) or getattr(assessment, "assessment_id", None))
    if plus:
        ids.add(plus)
    return len(ids)


def is_final(result: JudgeResult) -> bool:
    """A score, or a permanent error of the input: worth reusing. A transient failure is not.

    >>> from tracejudge.judges.model import ErrorInfo
    >>> ok = JudgeResult(name="coherence", target="workflow", score=0.9, threshold=0.8, passed=True)
    >>> failed = ok.model_copy(update={"score": None, "passed": False, "error": ErrorInfo(type="PROVIDER_ERROR", message="503")})
    >>> is_final(ok), is_final(failed)
    (True, False)
    """
    return result.error is None or result.error.type in FINAL_ERRORS


def is_ours(assessment: Any) -> bool:
    """A valid feedback of ours: it carries our key and was not written by a person (source ``HUMAN``).

    >>> from mlflow.entities import AssessmentSource, Feedback
    >>> ours = Feedback(name="coherence", value=0.9, metadata={KEY: "k1"}, source=AssessmentSource("LLM_JUDGE", "gpt-4o-mini"))
    >>> person = Feedback(name="coherence", value=0.2, metadata={KEY: "k1"}, source=AssessmentSource("HUMAN", "ana"))
    >>> is_ours(ours), is_ours(person)
    (True, False)
    """
    metadata = getattr(assessment, "metadata", None) or {}
    if not metadata.get(KEY) or getattr(assessment, "valid", True) is False or getattr(assessment, "feedback", None) is None:
        return False
    source_type = str(getattr(getattr(assessment, "source", None), "source_type", "") or "").upper()
    return source_type != "HUMAN"


def existing_results(assessments: Iterable[Any]) -> dict[str, JudgeResult]:
    """Our earlier final results on a trace, by key (valid assessments that carry our key; transient failures left out)."""
    found: dict[str, JudgeResult] = {}
    for assessment in assessments:
        metadata = getattr(assessment, "metadata", None) or {}
        key = metadata.get(KEY)
        if not is_ours(assessment):
            continue
        error = getattr(assessment, "error", None)
        if error is not None and getattr(error, "error_code", None) not in FINAL_ERRORS:
            continue  # transient (a 503, a timeout, a budget spent today...): judged again next time
        found[key] = _result_from_assessment(assessment, metadata, key)
    return found


def feedback_kwargs(
    trace_id: str, result: JudgeResult, *, evaluation_id: str, plan: str | None = None, tools: str | None = None
) -> dict[str, Any]:
    """The ``mlflow.log_feedback`` (and ``Feedback``) arguments for one result."""
    from mlflow.entities import AssessmentError, AssessmentSource

    metadata = feedback_metadata(result, evaluation_id=evaluation_id, plan=plan, tools=tools)
    source_type, source_id = source_of(result)
    kwargs: dict[str, Any] = dict(
        trace_id=trace_id,
        name=result.name,
        source=AssessmentSource(source_type=source_type, source_id=source_id),
        metadata=metadata,
        span_id=result.span_id,
    )
    if result.error is not None:
        kwargs["error"] = AssessmentError(error_code=result.error.type, error_message=result.error.message)
    else:
        kwargs["value"] = float(result.score) if result.score is not None else None
        if result.rationale is not None:
            kwargs["rationale"] = result.rationale
    return kwargs


def feedback_metadata(
    result: JudgeResult, *, evaluation_id: str, plan: str | None = None, tools: str | None = None
) -> dict[str, str]:
    """The metadata (strings only) every assessment of ours carries; the key makes writes idempotent.

    ``plan`` (a full evaluation's plan fingerprint) is kept under :data:`PLAN`; partial runs pass none.
    ``tools`` (the trace's tool calls per tool, ``tool_record.encode``) under :data:`TOOLS`.
    """
    metadata = {
        KEY: result.key or "",
        EVALUATION_ID: evaluation_id,
        "node_id": result.target,
        "threshold": f"{result.threshold:g}",
        "passed": "true" if result.passed else "false",
        "greater_is_better": "true" if result.greater_is_better else "false",
        "duration_ms": f"{result.duration_ms:.1f}",
        "prompt_tokens": str(result.tokens.prompt),
        "completion_tokens": str(result.tokens.completion),
        "attempts": str(result.attempts),
        "timestamp": result.timestamp,
        "judge_version": result.judge_version or "",
    }
    if result.cost_usd is not None:
        metadata["cost_usd"] = f"{result.cost_usd:.9f}".rstrip("0").rstrip(".") or "0"
    if result.cached:
        metadata["cached"] = "true"
        metadata["cache_key"] = result.cache_key or ""
    if result.truncated:
        metadata["truncated_chars"] = json.dumps(result.truncated, sort_keys=True)
    if result.scoring:  # how an LLM judge's score was read, and its spread over samples
        metadata["scoring"] = result.scoring + (f" (fallback: {result.scoring_fallback})" if result.scoring_fallback else "")
    if result.samples > 1:
        metadata["samples"] = str(result.samples)
        metadata["score_stdev"] = f"{result.score_stdev:.4f}" if result.score_stdev is not None else ""
    if plan:
        metadata[PLAN] = plan
    if tools:
        metadata[TOOLS] = tools
    for key, value in result.metadata.items():  # e.g. a session's id and turns; never replaces ours
        metadata.setdefault(key, value)
    return metadata


def source_of(result: JudgeResult) -> tuple[str, str]:
    """The assessment source (type, id): ``CODE`` for code judges, else ``LLM_JUDGE`` with the model."""
    return ("CODE" if result.model == "code" else "LLM_JUDGE"), (result.model or "unknown")[:250]


def feedback(
    trace_id: str, result: JudgeResult, *, evaluation_id: str, overrides: str | None = None, plan: str | None = None,
    tools: str | None = None,
) -> Any:
    """The MLflow ``Feedback`` assessment for one result; ``overrides`` names the assessment it replaces."""
    from mlflow.entities import Feedback

    return Feedback(
        **feedback_kwargs(trace_id, result, evaluation_id=evaluation_id, plan=plan, tools=tools), overrides=overrides
    )


def log_result(
    tracing_client: Any,
    trace_id: str,
    result: JudgeResult,
    *,
    evaluation_id: str,
    overrides: str | None = None,
    plan: str | None = None,
    tools: str | None = None,
) -> str:
    """Write one result as a feedback assessment through ``tracing_client``; returns its assessment id.

    With ``overrides`` (an assessment id) the new one supersedes it: MLflow marks the old one invalid.
    ``plan``: the full evaluation's plan fingerprint, kept in the metadata (:data:`PLAN`); ``tools``: the
    trace's tool calls per tool (:data:`TOOLS`).
    """
    assessment = call_mlflow(
        tracing_client.log_assessment,
        trace_id,
        feedback(trace_id, result, evaluation_id=evaluation_id, overrides=overrides, plan=plan, tools=tools),
    )
    return assessment.assessment_id


def superseded_ids(assessments: Iterable[Any]) -> dict[tuple[str | None, str], str]:
    """Our valid assessments on a trace by (span id, judge name): what a new result there supersedes.

    Where old data holds more than one (written before results superseded each other), the newest.
    """
    found: dict[tuple[str | None, str], tuple[int, str]] = {}
    for assessment in assessments:
        if not is_ours(assessment):
            continue
        place = (assessment.span_id, assessment.name)
        created = int(getattr(assessment, "create_time_ms", None) or 0)
        if place not in found or created >= found[place][0]:
            found[place] = (created, assessment.assessment_id)
    return {place: assessment_id for place, (_, assessment_id) in found.items()}


def supersedes(assessments: Iterable[Any], results: Iterable[JudgeResult]) -> dict[str, str]:
    """For each new result (by key), the id of our valid assessment at its (span, judge) that it replaces.

    Pass it as ``overrides`` to the write (``TraceStore.result_calls``), on every path that writes new results.
    """
    superseded = superseded_ids(assessments)
    return {r.key: superseded[(r.span_id, r.name)] for r in results if r.key and (r.span_id, r.name) in superseded}


def write_all(calls: list[Callable[[], T]], *, executor: ThreadPoolExecutor | None = None) -> list[T]:
    """Run MLflow calls concurrently (bounded by the executor); wait for all, then raise the first failure."""
    if not calls:
        return []
    own = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=DEFAULT_WRITE_CONCURRENCY)
    try:
        futures = [pool.submit(call) for call in calls]
        done, first_error = [], None
        for future in futures:
            try:
                done.append(future.result())
            except Exception as exc:  # keep waiting for the rest, so no write is left running
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return done
    finally:
        if own:
            pool.shutdown(wait=True)


def report_path(trace_id: str) -> str:
    """Where a trace's report lives in its run's artifacts (one per trace, so a run can hold many)."""
    return f"tracejudge/{trace_id}/{ARTIFACT_NAME}"


def report_uri(run_id: str, trace_id: str) -> str:
    return f"runs:/{run_id}/{report_path(trace_id)}"


def summary_calls(
    client: Any,
    trace_id: str,
    *,
    tags: dict[str, str],
    run_id: str | None,
    report: dict[str, Any] | None,
    metrics: dict[str, float] | None,
    step: int = 0,
    artifact_uri: str | None = None,
) -> list[Callable[[], Any]]:
    """The MLflow calls that write trace tags, and the report and metrics (each unless None) on the run
    (for :func:`write_all`). ``artifact_uri``: the run's, when known (the report is then written without
    MLflow looking the run up, see :func:`log_dict`).

    ``step`` is the metrics' step: the trace's start time in milliseconds, so that a run holding many
    traces (the experiment's online run) keeps one point per trace, a time series, not one value at step 0.
    """
    import time

    from mlflow.entities import Metric

    calls: list[Callable[[], Any]] = [
        functools.partial(call_mlflow, client.set_trace_tag, trace_id, key, str(value)[:250]) for key, value in tags.items()
    ]
    if run_id is not None:
        now = int(time.time() * 1000)
        if report is not None and artifact_uri is not None:
            calls.append(functools.partial(call_mlflow, log_dict, artifact_uri, report, report_path(trace_id),
                                           tracking_uri=getattr(client, "tracking_uri", None)))
        elif report is not None:
            calls.append(functools.partial(call_mlflow, client.log_dict, run_id, report, report_path(trace_id)))
        if metrics:
            calls.append(
                functools.partial(
                    call_mlflow,
                    client.log_batch,
                    run_id,
                    metrics=[Metric(k, float(v), step or now, step) for k, v in metrics.items()],
                )
            )
    return calls


def run_artifact_uri(artifact_location: str, run_id: str) -> str:
    """Where MLflow puts a run's artifacts: its experiment's artifact location + ``/<run>/artifacts``.

    >>> run_artifact_uri("file:///data/mlruns/1", "abc")
    'file:///data/mlruns/1/abc/artifacts'
    """
    from mlflow.utils.uri import append_to_uri_path

    return append_to_uri_path(artifact_location, run_id, "artifacts")


def log_dict(artifact_uri: str, dictionary: dict[str, Any], artifact_file: str, *, tracking_uri: str | None = None) -> None:
    """``MlflowClient.log_dict`` to a run whose artifact URI is known: the same JSON file in the same place.

    MLflow's own looks the run up first (``get_run``: the run with its tags, params and metrics, one
    read of the store) for every run it has not seen, which is every trace's own run.
    """
    import os
    import posixpath
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    directory, name = posixpath.split(posixpath.normpath(artifact_file))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            json.dump(dictionary, f, indent=2, default=str)
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifact(path, directory or None)


_online_runs: dict[str, str] = {}
_online_lock = threading.Lock()


def online_run_id(client: Any, experiment_id: str) -> str:
    """The run that holds reports of traces that have no run of their own (one per experiment).

    It is found by its tag ``tracejudge.role = online`` (created on first use)
    and cached for the life of the process, per tracking store (experiment ids of two stores collide).
    """
    cache_key = f"{getattr(client, 'tracking_uri', '')}|{experiment_id}"
    with _online_lock:
        cached = _online_runs.get(cache_key)
        if cached:
            return cached
        runs = call_mlflow(
            client.search_runs,
            [experiment_id],
            filter_string=f"tags.`{ONLINE_RUN_TAG}` = 'online'",
            max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        if runs:
            run_id = runs[0].info.run_id
        else:
            run = call_mlflow(
                client.create_run, experiment_id, run_name=ONLINE_RUN_NAME, tags={ONLINE_RUN_TAG: "online"}
            )
            run_id = run.info.run_id
        _online_runs[cache_key] = run_id
        return run_id


def link_trace(client: Any, trace_id: str, run_id: str) -> None:
    call_mlflow(client.link_traces_to_run, [trace_id], run_id)


def call_mlflow(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call MLflow; a server that does not answer becomes :class:`MlflowUnavailable` (retryable)."""
    from mlflow.exceptions import MlflowException

    op = getattr(fn, "__name__", "call")
    try:
        found = fn(*args, **kwargs)
    except MlflowException as exc:
        if _UNAVAILABLE.search(str(exc)):
            metrics.count_mlflow_call(op, "unavailable")
            raise MlflowUnavailable(f"MLflow tracking server unavailable: {str(exc)[:300]}") from None
        metrics.count_mlflow_call(op, "error")
        raise
    except (ConnectionError, OSError) as exc:
        metrics.count_mlflow_call(op, "unavailable")
        raise MlflowUnavailable(f"MLflow tracking server unavailable: {exc}") from None
    metrics.count_mlflow_call(op, "ok")
    return found


def _result_from_assessment(assessment: Any, metadata: dict[str, str], key: str) -> JudgeResult:
    error = getattr(assessment, "error", None)
    value = getattr(assessment, "value", None)
    source = getattr(assessment, "source", None)
    return JudgeResult(
        name=assessment.name,
        target=metadata.get("node_id", "workflow"),
        span_id=assessment.span_id,
        score=float(value) if isinstance(value, (int, float)) and error is None else None,
        threshold=_float(metadata.get("threshold"), 0.0),
        passed=metadata.get("passed") == "true" and error is None,
        greater_is_better=metadata.get("greater_is_better", "true") == "true",
        rationale=getattr(assessment, "rationale", None),
        model=getattr(source, "source_id", None),
        judge_version=metadata.get("judge_version") or None,
        duration_ms=_float(metadata.get("duration_ms"), 0.0),
        timestamp=metadata.get("timestamp") or "",
        tokens=TokenUsage(
            prompt=int(_float(metadata.get("prompt_tokens"), 0)),
            completion=int(_float(metadata.get("completion_tokens"), 0)),
        ),
        attempts=int(_float(metadata.get("attempts"), 0)),
        error=ErrorInfo(type=error.error_code, message=error.error_message or "") if error is not None else None,
        truncated=json.loads(metadata["truncated_chars"]) if metadata.get("truncated_chars") else {},
        key=key,
        cost_usd=_float(metadata.get("cost_usd"), 0.0) if metadata.get("cost_usd") else None,
        cached=metadata.get("cached") == "true",
        cache_key=metadata.get("cache_key") or None,
    )


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default
