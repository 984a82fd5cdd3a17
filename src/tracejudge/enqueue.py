"""The producer side: put a finished trace on the queue, and wait on its verdict.

``enqueue`` sends a small JSON payload (ids and options) and returns an
:class:`EvaluationHandle` at once; ``handle.verdict(timeout=...)`` waits for
the worker's :class:`QualityVerdict` and applies the quality gate.
``judges.execution.mode`` decides: ``async`` enqueues, ``sync`` evaluates in
this process (no Redis needed), ``disabled`` does nothing and says so.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping, TypeVar

from pydantic import ValidationError

from tracejudge.config import JudgeRef, Settings, TraceJudgeConfig, load_config
from tracejudge.publish import (
    CompletedHandle,
    DisabledHandle,
    EnqueueError,
    EvaluationFailed,
    EvaluationHandle,
    EvaluationTimeout,
    SkippedHandle,
    send_request,
)
from tracejudge.verdict import QualityVerdict

__all__ = [
    "CompletedHandle",
    "DisabledHandle",
    "EnqueueError",
    "EvaluationFailed",
    "EvaluationHandle",
    "EvaluationTimeout",
    "SkippedHandle",
    "enqueue",
    "judged",
    "last_handle",
    "resolve_config",
]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
ConfigSource = TraceJudgeConfig | str | os.PathLike[str] | Mapping[str, Any] | None


AnyHandle = EvaluationHandle | CompletedHandle | DisabledHandle | SkippedHandle
_last_handle: ContextVar[AnyHandle | None] = ContextVar("tracejudge_last_handle", default=None)


def enqueue(
    trace_id: str,
    *,
    config: ConfigSource = None,
    judges: Sequence[str | JudgeRef | Mapping[str, Any]] | None = None,
    gate: bool = False,
    environment: str | None = None,
    evaluation_id: str | None = None,
    retry_of: str | None = None,
    block: bool = True,
    force: bool = False,
    workflow: str | None = None,
    sample: float | None = None,
) -> AnyHandle:
    """Queue a finished trace for judging; returns at once with a handle.

    ``config`` is a path, a mapping or a loaded config (sent with the task);
    without it the workers use their own. ``judges`` replaces the plan's judges
    for this call. ``gate=True`` uses the gate queue (someone is waiting).
    ``block=False`` hands the message to a background sender (microseconds;
    see :mod:`tracejudge.sender`) instead of sending it to Redis here.
    ``retry_of`` names the trace this one re-runs (``quality_retry``): the verdict
    counts its ``attempt`` on from there and says when ``max_retries`` are used up.
    A bad option (an ``environment`` outside production/development/experimental...)
    gives a completed handle whose verdict is ``error`` / ``INVALID_PAYLOAD``, as a
    worker answers a bad payload; nothing is queued.

    ``judges.sampling.rate`` (or ``sample``, which replaces it for this call)
    decides from a hash of the trace id, without MLflow or Redis, whether the
    trace is judged: a trace left out gets a :class:`SkippedHandle`
    (``gate=True`` is never sampled out unless ``sampling.gates_always`` is
    false). ``workflow`` names the workflow for the skip counters.
    ``force=True`` re-judges a trace that already has results (the new
    assessments supersede the old ones).

    >>> handle = enqueue("tr-5f1c...", gate=True)  # doctest: +SKIP
    >>> handle.verdict(timeout=60)  # doctest: +SKIP
    """
    from tracejudge.payload import EvaluationRequest

    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, float)) or not 0.0 <= sample <= 1.0):
        raise ValueError(f"enqueue(sample=...): must be a number from 0 to 1, the share of traces judged (got {sample!r})")
    explicit = config is not None
    resolved = resolve_config(config)
    off = judging_off(resolved)
    if off is not None:
        return _disabled(trace_id, off)
    mode = resolved.judges.execution.mode
    refs = [_as_ref(j) for j in judges] if judges is not None else None
    skipped = _sampled_out(trace_id, resolved, gate=gate, sample=sample, workflow=workflow)
    if skipped is not None:
        _last_handle.set(skipped)
        return skipped
    if not block and not evaluation_id:
        from tracejudge.sender import new_evaluation_id  # no os.urandom: it would hand the GIL to the sender

        evaluation_id = new_evaluation_id()
    try:
        request = EvaluationRequest(
            trace_id=trace_id,
            config=resolved if explicit else None,
            judges=refs,
            gate=gate,
            environment=environment,
            retry_of=retry_of,
            **({"force": True} if force else {}),
            **({"evaluation_id": evaluation_id} if evaluation_id else {}),
        )
    except ValidationError as exc:
        return _invalid(trace_id, exc, resolved)
    if gate or mode == "sync":  # someone waits: have MLflow export the trace now, not in up to 5 s
        from tracejudge.mlflow_io.export import flush_pending_traces

        flush_pending_traces()
    if mode == "sync":
        handle: AnyHandle = CompletedHandle(evaluate_now(request, config=resolved), config=resolved)
    elif not block:
        from tracejudge.sender import submit

        handle = submit(request, resolved)
    else:
        handle = send_request(request, resolved)
    _last_handle.set(handle)
    return handle


def evaluate_now(request: Any, *, config: TraceJudgeConfig) -> QualityVerdict:
    """Evaluate in this process (``sync`` mode): no Redis, no worker; same steps and write-back."""
    from tracejudge.tasks.evaluate import evaluate_request
    from tracejudge.tasks.runtime import get_runtime

    runtime = get_runtime(config=config, use_redis=False)
    return evaluate_request(request, runtime)


def last_handle() -> AnyHandle | None:
    """The handle of the last evaluation enqueued in this context (e.g. by :func:`judged`)."""
    return _last_handle.get()


def judged(
    fn: F | None = None, *, config: ConfigSource = None, gate: bool = False, judges: Sequence[str] | None = None
) -> Any:
    """Decorator: trace a workflow function with MLflow and enqueue its trace when it returns.

    The function's return value is unchanged; the handle is in :func:`last_handle`.

    >>> @judged(gate=True)  # doctest: +SKIP
    ... def article_writer(topic): ...
    """

    def wrap(func: F) -> F:
        import mlflow

        traced = func if getattr(func, "__wrapped_by_mlflow__", False) else mlflow.trace(func)

        @functools.wraps(func)
        def inner(*args: Any, **kwargs: Any) -> Any:
            result = traced(*args, **kwargs)
            trace_id = mlflow.get_last_active_trace_id(thread_local=True)
            if trace_id:
                enqueue(trace_id, config=config, gate=gate, judges=judges, workflow=func.__name__)
            else:
                log.warning("tracejudge: %s returned without an MLflow trace; nothing enqueued", func.__name__)
            return result

        return inner  # type: ignore[return-value]

    return wrap(fn) if fn is not None else wrap


_config_cache: dict[Any, TraceJudgeConfig] = {}


def resolve_config(config: ConfigSource) -> TraceJudgeConfig:
    """A loaded config from a path, mapping, config or None (cached per path)."""
    if isinstance(config, TraceJudgeConfig):
        return config
    if config is None or isinstance(config, (str, Path, os.PathLike)):
        key = str(config) if config is not None else ("env", Settings.from_env().config_path)
        cached = _config_cache.get(key)
        if cached is None:
            cached = _config_cache[key] = load_config(config)
        return cached
    return load_config(config)


def _invalid(trace_id: str, exc: ValidationError, config: TraceJudgeConfig) -> CompletedHandle:
    from tracejudge.tasks.evaluate import INVALID_PAYLOAD
    from tracejudge.payload import describe_payload_error
    from tracejudge.verdict import error_verdict

    message = describe_payload_error(exc)
    log.error("tracejudge: not evaluating %s: %s", trace_id, message)
    handle = CompletedHandle(error_verdict(str(trace_id), INVALID_PAYLOAD, message, config), config=config)
    _last_handle.set(handle)
    return handle


def _sampled_out(
    trace_id: str, config: TraceJudgeConfig, *, gate: bool, sample: float | None, workflow: str | None
) -> SkippedHandle | None:
    """A :class:`SkippedHandle` when sampling leaves the trace out (counted in a batch, no Redis call here)."""
    sampling = config.judges.sampling
    if (sampling.rate if sample is None else sample) >= 1.0 or (gate and sampling.gates_always):
        return None
    from tracejudge.controls.sampling import sampling_decision

    reason = sampling_decision(trace_id, config, gate=gate, sample=sample)
    if reason is None:
        _skip_counter().incr(workflow, "sampled")
        return None
    _skip_counter().incr(workflow, "skipped_sampling")
    log.debug("tracejudge: %s %s", trace_id, reason)
    return SkippedHandle(trace_id, reason, config=config)


_counter: Any = None


def _skip_counter() -> Any:
    """The process's batched sampling counter (flushed to Redis at most once a second)."""
    global _counter
    if _counter is None:
        from tracejudge.controls.counters import BatchedCounter

        def client() -> Any:
            from tracejudge.worker import get_app

            return get_app().backend.client

        _counter = BatchedCounter(client, lambda: Settings.from_env().key_prefix)
    return _counter


def judging_off(config: TraceJudgeConfig) -> str | None:
    """Why nothing is judged under ``config`` (for a :class:`DisabledHandle`), or None when judging is on.

    >>> judging_off(TraceJudgeConfig.model_validate({"judges": {"execution": {"mode": "disabled"}}}))
    'judging is off (judges.execution.mode: disabled)'
    """
    if not config.enabled or not config.enable_judges:
        return "judging is off (observability.mlflow.enabled / enable_judges is false)"
    if config.judges.execution.mode == "disabled":
        return "judging is off (judges.execution.mode: disabled)"
    return None


def _disabled(trace_id: str, reason: str) -> DisabledHandle:
    log.info("tracejudge: not evaluating %s: %s", trace_id, reason)
    handle = DisabledHandle(trace_id, reason)
    _last_handle.set(handle)
    return handle


def _as_ref(judge: str | JudgeRef | Mapping[str, Any]) -> JudgeRef:
    if isinstance(judge, JudgeRef):
        return judge
    if isinstance(judge, str):
        return JudgeRef(name=judge)
    return JudgeRef.model_validate(dict(judge))
