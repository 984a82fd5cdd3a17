"""The evaluation of one trace, independent of any queue.

:func:`run_task` is what a worker calls: a payload in, a verdict or a
:class:`Retry` out. ``sync`` mode calls :func:`evaluate_request` directly.
"""

from tracejudge.mlflow_io.store import set_worker_environment
from tracejudge.tasks.entry import TaskOutcome, prepare_worker_process, run_task, warm_runtime
from tracejudge.tasks.evaluate import evaluate_request
from tracejudge.payload import EvaluationRequest
from tracejudge.tasks.retry import Retry, RetryPolicy
from tracejudge.tasks.runtime import get_runtime, reset_runtime

__all__ = [
    "EvaluationRequest",
    "Retry",
    "RetryPolicy",
    "TaskOutcome",
    "evaluate_request",
    "get_runtime",
    "prepare_worker_process",
    "reset_runtime",
    "run_task",
    "set_worker_environment",
    "warm_runtime",
]
