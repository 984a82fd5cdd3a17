"""An evaluation MLflow stayed down for is judged again later, a bounded number of times.

When MLflow is unavailable past the task's own retries (``tasks.retry.RetryPolicy``, about ten minutes), the
verdict is ``MLFLOW_UNAVAILABLE`` and nothing is on the trace: no pick-up finds it again (its "seen" claim holds
and the watermark has moved on), and a trace its caller enqueued is known to no one. So the give-up is put off
through the deferred set (``controls.deferred``, released by the beat's ``tracejudge.release_deferred``) by the
transient retries' backoff (``controls.retries.BACKOFF_SECONDS``: 5 minutes, 30 minutes, 2 hours), as a new
background evaluation (``gate`` off: its caller has had its verdict). Results judged before MLflow went away wait
in Redis (``tracejudge:result:*``, 24 h) and are written without judging again.

The attempts are counted in Redis (``tracejudge:outage:<trace>``, coordination: nothing reached the record to
count), one per evaluation that gave up: a give-up delivered twice (a redelivered message while MLflow is still
down) counts and schedules once. After the last backoff step no more are scheduled, and ``tracejudge backfill`` is
left to find the trace. A lost count (Redis lost) restarts the schedule; the deferred set went with it.

>>> import fakeredis
>>> from tracejudge.payload import EvaluationRequest
>>> r = fakeredis.FakeRedis()
>>> [schedule_after_outage(r, "t:", EvaluationRequest(trace_id="tr-1", gate=True), now=0.0) for _ in range(4)]
[300, 1800, 7200, None]
>>> again = EvaluationRequest(trace_id="tr-2")
>>> [schedule_after_outage(r, "t:", again, now=0.0) for _ in range(2)]   # the same give-up, delivered twice
[300, 300]
>>> r.zcard("t:tracejudge:deferred")   # tr-1's three and tr-2's one
4
"""

from __future__ import annotations

import time
from typing import Any

from tracejudge.controls.retries import retry_delay, schedule_retry
from tracejudge.payload import EvaluationRequest

#: Per trace: the evaluations that gave up because MLflow was down (a Redis hash: evaluation id -> its delay).
OUTAGE_KEY = "tracejudge:outage:"
#: The count lives this long after its last increment: well past the last backoff step.
COUNT_TTL_SECONDS = 2 * 24 * 3600


def schedule_after_outage(redis: Any, prefix: str, request: EvaluationRequest, *, now: float | None = None) -> float | None:
    """Count this give-up and put a new evaluation of the trace off by the next backoff step.

    Returns the delay in seconds, or None when the trace's outage retries are used up.
    """
    key = f"{prefix}{OUTAGE_KEY}{request.trace_id}"
    pipe = redis.pipeline(transaction=True)
    pipe.hsetnx(key, request.evaluation_id, "")
    pipe.hlen(key)
    pipe.hget(key, request.evaluation_id)
    pipe.expire(key, COUNT_TTL_SECONDS)
    first, failed, seen, _ = pipe.execute()
    if not first:  # this give-up was counted (and its retry scheduled) by an earlier delivery
        if not seen:  # that delivery found the retries used up
            return None
        earlier = float(seen.decode() if isinstance(seen, bytes) else seen)
        return int(earlier) if earlier.is_integer() else earlier
    delay = retry_delay(int(failed))
    if delay is None:
        return None  # (its field stays empty: a redelivery of this give-up finds the retries used up too)
    schedule_retry(redis, prefix, request.model_copy(update={"gate": False}), delay=delay,
                   now=time.time() if now is None else now)
    redis.hset(key, request.evaluation_id, str(delay))
    return delay
