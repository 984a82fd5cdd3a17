"""When an evaluation is worth another try, and how long to wait: the retry policy.

The worker knows nothing of it: :func:`tracejudge.tasks.run_task` asks the
policy about each failure and hands the worker either a verdict or a
:class:`Retry` (wait this long, because of that), which the worker maps onto
Celery's ``self.retry``. Swap the policy to change the schedule (dramatiq's
``Retries`` middleware is the model).

>>> from tracejudge.mlflow_io.reader import MlflowUnavailable
>>> policy = RetryPolicy()
>>> policy.decide(MlflowUnavailable("down"), attempt=3)
Retry(countdown=8.0, reason='MLflow unavailable', code='MLFLOW_UNAVAILABLE')
>>> policy.decide(MlflowUnavailable("down"), attempt=45) is None
True
>>> policy.decide(ValueError("a bug"), attempt=0) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from tracejudge.mlflow_io.reader import MlflowUnavailable
from tracejudge.tasks.loop import LoopStalled
from tracejudge.tasks.state import EvaluationBusy

MLFLOW_UNAVAILABLE = "MLFLOW_UNAVAILABLE"
EVALUATION_BUSY = "EVALUATION_BUSY"
EVALUATION_STALLED = "EVALUATION_STALLED"


@dataclass(frozen=True)
class Retry:
    """Try the evaluation again in ``countdown`` seconds; ``reason`` for the log, ``code`` if we give up."""

    countdown: float
    reason: str
    code: str


#: The failures worth a retry (nothing judged is lost: results wait in Redis), by error code and reason.
RETRYABLE: dict[type[BaseException], tuple[str, str]] = {
    MlflowUnavailable: (MLFLOW_UNAVAILABLE, "MLflow unavailable"),
    EvaluationBusy: (EVALUATION_BUSY, "evaluation lock busy"),
    LoopStalled: (EVALUATION_STALLED, "evaluation stalled on the event loop"),
}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: 1, 2, 4, 8, then every ``cap_seconds``, for ``max_retries`` retries (about ten minutes)."""

    max_retries: int = 45
    cap_seconds: float = 15.0

    def code_of(self, exc: BaseException) -> str | None:
        """The error code a give-up verdict carries, or None if ``exc`` is not retryable at all."""
        for kind, (code, _) in RETRYABLE.items():
            if isinstance(exc, kind):
                return code
        return None

    def decide(self, exc: BaseException, *, attempt: int) -> Retry | None:
        """A :class:`Retry` for ``exc`` on retry number ``attempt`` (0 = first delivery), or None to stop."""
        for kind, (code, reason) in RETRYABLE.items():
            if isinstance(exc, kind):
                if attempt >= self.max_retries:
                    return None
                return Retry(countdown=float(min(2**attempt, self.cap_seconds)), reason=reason, code=code)
        return None
