"""Is the judging keeping up? The pipeline's state and the conditions that say it is not, in one place.

``tracejudge status`` and the pipeline rule kinds of ``quality_alerts`` (``pipeline_lag``, ``backlog``,
``no_verdicts``, ``judge_error_rate``) both read a :class:`PipelineState` and ask :func:`pipeline_problems`
(status) or :func:`evaluate_pipeline_rule` (alerts); the Prometheus rules in ``deploy/prometheus/alerts.yml``
say the same over the metrics.

What workers record here, per verdict a worker returns (:func:`record_verdict`; after a write-back in the
pipeline the monitor's rollups already send, else in one round trip of its own: ``tasks/rollup_step.py``): per
minute *of the verdict* (``<prefix>tracejudge:pipeline:<minute>``), a hash ``evaluation id -> {status, judge
results, judge error codes, the verdict's own error code}`` and a sorted set ``evaluation id -> trace lag``
(the trace's end to its verdict on the trace; only verdicts written back have one), kept :data:`TTL_SECONDS`;
and the time of the last verdict. Every verdict counts, whichever path ended it: written back, or ended
before (``TRACE_NOT_FOUND``, ``INVALID_PAYLOAD``, ``MLFLOW_UNAVAILABLE`` given up, skipped...), as
``tracejudge_evaluations_total`` counts it. Keyed by evaluation (the task id), so a redelivered message of one
evaluation replaces its own entry while two evaluations of one trace count twice; small: the longest window
read is :data:`MAX_WINDOW_MINUTES`.

>>> import fakeredis
>>> r = fakeredis.FakeRedis()
>>> p = r.pipeline()
>>> record_verdict(p, trace_id="tr-1", status="passed", results=3, errors={}, lag_seconds=4.0, now=600.0)
>>> record_verdict(p, trace_id="tr-2", status="error", results=3, errors={"JUDGE_TIMEOUT": 1}, lag_seconds=9.0, now=610.0)
>>> record_verdict(p, trace_id="tr-3", status="error", results=0, errors={}, code="TRACE_NOT_FOUND", lag_seconds=None, now=620.0)
>>> _ = p.execute()
>>> w = read_window(r, minutes=15, now=700.0)
>>> w.verdicts, w.verdict_errors, w.judge_errors, w.judge_results, w.lag_p95_seconds
({'error': 2, 'passed': 1}, {'TRACE_NOT_FOUND': 1}, {'JUDGE_TIMEOUT': 1}, 6, 9.0)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "MAX_WINDOW_MINUTES", "PickupState", "PipelineBounds", "PipelineState", "Problem", "QueueState", "WindowCounts",
    "WorkerInfo", "evaluate_pipeline_rule", "pipeline_problems", "read_state", "read_window", "record_verdict", "track_held",
]

KEY = "tracejudge:pipeline:"
BUCKET_SECONDS = 60
#: The longest window a rule or ``tracejudge status`` reads; entries live a little longer.
MAX_WINDOW_MINUTES = 180
TTL_SECONDS = (MAX_WINDOW_MINUTES + 10) * 60
#: kombu's Redis transport: the hash of messages delivered to a worker and not acknowledged yet.
UNACKED_KEY = "unacked"


# ---------------------------------------------------------------------------------------------- recording


def record_verdict(
    pipe: Any,
    *,
    trace_id: str,
    status: str,
    results: int,
    errors: dict[str, int],
    lag_seconds: float | None,
    code: str | None = None,
    evaluation_id: str | None = None,
    now: float | None = None,
    prefix: str = "",
) -> None:
    """Queue the writes that count one verdict on ``pipe`` (a redis pipeline the caller executes).

    ``errors``: its judge results' error codes; ``code``: the verdict's own (an evaluation that could not run);
    the entry is keyed by ``evaluation_id`` (the trace id when there is none)."""
    now = time.time() if now is None else now
    base = f"{prefix}{KEY}{int(now // BUCKET_SECONDS * BUCKET_SECONDS)}"
    entry: dict[str, Any] = {"s": status, "n": int(results), "e": errors}
    if code:
        entry["c"] = code
    key = evaluation_id or trace_id
    pipe.hset(f"{base}:v", key, json.dumps(entry, separators=(",", ":")))
    pipe.expire(f"{base}:v", TTL_SECONDS)
    if lag_seconds is not None and math.isfinite(lag_seconds):
        pipe.zadd(f"{base}:lag", {key: max(0.0, float(lag_seconds))})
        pipe.expire(f"{base}:lag", TTL_SECONDS)
    pipe.set(f"{prefix}{KEY}last", repr(float(now)), ex=TTL_SECONDS * 8)


def record_from_verdict(pipe: Any, verdict: Any, *, lag_seconds: float | None, prefix: str = "") -> None:
    """:func:`record_verdict` for a worker's ``QualityVerdict``: its status as ``tracejudge_evaluations_total``
    labels it (``partial`` for a partial run), its results' error codes and its own."""
    results = list(verdict.results())
    errors: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            errors[r.error.type] = errors.get(r.error.type, 0) + 1
    status = "partial" if getattr(verdict, "partial", False) else str(verdict.status)
    code = verdict.error.type if getattr(verdict, "error", None) is not None else None
    record_verdict(pipe, trace_id=verdict.trace_id, status=status, results=len(results), errors=errors,
                   code=code, evaluation_id=getattr(verdict, "evaluation_id", None), lag_seconds=lag_seconds, prefix=prefix)


