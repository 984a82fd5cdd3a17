"""Put one evaluation request on the broker, and the handles that wait for its verdict.

The blocking ``enqueue`` and the background sender both send through
:func:`send_request`, so a message is the same whichever path sent it.
"""

from __future__ import annotations

import logging
from typing import Any

from tracejudge.config import TraceJudgeConfig
from tracejudge.verdict import QualityVerdict, apply_gate

log = logging.getLogger(__name__)

DEFAULT_VERDICT_TIMEOUT = 60.0


class EnqueueError(RuntimeError):
    """The evaluation could not be put on the queue (Redis unreachable...). Nothing was dropped silently."""


class EvaluationTimeout(TimeoutError):
    """No verdict within the timeout; the evaluation may still finish later. ``hint`` says why it may not come
    (no live worker reads its queue), or is None."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message + (f": {hint}" if hint else ""))
        self.hint = hint


class EvaluationFailed(RuntimeError):
    """The evaluation task itself crashed (a bug, not a judge failure); carries the task's error."""


class EvaluationHandle:
    """A queued evaluation. ``status`` is Celery's state; ``verdict()`` waits and applies the gate.

    >>> handle = tracejudge.enqueue(trace_id, gate=True)  # doctest: +SKIP
    >>> handle.verdict(timeout=60).status  # doctest: +SKIP
    'passed'
    """

    #: What the task's result is read as (a conversation's handle reads a ``SessionVerdict``).
    verdict_model: type[QualityVerdict] = QualityVerdict

    def __init__(self, result: Any, *, trace_id: str, config: TraceJudgeConfig, queue: str | None = None) -> None:
        self._result = result
        self.id: str = result.id
        self.trace_id = trace_id
        self.config = config
        #: the queue it was sent to (``tracejudge.gate`` or ``tracejudge.online``)
        self.queue = queue

    def __repr__(self) -> str:
        return f"EvaluationHandle(id={self.id!r}, trace_id={self.trace_id!r})"

    @property
    def status(self) -> str:
        return str(self._result.state)

    def ready(self) -> bool:
        return bool(self._result.ready())

    def verdict(
        self, timeout: float | None = DEFAULT_VERDICT_TIMEOUT, *, raise_on_block: bool = True, check_workers: bool = True
    ) -> QualityVerdict:
        """Wait for the verdict, then apply ``quality_gate.action`` (``block`` raises ``QualityGateBlocked``).

        A timeout raises :class:`EvaluationTimeout`; while the message still waits (``PENDING``) it first asks
        the workers whether any reads its queue and says so when none does (``check_workers=False``: don't ask,
        for a caller that waits on many handles).
        """
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            data = self._result.get(timeout=timeout, propagate=False, interval=0.05)
        except CeleryTimeout:
            state = self.status
            hint = no_reader_hint(self.queue) if check_workers and state == "PENDING" else None
            raise EvaluationTimeout(
                f"no verdict for trace {self.trace_id} (evaluation {self.id}) within {timeout:g} s; state {state}", hint=hint
            ) from None
        if self._result.failed() or not isinstance(data, dict):
            raise EvaluationFailed(f"evaluation {self.id} of trace {self.trace_id} failed: {data!r}")
        return apply_gate(self.verdict_model.model_validate(data), self.config, raise_on_block=raise_on_block)


def no_reader_hint(queue: str | None) -> str | None:
    """Why a verdict may not come: no live worker reads ``queue`` (``worker.consumers.no_consumer_message``, the
    sentence ``tracejudge gate`` prints), or None when one does. Never raises: a failed check is None.

    >>> no_reader_hint(None) is None
    True
    """
    if not queue:
        return None
    try:
        from tracejudge.worker import get_app
        from tracejudge.worker.consumers import no_consumer_message

        return no_consumer_message(get_app(), queue)
    except Exception as exc:  # the check must not hide the timeout it explains
        log.debug("could not ask the workers whether any reads %s: %s", queue, exc)
        return None


