"""Counters of judged traces in 5-minute buckets: built in memory from MLflow, or kept in Redis by workers.

Both sources fill the same :class:`Rollup`, so one function (:func:`tracejudge.monitor.summary.summarise`)
turns either into figures. Per bucket (bucket start, ms) a flat mapping of counters:

* ``traces``, ``status|passed``/``failed``/``error`` (the verdict; the gate's pass rate), ``band|<band>``,
  ``cost`` (USD, where the assessment metadata carries ``cost_usd``), ``err|<code>`` (judge and evaluation errors);
* per (judge, node): ``j|<judge>|<node>|n`` (scored), ``|sum``, ``|sq`` (sum of squares), ``|below``
  (below threshold), ``|e`` (errors), ``|h<0-9>`` (a histogram in tenths, for percentiles and the distribution).

Beside the counters, per bucket: the 10 lowest and 10 highest traces by overall score, and up to 20 failing
results (trace, judge, node, score, rationale or error) for themes and alert examples.

In Redis (written by workers in the pipeline they already send, see :func:`record_verdict`) the keys are
``tracejudge:monitor:<experiment>:<workflow>\\x1f<environment>:<bucket>:{c,lo,hi,f}`` with a 35-day TTL, plus the
set of series per experiment and the first bucket recorded (``:since``, so readers know what Redis covers).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

BUCKET_MS = 300_000
HIST_BINS = 10
KEEP_EXTREMES = 10
KEEP_FAILURES = 20
TTL_SECONDS = 35 * 24 * 3600
ROOT = "tracejudge:monitor:"
SEP = "\x1f"
FLOAT_FIELDS = ("|sum", "|sq", "cost")  # summed with HINCRBYFLOAT; the rest are counts (HINCRBY)


def bucket_of(timestamp_ms: int) -> int:
    """The start (ms) of the 5-minute bucket holding ``timestamp_ms``.

    >>> bucket_of(1_000_123)
    900000
    """
    return int(timestamp_ms) // BUCKET_MS * BUCKET_MS


def hist_bin(score: float) -> int:
    """The histogram bin (tenths) of a 0..1 score; 1.0 falls in the last bin.

    >>> hist_bin(0.0), hist_bin(0.79), hist_bin(1.0)
    (0, 7, 9)
    """
    return min(HIST_BINS - 1, max(0, int(math.floor(score * HIST_BINS))))


@dataclass
class ResultRecord:
    """One judge result, as the monitor needs it."""

    judge: str
    node: str
    score: float | None
    threshold: float | None
    passed: bool
    error_code: str | None = None
    rationale: str | None = None
    cost_usd: float | None = None


@dataclass
class TraceRecord:
    """One judged trace: its verdict and results."""

    trace_id: str
    timestamp_ms: int
    workflow: str
    environment: str
    status: str | None
    score: float | None
    band: str | None
    results: list[ResultRecord] = field(default_factory=list)
    error_code: str | None = None


@dataclass
class Rollup:
    """Counters per bucket, the extremes and failing examples; merge-able."""

    counters: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    lowest: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    highest: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, trace: TraceRecord) -> None:
        """Count one trace (the in-memory twin of :func:`record_verdict`)."""
        bucket = bucket_of(trace.timestamp_ms)
        for name, value in trace_fields(trace).items():
            self.counters[bucket][name] += value
        for r in trace.results:
            if r.threshold is not None:
                self.thresholds[(r.judge, r.node)] = r.threshold
        if trace.score is not None:
            self.lowest[bucket].append((trace.score, trace.trace_id))
            self.highest[bucket].append((trace.score, trace.trace_id))
        self.failures[bucket].extend(failure_examples(trace))

    def merge_redis(self, bucket: int, counters: dict[Any, Any], lowest: list[tuple[str, float]],
                    highest: list[tuple[str, float]], failures: list[Any]) -> None:
        target = self.counters[bucket]
        for raw, value in counters.items():
            name = raw.decode() if isinstance(raw, bytes) else raw
            if name.startswith("thr|"):
                _, judge, node = name.split("|", 2)
                self.thresholds[(judge, node)] = float(value)
            else:
                target[name] += float(value)  # float() reads bytes too
        self.lowest[bucket].extend((score, member) for member, score in lowest)
        self.highest[bucket].extend((score, member) for member, score in highest)
        self.failures[bucket].extend(json.loads(f) for f in failures)

    def buckets(self) -> list[int]:
        return sorted(self.counters)


def trace_fields(trace: TraceRecord) -> dict[str, float]:
    """The counter increments for one trace."""
    out: dict[str, float] = defaultdict(float)
    out["traces"] += 1
    if trace.status:
        out[f"status|{trace.status}"] += 1
    if trace.band:
        out[f"band|{trace.band}"] += 1
    if trace.error_code:
        out[f"err|{trace.error_code}"] += 1
    for r in trace.results:
        base = f"j|{r.judge}|{r.node}|"
        if r.cost_usd:
            out["cost"] += r.cost_usd
        if r.error_code:
            out[f"err|{r.error_code}"] += 1
            out[base + "e"] += 1
            continue
        if r.score is None:
            continue
        out[base + "n"] += 1
        out[base + "sum"] += r.score
        out[base + "sq"] += r.score * r.score
        out[base + f"h{hist_bin(r.score)}"] += 1
        if not r.passed:
            out[base + "below"] += 1
    return out


def failure_examples(trace: TraceRecord) -> list[dict[str, Any]]:
    """The failing results of a trace (below threshold or errored), for themes and alert examples."""
    out = []
    for r in trace.results:
        if r.error_code or (r.score is not None and not r.passed):
            out.append(
                {
                    "trace_id": trace.trace_id,
                    "judge": r.judge,
                    "node": r.node,
                    "score": r.score,
                    "error_code": r.error_code,
                    "text": (r.rationale or "")[:400],
                }
            )
    return out


def series_name(workflow: str, environment: str) -> str:
    return f"{workflow}{SEP}{environment}"


def _base(prefix: str, experiment_id: str) -> str:
    return f"{prefix}{ROOT}{experiment_id}:"


#: KEYS[1]: the bucket's counter hash; ARGV[1]: how many (field, integer) pairs follow; then (field, float) pairs.
_ADD_COUNTERS = """
local n = tonumber(ARGV[1])
for i = 2, 2 * n, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 2 * n + 2, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def record_verdict(pipe: Any, trace: TraceRecord, *, experiment_id: str, prefix: str = "") -> None:
    """Queue the Redis writes that count one judged trace on ``pipe`` (a redis pipeline); the caller executes it.

    Every counter in one script call, the thresholds in one ``HSET``, the extremes and failures: one round trip.
    """
    base = _base(prefix, experiment_id)
    bucket = bucket_of(trace.timestamp_ms)
    key = f"{base}{series_name(trace.workflow, trace.environment)}:{bucket}"
    counts: list[Any] = []
    floats: list[Any] = []
    for name, value in trace_fields(trace).items():
        if name.endswith(FLOAT_FIELDS):
            floats += (name, repr(float(value)))
        else:
            counts += (name, int(value))
    # every counter in one command (~30 HINCRBY/HINCRBYFLOAT otherwise: each costs the worker CPU to encode and parse)
    pipe.eval(_ADD_COUNTERS, 1, f"{key}:c", len(counts) // 2, *counts, *floats)
    thresholds = {f"thr|{r.judge}|{r.node}": f"{r.threshold:g}" for r in trace.results if r.threshold is not None}
    if thresholds:
        pipe.hset(f"{key}:c", mapping=thresholds)
    pipe.expire(f"{key}:c", TTL_SECONDS)
    if trace.score is not None:
        pipe.zadd(f"{key}:lo", {trace.trace_id: trace.score})
        pipe.zremrangebyrank(f"{key}:lo", KEEP_EXTREMES, -1)
        pipe.zadd(f"{key}:hi", {trace.trace_id: trace.score})
        pipe.zremrangebyrank(f"{key}:hi", 0, -KEEP_EXTREMES - 1)
        pipe.expire(f"{key}:lo", TTL_SECONDS)
        pipe.expire(f"{key}:hi", TTL_SECONDS)
    examples = failure_examples(trace)
    if examples:
        pipe.lpush(f"{key}:f", *[json.dumps(e) for e in examples])
        pipe.ltrim(f"{key}:f", 0, KEEP_FAILURES - 1)
        pipe.expire(f"{key}:f", TTL_SECONDS)
    pipe.sadd(f"{base}series", series_name(trace.workflow, trace.environment))
    pipe.set(f"{base}since", bucket, nx=True)


def covered_since(redis: Any, experiment_id: str, *, prefix: str = "") -> int | None:
    """The first bucket (ms) workers recorded for an experiment, or None."""
    value = redis.get(f"{_base(prefix, experiment_id)}since")
    return int(value) if value is not None else None


def load_rollup(
    redis: Any,
    experiment_id: str,
    start_ms: int,
    end_ms: int,
    *,
    workflow: str | None = None,
    environment: str | None = None,
    prefix: str = "",
) -> Rollup:
    """Read the buckets of ``[start_ms, end_ms)`` for the matching series (one pipelined round trip per 2,000 keys)."""
    base = _base(prefix, experiment_id)
    series = []
    for raw in redis.smembers(f"{base}series"):
        name = raw.decode() if isinstance(raw, bytes) else raw
        wf, _, env = name.partition(SEP)
        if (workflow is None or wf == workflow) and (environment is None or env == environment):
            series.append(name)
    rollup = Rollup()
    buckets = range(bucket_of(start_ms), end_ms, BUCKET_MS)
    keys = [(bucket, f"{base}{name}:{bucket}") for name in series for bucket in buckets if bucket < end_ms]
    for chunk_start in range(0, len(keys), 500):
        chunk = keys[chunk_start : chunk_start + 500]
        pipe = redis.pipeline(transaction=False)
        for _, key in chunk:
            pipe.hgetall(f"{key}:c")
            pipe.zrange(f"{key}:lo", 0, -1, withscores=True)
            pipe.zrange(f"{key}:hi", 0, -1, withscores=True)
            pipe.lrange(f"{key}:f", 0, -1)
        replies = pipe.execute()
        for i, (bucket, _) in enumerate(chunk):
            counters, lo, hi, fails = replies[4 * i : 4 * i + 4]
            if not counters:
                continue
            rollup.merge_redis(bucket, counters, [(_text(m), s) for m, s in lo], [(_text(m), s) for m, s in hi], fails)
    return rollup


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rollup_from_traces(traces: Iterable[TraceRecord]) -> Rollup:
    """Count traces in memory (the MLflow source)."""
    rollup = Rollup()
    for trace in traces:
        rollup.add(trace)
    return rollup


def record_from_verdict(verdict: Any, *, timestamp_ms: int, environment: str) -> TraceRecord:
    """A :class:`TraceRecord` from a worker's verdict (what it just wrote to MLflow)."""
    results = [
        ResultRecord(
            judge=r.name,
            node=r.target,
            score=r.score if r.error is None else None,
            threshold=r.threshold,
            passed=bool(r.passed) and r.error is None,
            error_code=r.error.type if r.error is not None else None,
            rationale=r.rationale,
            cost_usd=getattr(r, "cost_usd", None),
        )
        for r in verdict.results()
    ]
    return TraceRecord(
        trace_id=verdict.trace_id,
        timestamp_ms=timestamp_ms,
        workflow=verdict.workflow_name or "workflow",
        environment=environment,
        status=verdict.status,
        score=verdict.overall_score,
        band=verdict.band,
        results=results,
    )
