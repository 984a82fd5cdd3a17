"""Transient failures are judged again: automatic retries with backoff, a bounded number per trace.

A judge result that is not final (a timeout, a provider error, a rate limit, an LLM outage...: every
error but ``mlflow_io.writer.FINAL_ERRORS``) does not make a trace "judged" (``controls.judged.has_plan``).
After a background evaluation that leaves such results, the evaluation is put off (``controls.deferred``,
the same sorted set the budget's ``defer`` uses, released by the beat task ``tracejudge.release_deferred``)
by the next step of :data:`BACKOFF_SECONDS`: 5 minutes, 30 minutes, 2 hours. The retry reuses every final
result on the trace and judges only the rest; its new results supersede the failed ones.

How many times a trace has failed is read from the record, not kept in Redis: the evaluations (distinct
``evaluation_id``) that wrote a non-final feedback of ours on the trace, valid or superseded. After
``1 + len(BACKOFF_SECONDS)`` failed evaluations no more retries are scheduled (counted as
``retries_exhausted``); ``tracejudge backfill`` (without ``--force``) still re-judges such a trace's
non-final results, and ``tracejudge backfill --dry-run`` counts them. Gate requests are not retried in the
background (their caller has its verdict and decides); partial runs (``judges=``) and forced runs neither.
"""

from __future__ import annotations

import uuid
from typing import Any

from tracejudge.controls.deferred import defer
from tracejudge.mlflow_io.writer import MAX_FAILED_EVALUATIONS, failed_evaluations
from tracejudge.payload import EvaluationRequest

#: The wait before each automatic retry: after the 1st, 2nd and 3rd failed evaluation of a trace.
BACKOFF_SECONDS = (5 * 60, 30 * 60, 2 * 60 * 60)
# Evaluations of a trace that may end with transient failures before retries stop (the first + the retries):
# ``MAX_FAILED_EVALUATIONS``, and how many failed (``failed_evaluations``), are read from the record by
# ``mlflow_io.writer`` (the report counts them too); one backoff step per failed evaluation but the last.
assert MAX_FAILED_EVALUATIONS == 1 + len(BACKOFF_SECONDS)

__all__ = ["BACKOFF_SECONDS", "MAX_FAILED_EVALUATIONS", "failed_evaluations", "retry_delay", "schedule_retry"]


def retry_delay(failed: int) -> float | None:
    """The wait before the next retry after ``failed`` failed evaluations, or None when retries are used up.

    >>> [retry_delay(n) for n in (1, 2, 3, 4)]
    [300, 1800, 7200, None]
    """
    if failed < 1 or failed > len(BACKOFF_SECONDS):
        return None
    return BACKOFF_SECONDS[failed - 1]


def schedule_retry(redis: Any, prefix: str, request: EvaluationRequest, *, delay: float, now: float) -> float:
    """Put a new evaluation of ``request``'s trace off by ``delay`` seconds; returns when it is due.

    A new evaluation id (the old one has its result: Celery would skip a redelivered id), no force.
    """
    again = request.model_copy(update={"evaluation_id": uuid.uuid4().hex, "force": False, "enqueued_at": now})
    return defer(redis, prefix, again, until=now + delay)