class CompletedHandle:
    """A handle whose verdict is already known (``sync`` mode)."""

    def __init__(self, verdict: QualityVerdict, *, config: TraceJudgeConfig) -> None:
        self.id = verdict.evaluation_id or ""
        self.trace_id = verdict.trace_id
        self.config = config
        self._verdict = verdict

    status = "SUCCESS"

    def ready(self) -> bool:
        return True

    def verdict(self, timeout: float | None = None, *, raise_on_block: bool = True, check_workers: bool = True) -> QualityVerdict:
        return apply_gate(self._verdict, self.config, raise_on_block=raise_on_block)


class DisabledHandle:
    """Judging is off (``enable_judges: false`` or mode ``disabled``): nothing was queued."""

    status = "DISABLED"

    def __init__(self, trace_id: str, reason: str) -> None:
        self.id = ""
        self.trace_id = trace_id
        self.reason = reason

    def ready(self) -> bool:
        return True

    def verdict(self, timeout: float | None = None, *, raise_on_block: bool = True, check_workers: bool = True) -> None:
        return None


class SkippedHandle:
    """Sampling left this trace out (``judges.sampling.rate``): nothing was queued, no Redis message.

    ``status`` is ``'skipped'``; ``verdict()`` returns a verdict with status ``skipped`` at once.
    """

    status = "skipped"

    def __init__(self, trace_id: str, reason: str, *, config: TraceJudgeConfig) -> None:
        self.id = ""
        self.trace_id = trace_id
        self.reason = reason
        self.config = config

    def __repr__(self) -> str:
        return f"SkippedHandle(trace_id={self.trace_id!r}, reason={self.reason!r})"

    def ready(self) -> bool:
        return True

    def verdict(self, timeout: float | None = None, *, raise_on_block: bool = True, check_workers: bool = True) -> QualityVerdict:
        from tracejudge.verdict import skipped_verdict

        return skipped_verdict(self.trace_id, self.reason, self.config)


def send_request(
    request: Any, config: TraceJudgeConfig, *, task: str | None = None, handle: type[EvaluationHandle] = EvaluationHandle
) -> EvaluationHandle:
    """Send ``request`` (an ``EvaluationRequest``; with ``task``/``handle``, another task's request) to its queue;
    :class:`EnqueueError` if the broker is unreachable."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from tracejudge.worker import QUEUE_GATE, QUEUE_ONLINE, TASK_EVALUATE, get_app

    app = get_app()
    payload = request.model_dump(mode="json", exclude_none=True)
    label = getattr(request, "trace_id", None) or request.session_id
    try:
        result = app.send_task(
            task or TASK_EVALUATE,
            args=[payload],
            task_id=request.evaluation_id,
            queue=QUEUE_GATE if request.gate else QUEUE_ONLINE,
            # Celery would otherwise saferepr the whole payload into the headers (measured: p50 1034 -> 650 us)
            argsrepr=label,
            kwargsrepr="{}",
        )
    except (OperationalError, RedisError, ConnectionError, OSError, RuntimeError) as exc:
        # RuntimeError: Celery's result consumer gave up reconnecting to Redis.
        raise EnqueueError(
            f"could not enqueue {'trace' if task is None else 'session'} {label}: the broker at {_redacted_broker(app)} is unreachable "
            f"({_reason(exc)})"
        ) from None
    return handle(result, trace_id=label, config=config, queue=QUEUE_GATE if request.gate else QUEUE_ONLINE)


def _reason(exc: BaseException) -> str:
    """The error's text on one line, without Celery's advice for long-running apps ("must be restarted").

    >>> _reason(RuntimeError("\\nRetry limit exceeded while trying to reconnect to the Celery result store\\nbackend. The Celery application must be restarted.\\n"))
    'Retry limit exceeded while trying to reconnect to the Celery result store backend'
    """
    text = " ".join(str(exc).split())
    return text.replace(". The Celery application must be restarted.", "").rstrip(".") or type(exc).__name__


def _redacted_broker(app: Any) -> str:
    from tracejudge.config.settings import redact_url

    return redact_url(str(app.conf.broker_url))