# ---------------------------------------------------------------------------------------------- reading


class WindowCounts(BaseModel):
    """The verdicts workers returned in the last ``minutes`` (each evaluation once, its latest verdict)."""

    minutes: int
    verdicts: dict[str, int] = Field(default_factory=dict, description="by status")
    verdict_errors: dict[str, int] = Field(
        default_factory=dict, description="verdicts that are an error of their own (the evaluation could not run), by code"
    )
    judge_results: int = Field(0, description="judge results in those verdicts (each a judge call or a reused result)")
    judge_errors: dict[str, int] = Field(default_factory=dict, description="judge results ending in an error, by code")
    lag_p95_seconds: float | None = Field(None, description="95th percentile of trace lag (trace end to verdict)")
    lag_count: int = 0
    last_verdict_age_seconds: float | None = Field(None, description="since the last verdict any worker wrote")

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())


def read_window(redis: Any, *, minutes: int, now: float | None = None, prefix: str = "") -> WindowCounts:
    """Count the last ``minutes`` of verdicts (one pipelined round trip)."""
    now = time.time() if now is None else now
    minutes = max(1, min(int(minutes), MAX_WINDOW_MINUTES))
    first = int((now - minutes * 60) // BUCKET_SECONDS * BUCKET_SECONDS)
    buckets = range(first, int(now) + 1, BUCKET_SECONDS)
    pipe = redis.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(f"{prefix}{KEY}{bucket}:v")
        pipe.zrange(f"{prefix}{KEY}{bucket}:lag", 0, -1, withscores=True)
    pipe.get(f"{prefix}{KEY}last")
    replies = pipe.execute()
    entries: dict[str, dict[str, Any]] = {}
    lags: dict[str, float] = {}
    start = now - minutes * 60
    for i, bucket in enumerate(buckets):
        if bucket + BUCKET_SECONDS <= start:
            continue
        for key, raw in (replies[2 * i] or {}).items():
            entries[_text(key)] = json.loads(raw)  # later buckets replace earlier ones: the latest verdict
        for key, lag in replies[2 * i + 1] or []:
            lags[_text(key)] = float(lag)
    counts = WindowCounts(minutes=minutes)
    for entry in entries.values():
        counts.verdicts[entry["s"]] = counts.verdicts.get(entry["s"], 0) + 1
        if entry.get("c"):
            counts.verdict_errors[entry["c"]] = counts.verdict_errors.get(entry["c"], 0) + 1
        counts.judge_results += int(entry.get("n", 0))
        for code, n in (entry.get("e") or {}).items():
            counts.judge_errors[code] = counts.judge_errors.get(code, 0) + int(n)
    counts.verdicts = dict(sorted(counts.verdicts.items()))
    counts.verdict_errors = dict(sorted(counts.verdict_errors.items()))
    counts.lag_count = len(lags)
    counts.lag_p95_seconds = percentile(sorted(lags.values()), 0.95)
    last = replies[-1]
    counts.last_verdict_age_seconds = max(0.0, now - float(last)) if last is not None else None
    return counts


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of sorted values (None for none).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.95), percentile([], 0.95)
    (4.0, None)
    """
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def read_held(redis: Any, *, prefix: str = "") -> int:
    """Messages workers have taken and not acknowledged (running, waiting a countdown): kombu's ``unacked`` hash."""
    return int(redis.hlen(f"{prefix}{UNACKED_KEY}"))


