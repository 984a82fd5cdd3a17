"""The one entry point a queue worker calls: a payload in, a verdict or a retry decision out.

:func:`run_task` validates the payload (a bad one is answered with an
``INVALID_PAYLOAD`` verdict, never retried), evaluates it with the process's
runtime, and turns the failures worth a retry into a :class:`Retry` chosen
by the :class:`RetryPolicy`; once the policy gives up, the verdict says why
(``MLFLOW_UNAVAILABLE``, ``EVALUATION_BUSY``), and an evaluation MLflow stayed down
for is put off to be judged again later (``tasks/outage.py``). Every verdict it returns is counted once in the
pipeline's counts (``ops.pipeline``; those ended before a write-back by ``rollup_step.count_ended``).
The worker only maps this onto its queue (Celery's ``self.retry``).

>>> outcome = run_task({"trace_id": 5}, attempt=0)  # doctest: +SKIP
>>> outcome.verdict["error"]["code"]  # doctest: +SKIP
'INVALID_PAYLOAD'
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import ValidationError

from tracejudge.mlflow_io.store import import_mlflow, set_worker_environment
from tracejudge.controls.deferred import defer
from tracejudge.tasks.evaluate import INVALID_PAYLOAD, EvaluationDeferred, evaluate_request, verdict_json
from tracejudge.payload import EvaluationRequest, describe_payload_error, payload_trace_id
from tracejudge.tasks.outage import schedule_after_outage
from tracejudge.tasks.retry import MLFLOW_UNAVAILABLE, Retry, RetryPolicy
from tracejudge.tasks.rollup_step import count_ended
from tracejudge.tasks.runtime import get_runtime, import_judge_modules
from tracejudge.verdict import error_verdict

log = logging.getLogger(__name__)

DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class TaskOutcome:
    """One of ``verdict`` (the task's JSON result), ``retry`` (try again later) or ``deferred``."""

    verdict: dict[str, Any] | None = None
    retry: Retry | None = None
    #: put aside until later (the daily budget is spent, ``on_exceed: defer``): no result now
    deferred: bool = False


def run_task(payload: Any, *, attempt: int = 0, task_id: str | None = None, policy: RetryPolicy | None = None) -> TaskOutcome:
    """Evaluate one task payload; ``attempt`` is the number of retries so far (0 on first delivery).

    ``policy``: the retry policy (default :data:`DEFAULT_POLICY`, looked up at each call). A payload without an
    ``evaluation_id`` (a message not sent by ``enqueue``) is the evaluation ``task_id``: every delivery of the
    message is then the same evaluation (one entry in the pipeline's counts, one id in the record).
    """
    policy = policy or DEFAULT_POLICY
    runtime = get_runtime()
    payload = with_evaluation_id(payload, task_id)
    try:
        request = EvaluationRequest.model_validate(payload)
    except ValidationError as exc:
        message = describe_payload_error(exc)
        log.error("refused task %s: %s", task_id, message)
        verdict = error_verdict(payload_trace_id(payload), INVALID_PAYLOAD, message, runtime.config, evaluation_id=task_id)
        return TaskOutcome(verdict=verdict_json(count_ended(runtime, verdict)))
    try:
        return TaskOutcome(verdict=verdict_json(evaluate_request(request, runtime)))
    except EvaluationDeferred as exc:  # budget spent, on_exceed: defer: sent again when the day turns
        when = defer(runtime.redis, runtime.state.prefix, exc.request)
        log.warning("%s (until %s UTC)", exc, time.strftime("%Y-%m-%d %H:%M", time.gmtime(when)))
        return TaskOutcome(deferred=True)
    except Exception as exc:

        def give_up(code: str, message: str) -> dict[str, Any]:
            message += judged_again_later(runtime, request) if code == MLFLOW_UNAVAILABLE else ""
            config = request.config or runtime.config
            verdict = error_verdict(request.trace_id, code, message, config, evaluation_id=request.evaluation_id)
            return verdict_json(count_ended(runtime, verdict))

        outcome = retry_or_give_up(exc, policy=policy, attempt=attempt, what=request.trace_id, give_up=give_up)
        if outcome is None:
            raise  # a bug: the task fails with its traceback
        return outcome


def retry_or_give_up(
    exc: BaseException,
    *,
    policy: RetryPolicy,
    attempt: int,
    what: str,
    give_up: Callable[[str, str], dict[str, Any]],
) -> TaskOutcome | None:
    """What a task body answers to a failure (the trace's and the session's alike): a :class:`Retry` while the
    policy allows one, else the verdict ``give_up(code, message)`` makes; None for a failure the policy does not
    retry (a bug: the caller re-raises it). ``what`` names the evaluation in the log (``tr-1``, ``session s-1``).

    >>> from tracejudge.tasks.state import EvaluationBusy
    >>> busy = EvaluationBusy("held")
    >>> retry_or_give_up(busy, policy=RetryPolicy(), attempt=0, what="tr-1", give_up=dict).retry.countdown
    1.0
    >>> retry_or_give_up(busy, policy=RetryPolicy(max_retries=0), attempt=0, what="tr-1", give_up=lambda c, m: {"code": c}).verdict
    {'code': 'EVALUATION_BUSY'}
    >>> retry_or_give_up(ValueError("a bug"), policy=RetryPolicy(), attempt=0, what="tr-1", give_up=dict) is None
    True
    """
    code = policy.code_of(exc)
    if code is None:
        return None
    retry = policy.decide(exc, attempt=attempt)
    if retry is not None:
        log.warning("%s for %s (retry %d in %g s): %s", retry.reason, what, attempt + 1, retry.countdown, exc)
        return TaskOutcome(retry=retry)
    log.error("giving up on %s after %d retries: %s", what, attempt, exc)
    return TaskOutcome(verdict=give_up(code, str(exc)))


def judged_again_later(runtime: Any, request: EvaluationRequest) -> str:
    """Put an evaluation MLflow stayed down for off to a later retry (``tasks/outage.py``); what the verdict adds."""
    state = runtime.state
    redis = getattr(state, "redis", None)
    if redis is None:
        return "; not retried later (no Redis): run tracejudge backfill once MLflow is back"
    try:
        delay = schedule_after_outage(redis, state.prefix, request)
    except Exception as exc:  # Redis down too: the trace has no record, backfill finds it
        log.warning("could not schedule a later evaluation of %s: %s", request.trace_id, exc)
        return "; could not schedule a later retry: run tracejudge backfill once MLflow is back"
    if delay is None:
        log.warning("%s: the automatic retries after MLflow outages are used up (tracejudge backfill finds it)", request.trace_id)
        return "; the automatic retries after MLflow outages are used up: run tracejudge backfill once MLflow is back"
    log.info("%s: judged again in %g s, once MLflow is back (a deferred evaluation)", request.trace_id, delay)
    return f"; judged again in {delay:g} s (a deferred evaluation, released by tracejudge beat)"


def with_evaluation_id(payload: Any, task_id: str | None) -> Any:
    """``payload`` with ``task_id`` as its ``evaluation_id`` when it names none (else unchanged): the default would be
    a fresh id per delivery, so a redelivered message would count as another evaluation.

    >>> with_evaluation_id({"trace_id": "tr-1"}, "task-7")
    {'trace_id': 'tr-1', 'evaluation_id': 'task-7'}
    >>> with_evaluation_id({"trace_id": "tr-1", "evaluation_id": "e-1"}, "task-7")["evaluation_id"]
    'e-1'
    """
    if isinstance(payload, dict) and "evaluation_id" not in payload and task_id and len(task_id) <= 128:
        return {**payload, "evaluation_id": task_id}
    return payload


def prepare_worker_process() -> None:
    """Once per worker: MLflow's worker defaults, the judge modules, and MLflow imported (~2 s) before the first task."""
    set_worker_environment()
    import_mlflow()
    import_judge_modules()


def warm_runtime() -> None:
    """Build the process's runtime (event loop, LLM client, Redis, MLflow client) before its first task,
    and say once what it runs with (so a user can see that a setting took effect)."""
    log.info("%s", describe_runtime(get_runtime()))


def describe_runtime(runtime: Any) -> str:
    """One line: the config file, the tracking store, the write concurrency, what is written, the LLM (URLs redacted).

    >>> from types import SimpleNamespace as NS
    >>> from tracejudge.config import Settings, load_config
    >>> rt = NS(settings=Settings.from_env({}), config=load_config({"observability": {"mlflow": {"artifact_level": "minimal"}}}),
    ...         store=NS(write_concurrency=2))
    >>> print(describe_runtime(rt))  # doctest: +ELLIPSIS
    tracejudge runtime: config defaults (no TRACEJUDGE_CONFIG); tracking store default ...; write concurrency 2; report and run metrics: not written (artifact settings); LLM ... model gpt-4o-mini
    """
    from tracejudge.config import redact_url

    settings, config = runtime.settings, runtime.config
    written = "written" if config.write_report else "not written (artifact settings)"
    return (
        f"tracejudge runtime: config {settings.config_path or 'defaults (no TRACEJUDGE_CONFIG)'}; "
        f"tracking store {redact_url(settings.mlflow_tracking_uri) if settings.mlflow_tracking_uri else 'default (MLFLOW_TRACKING_URI unset)'}; "
        f"write concurrency {runtime.store.write_concurrency}; report and run metrics: {written}; "
        f"LLM {redact_url(settings.llm_endpoint)} model {settings.default_model}"
    )
