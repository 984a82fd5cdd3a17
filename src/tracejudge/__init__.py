"""tracejudge: LLM judges for finished MLflow traces, in the background.

A workflow finishes, its trace id goes on a Redis queue, Celery workers run
the configured judges, and scores, rationales and pass/fail land back on the
MLflow trace; a caller can wait on the verdict as a quality gate.

>>> import tracejudge
>>> handle = tracejudge.enqueue(trace_id, gate=True)  # doctest: +SKIP
>>> verdict = handle.verdict(timeout=60)              # doctest: +SKIP
"""

from tracejudge.config import ConfigError, Settings, TraceJudgeConfig, load_config
from tracejudge.enqueue import (
    CompletedHandle,
    DisabledHandle,
    EnqueueError,
    EvaluationFailed,
    EvaluationHandle,
    EvaluationTimeout,
    SkippedHandle,
    enqueue,
    judged,
    last_handle,
)
from tracejudge.judges import (
    CodeJudge,
    Judge,
    JudgeInput,
    JudgeResult,
    code_judge,
    register_judge,
)
from tracejudge.session_enqueue import SessionHandle, enqueue_session
from tracejudge.sessions.verdict import SessionVerdict
from tracejudge.verdict import QualityGateBlocked, QualityVerdict

__version__ = "0.1.0"

_SENDER_NAMES = ("BufferFull", "QueuedHandle", "configure_sender", "get_sender")


_OFFLINE_NAMES = ("as_scorer", "scorers")


def __getattr__(name: str):  # the non-blocking sender and the MLflow scorers, loaded on first use
    if name in _SENDER_NAMES:
        from tracejudge import sender

        return getattr(sender, name)
    if name in _OFFLINE_NAMES:
        from tracejudge.offline import scorers

        return getattr(scorers, name)
    raise AttributeError(f"module 'tracejudge' has no attribute {name!r}")

__all__ = [
    "as_scorer",
    "scorers",
    "BufferFull",
    "QueuedHandle",
    "configure_sender",
    "get_sender",
    "CodeJudge",
    "CompletedHandle",
    "ConfigError",
    "DisabledHandle",
    "EnqueueError",
    "EvaluationFailed",
    "EvaluationHandle",
    "EvaluationTimeout",
    "Judge",
    "JudgeInput",
    "JudgeResult",
    "QualityGateBlocked",
    "QualityVerdict",
    "Settings",
    "TraceJudgeConfig",
    "code_judge",
    "enqueue",
    "enqueue_session",
    "SessionHandle",
    "SessionVerdict",
    "judged",
    "last_handle",
    "load_config",
    "register_judge",
    "SkippedHandle",
]
