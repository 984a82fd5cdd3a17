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
from collections.abc import Iterable
from typing import Any

from tracejudge.controls.deferred import defer
from tracejudge.mlflow_io.writer import EVALUATION_ID, FINAL_ERRORS, KEY
from tracejudge.payload import EvaluationRequest

#: The wait before each automatic retry: after the 1st, 2nd and 3rd failed evaluation of a trace.
BACKOFF_SECONDS = (5 * 60, 30 * 60, 2 * 60 * 60)
#: Evaluations of a trace that may end with transient failures before retries stop (the first + the retries).
MAX_FAILED_EVALUATIONS = 1 + len(BACKOFF_SECONDS)


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
