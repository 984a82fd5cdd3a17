"""Error codes and exceptions of the judging core.

Every way a judge can fail has a stable code. The code travels into the
judge result, the MLflow ``AssessmentError`` and the verdict, so users can
filter on it (``error.code == "TIMEOUT"``) and tests can assert it.
"""

from __future__ import annotations

# Provider / transport failures.
TIMEOUT = "TIMEOUT"
RATE_LIMITED = "RATE_LIMITED"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
PROVIDER_ERROR = "PROVIDER_ERROR"  # 5xx after all attempts
CONNECTION_ERROR = "CONNECTION_ERROR"
BAD_REQUEST = "BAD_REQUEST"  # 400 / 422
AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"  # 401
PERMISSION_DENIED = "PERMISSION_DENIED"  # 403
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"  # 404

# Reply validation failures.
REPLY_EMPTY = "REPLY_EMPTY"
REPLY_NOT_JSON = "REPLY_NOT_JSON"
REPLY_MISSING_FIELD = "REPLY_MISSING_FIELD"
REPLY_OUT_OF_RANGE = "REPLY_OUT_OF_RANGE"
REPLY_INVALID = "REPLY_INVALID"

# Input failures (nothing was sent to the model).
MISSING_VARIABLE = "MISSING_VARIABLE"
UNKNOWN_JUDGE = "UNKNOWN_JUDGE"

# Code judges and the rest.
JUDGE_EXCEPTION = "JUDGE_EXCEPTION"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
#: the judge blocked a worker's event loop (``ops/watchdog.py``): not run on the loop for an hour (``tasks/quarantine.py``)
LOOP_BLOCKED = "LOOP_BLOCKED"

# Production controls: the daily judge budget was spent, so no call was made (never a pass, never reused).
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"

#: Codes that say the provider itself refuses us: the rest of a batch fails fast.
PROVIDER_WIDE = frozenset({AUTHENTICATION_ERROR, PERMISSION_DENIED, QUOTA_EXCEEDED})


class JudgeError(Exception):
    """A judge could not produce a score. ``code`` is one of the constants above."""

    def __init__(self, code: str, message: str, *, attempts: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.attempts = attempts
        self.tokens: object | None = None  # TokenUsage spent before the failure, when known


class JudgeInputError(JudgeError):
    """The judge's template needs something the judged input does not have."""

    def __init__(self, message: str) -> None:
        super().__init__(MISSING_VARIABLE, message)


class JudgeReplyError(JudgeError):
    """The model answered, but not with a valid ``{score, rationale}`` object."""
