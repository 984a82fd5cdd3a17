"""Human review routing: judged traces worth a person's look go to an MLflow review queue (``judges.review``).

After the write-back a worker asks :func:`review_reason` whether the verdict matches ``judges.review.when``
(a status, a score near its threshold, replies that disagree); a matching trace is kept by a deterministic draw
(``rate``, from the trace id, so every worker agrees) and a daily cap shared through Redis (``daily_max``), then
added to the review queue, made once per experiment with one numeric label schema per judge (0..1, named as
the judge, so reviewers' answers are HUMAN feedback under the judge's name, which ``tracejudge agreement``
pairs with ours). The queue is MLflow's record; Redis holds only the day's count.

Where the tracking store has no review queues (older servers), :class:`ReviewRouter` says so once and does
nothing more. A routing failure never fails the evaluation.

>>> from tracejudge.config.review import ReviewConfig
>>> from tracejudge.judges.model import JudgeResult
>>> from tracejudge.verdict import QualityVerdict
>>> cfg = ReviewConfig(queue="q", when={"status": [], "near_threshold": 0.05})
>>> v = QualityVerdict(trace_id="tr-1", status="passed", threshold=0.8, targets=[{"target": "workflow",
...     "results": [JudgeResult(name="relevance", score=0.82, threshold=0.8, passed=True)]}])
>>> review_reason(v, cfg)
'relevance scored 0.82, within 0.05 of its threshold 0.8'
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tracejudge.config.review import ReviewConfig
from tracejudge.controls.sampling import sample_point

__all__ = ["ReviewRouter", "review_reason", "route_for_review", "take_daily_slot"]

log = logging.getLogger(__name__)

_DAY_SECONDS = 86_400
_SALT = "review:"


def review_reason(verdict: Any, review: ReviewConfig) -> str | None:
    """Why this verdict should go to people (the first rule of ``when`` it matches), or None."""
    when = review.when
    if verdict.status in when.status:
        return f"verdict {verdict.status}"
    for result in verdict.results():
        if result.score is None:
            continue
        if when.near_threshold is not None and abs(result.score - result.threshold) <= when.near_threshold:
            return f"{result.name} scored {result.score:g}, within {when.near_threshold:g} of its threshold {result.threshold:g}"
        if when.score_stdev_above is not None and (result.score_stdev or 0.0) > when.score_stdev_above:
            return f"{result.name}'s replies spread {result.score_stdev:.2f} (over {when.score_stdev_above:g})"
    return None


def take_daily_slot(redis: Any, key_prefix: str, daily_max: int, *, now: float | None = None) -> bool:
    """One of today's ``daily_max`` review slots (UTC day, all workers), or False when they are taken."""
    if daily_max <= 0:
        return False
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    key = f"{key_prefix}tracejudge:review:{day}"
    pipe = redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, 2 * _DAY_SECONDS)
    taken, _ = pipe.execute()
    if int(taken) > daily_max:
        redis.decr(key)
        return False
    return True


class ReviewRouter:
    """Adds traces to the experiment's review queue (made once per process and experiment)."""

    def __init__(self) -> None:
        self._queues: dict[tuple[str, str, tuple[str, ...]], str] = {}
        self._lock = threading.Lock()
        self.unavailable: str | None = None

    def route(self, *, trace_id: str, experiment_id: str | None, verdict: Any, review: ReviewConfig, redis: Any,
              key_prefix: str) -> str | None:
        """Send the trace to review when it matches; returns the reason it was sent, else None."""
        if not review.queue or experiment_id is None or self.unavailable is not None:
            return None
        reason = review_reason(verdict, review)
        if reason is None or sample_point(trace_id, _SALT) >= review.rate:
            return None
        if not take_daily_slot(redis, key_prefix, review.daily_max):
            log.info("not sending %s to review (%s): today's %d review slots are taken", trace_id, reason, review.daily_max)
            return None
        judges = tuple(sorted({r.name for r in verdict.results()}))
        try:
            queue_id = self._queue(experiment_id, review, judges)
            from mlflow.genai.review_queues import add_items_to_review_queue

            add_items_to_review_queue(queue_id, item_ids=[trace_id])
        except (AttributeError, ImportError, NotImplementedError) as exc:
            self._give_up(exc)
            return None
        except Exception as exc:  # noqa: BLE001 - routing never fails an evaluation
            if _not_supported(exc):
                self._give_up(exc)
            else:
                log.warning("could not send %s to review queue %r: %s", trace_id, review.queue, exc)
            return None
        log.info("sent %s to review queue %r: %s", trace_id, review.queue, reason)
        return reason

    def _queue(self, experiment_id: str, review: ReviewConfig, judges: tuple[str, ...]) -> str:
        key = (experiment_id, review.queue or "", judges)
        with self._lock:
            if key in self._queues:
                return self._queues[key]
            from mlflow.genai import review_queues

            schema_ids = [_schema(experiment_id, name).schema_id for name in judges]
            try:
                queue = review_queues.get_review_queue(name=review.queue, experiment_id=experiment_id)
            except Exception as exc:  # noqa: BLE001 - not there yet: make it
                if _not_supported(exc):
                    raise
                queue = review_queues.create_review_queue(
                    review.queue, queue_type="custom", users=review.users or None, schema_ids=schema_ids,
                    experiment_id=experiment_id,
                )
            self._queues[key] = queue.queue_id
            return queue.queue_id

    def _give_up(self, exc: BaseException) -> None:
        self.unavailable = str(exc)
        log.warning("review routing is off: this MLflow tracking store has no review queues (%s); judges.review "
                    "is ignored from now on in this process", exc)


def _schema(experiment_id: str, judge: str) -> Any:
    """The numeric 0..1 feedback schema named as the judge (made once per experiment)."""
    from mlflow.genai import label_schemas
    from mlflow.genai.label_schemas import InputNumeric

    try:
        return label_schemas.get_label_schema(judge, experiment_id=experiment_id)
    except Exception as exc:  # noqa: BLE001 - not there yet
        if _not_supported(exc):
            raise
        return label_schemas.create_label_schema(
            judge, type="feedback", input=InputNumeric(min_value=0.0, max_value=1.0),
            instruction=f"Score the output for {judge}, from 0 (worst) to 1 (best), as the judge's rubric asks.",
            enable_comment=True, experiment_id=experiment_id,
        )


def _not_supported(exc: BaseException) -> bool:
    code = str(getattr(exc, "error_code", ""))
    return code in ("ENDPOINT_NOT_FOUND", "NOT_IMPLEMENTED", "FEATURE_DISABLED") or "not supported" in str(exc).lower()


_router = ReviewRouter()


def route_for_review(*, trace_id: str, experiment_id: str | None, verdict: Any, config: Any, redis: Any, key_prefix: str) -> str | None:
    """The worker's step after the write-back: send the trace to ``judges.review.queue`` when it matches."""
    review = config.judges.review
    if not review.queue or redis is None:
        return None
    try:
        return _router.route(trace_id=trace_id, experiment_id=experiment_id, verdict=verdict, review=review,
                             redis=redis, key_prefix=key_prefix)
    except Exception as exc:  # noqa: BLE001 - e.g. Redis down for the daily count: never fails the evaluation
        log.warning("review routing of %s skipped: %s", trace_id, exc)
        return None