def track_held(redis: Any, held: int, *, now: float | None = None, prefix: str = "") -> float | None:
    """Since when (epoch s) workers have held messages without a pause, as far as checks have seen.

    Each check (``status``, the alert check) notes the first time it saw messages held and forgets it
    when it sees none; a coordination key only (losing it delays ``no_verdicts``, never fakes it).
    """
    key = f"{prefix}{KEY}held_since"
    now = time.time() if now is None else now
    if held <= 0:
        redis.delete(key)
        return None
    redis.set(key, repr(float(now)), nx=True, ex=TTL_SECONDS)
    value = redis.get(key)
    return float(value) if value is not None else now


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------- the state


class WorkerInfo(BaseModel):
    """One live worker, as it answered Celery's broadcast."""

    name: str
    processes: int = Field(description="pool processes (1 for the threads and solo pools)")
    concurrency: int | None = Field(None, description="tasks it runs at once")
    active: int = Field(0, description="tasks running now")
    queues: list[str] = Field(default_factory=list)


class QueueState(BaseModel):
    depth: int
    oldest_age_seconds: float | None = None
    consumers: list[str] | None = Field(None, description="workers reading it (None: not asked)")


class PickupState(BaseModel):
    experiment: str
    watermark_ms: int
    lag_seconds: float


class PipelineState(BaseModel):
    """What ``tracejudge status`` shows and the pipeline rules read."""

    now: float
    workers: list[WorkerInfo] | None = Field(None, description="None: not asked (the alert check does not broadcast)")
    queues: dict[str, QueueState] = Field(default_factory=dict)
    held: int | None = Field(None, description="messages workers hold (Redis broker)")
    held_since: float | None = None
    window: WindowCounts
    pickup: list[PickupState] = Field(default_factory=list)


class PipelineBounds(BaseModel):
    """The limits past which ``tracejudge status`` calls the pipeline unhealthy."""

    max_queue_age_seconds: float = 300.0
    max_queue_depth: int | None = None
    max_pickup_lag_seconds: float = 300.0
    no_verdicts_minutes: float = 15.0


class Problem(BaseModel):
    kind: Literal["no_consumer", "backlog", "pickup_lag", "pipeline_lag", "no_verdicts", "judge_error_rate"]
    message: str
    observed: Any = None
    bound: Any = None


def read_state(
    redis: Any,
    *,
    broker: Any,
    queues: Sequence[str],
    minutes: int,
    prefix: str = "",
    now: float | None = None,
    workers: list[WorkerInfo] | None = None,
) -> PipelineState:
    """The pipeline's state from Redis (our counts) and a Redis broker (``broker``; None for RabbitMQ: no
    queue readings): what the pipeline alert rules read, and ``tracejudge status`` with ``workers`` added."""
    from tracejudge.ops.broker import read_queues

    now = time.time() if now is None else now
    readings = read_queues(broker, list(queues), prefix=prefix, now=now) if broker is not None and queues else {}
    held = read_held(broker, prefix=prefix) if broker is not None else None
    held_since = track_held(redis, held, now=now, prefix=prefix) if held is not None else None
    return PipelineState(
        now=now,
        workers=workers,
        queues={
            name: QueueState(
                depth=r.depth,
                oldest_age_seconds=r.oldest_age_seconds,
                consumers=None if workers is None else [w.name for w in workers if name in w.queues],
            )
            for name, r in readings.items()
        },
        held=held,
        held_since=held_since,
        window=read_window(redis, minutes=minutes, now=now, prefix=prefix),
    )


def pipeline_problems(state: PipelineState, bounds: PipelineBounds) -> list[Problem]:
    """What is wrong now: messages no worker reads, an old or deep queue, a lagging pick-up, a stalled pipeline.

    >>> s = PipelineState(now=1000.0, workers=[], queues={"tracejudge.gate": QueueState(depth=2, oldest_age_seconds=5)},
    ...                   window=WindowCounts(minutes=15))
    >>> [p.message for p in pipeline_problems(s, PipelineBounds())]
    ['2 messages wait on tracejudge.gate and no worker reads it']
    """
    out: list[Problem] = []
    for name, queue in state.queues.items():
        if queue.depth > 0 and state.workers is not None and not queue.consumers:
            verb = "waits" if queue.depth == 1 else "wait"
            out.append(Problem(kind="no_consumer", message=f"{_n(queue.depth, 'message')} {verb} on {name} and no worker reads it",
                               observed=queue.depth))
        out += _backlog(name, queue, max_depth=bounds.max_queue_depth, max_age=bounds.max_queue_age_seconds)
    for p in state.pickup:
        if p.lag_seconds > bounds.max_pickup_lag_seconds:
            out.append(Problem(kind="pickup_lag", observed=round(p.lag_seconds, 1), bound=bounds.max_pickup_lag_seconds,
                               message=f"pick-up of experiment {p.experiment} is {p.lag_seconds:.0f} s behind (bound {bounds.max_pickup_lag_seconds:g} s)"))
    stalled = _no_verdicts(state, bounds.no_verdicts_minutes)
    if stalled:
        out.append(stalled)
    return out


def _backlog(name: str, queue: QueueState, *, max_depth: int | None, max_age: float | None) -> list[Problem]:
    out = []
    if max_depth is not None and queue.depth > max_depth:
        out.append(Problem(kind="backlog", observed=queue.depth, bound=max_depth,
                           message=f"{name} holds {_n(queue.depth, 'message')} (bound {max_depth})"))
    age = queue.oldest_age_seconds
    if max_age is not None and age is not None and queue.depth > 0 and age > max_age:
        out.append(Problem(kind="backlog", observed=round(age, 1), bound=max_age,
                           message=f"the oldest message on {name} has waited {age:.0f} s (bound {max_age:g} s)"))
    return out


def _no_verdicts(state: PipelineState, minutes: float) -> Problem | None:
    """No verdict for ``minutes`` while work waits that long: a message queued, or held by workers, for longer."""
    last = state.window.last_verdict_age_seconds
    if last is not None and last <= minutes * 60:
        return None
    limit = minutes * 60
    waiting = [q.oldest_age_seconds for q in state.queues.values() if q.depth > 0 and q.oldest_age_seconds is not None]
    held_for = state.now - state.held_since if state.held_since is not None else None
    if not ((waiting and max(waiting) > limit) or (held_for is not None and held_for > limit)):
        return None
    since = "no verdict recorded yet" if last is None else f"the last verdict was {last / 60:.0f} min ago"
    what = []
    if waiting and max(waiting) > limit:
        what.append(f"a message has waited {max(waiting):.0f} s")
    if held_for is not None and held_for > limit:
        what.append(f"workers have held {_n(state.held or 0, 'message')} for {held_for:.0f} s")
    return Problem(kind="no_verdicts", observed=None if last is None else round(last, 1), bound=limit,
                   message=f"no verdict for {minutes:g} min ({since}) while {' and '.join(what)}")


def evaluate_pipeline_rule(rule: Any, state: PipelineState) -> tuple[bool, Any, str]:
    """One pipeline rule of ``quality_alerts`` (``pipeline_lag``, ``backlog``, ``no_verdicts``,
    ``judge_error_rate``) against the state: (holds, observed, message)."""
    window = state.window
    if rule.kind == "pipeline_lag":
        p95 = window.lag_p95_seconds
        holds = p95 is not None and window.lag_count >= rule.min_count and p95 > rule.seconds
        return holds, p95, (f"p95 trace lag {_s(p95)} over {window.lag_count} traces in {window.minutes} min "
                            f"(alert above {rule.seconds:g} s)")
    if rule.kind == "backlog":
        queues = {n: q for n, q in state.queues.items() if rule.queue in (None, n)}
        found = [p for n, q in queues.items() for p in _backlog(n, q, max_depth=rule.depth, max_age=rule.seconds)]
        observed = {n: {"depth": q.depth, "oldest_age_seconds": q.oldest_age_seconds} for n, q in queues.items()}
        if found:
            return True, observed, "; ".join(p.message for p in found)
        return False, observed, "queues within bounds: " + ", ".join(f"{n} {q.depth}" for n, q in queues.items())
    if rule.kind == "no_verdicts":
        problem = _no_verdicts(state, rule.minutes)
        last = window.last_verdict_age_seconds
        return (problem is not None, None if last is None else round(last, 1),
                problem.message if problem else f"verdicts flowing (last {_s(last)} ago)")
    if rule.kind == "judge_error_rate":
        total = window.judge_results
        shares = {code: n / total for code, n in window.judge_errors.items() if total} if total else {}
        if rule.code:
            shares = {rule.code: shares.get(rule.code, 0.0)}
        over = {c: s for c, s in shares.items() if s > rule.above}
        holds = bool(over) and total >= rule.min_count
        observed = {c: round(s, 4) for c, s in sorted(shares.items())}
        shown = ", ".join(f"{c} {s:.1%}" for c, s in sorted((over or shares).items(), key=lambda kv: -kv[1])) or "no errors"
        return holds, observed, f"judge errors over {total} judge results in {window.minutes} min: {shown} (alert above {rule.above:.1%})"
    raise ValueError(f"not a pipeline rule kind: {rule.kind!r}")


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.1f} s"
