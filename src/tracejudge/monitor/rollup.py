"""Counters of judged traces in 5-minute buckets: built in memory from MLflow, or kept in Redis by workers.

One function turns a trace's record (its verdict tags and our feedbacks, see :func:`tracejudge.monitor.record.trace_record`)
into its *contribution* (:func:`contribution`); a :class:`Rollup` is the sum of its traces' contributions. The MLflow
source sums them in memory (:meth:`Rollup.add`); Redis keeps the same sum incrementally
(:mod:`tracejudge.monitor.rollup_store`): each trace's last contribution is kept beside the buckets, and recording a
trace again replaces it (subtract the old, add the new, in one script), so a re-judged trace counts once.

Per bucket (bucket start, ms) a flat mapping of counters:

* ``traces``, ``status|passed``/``failed``/``error`` (the verdict; the gate's pass rate), ``band|<band>``,
  ``cost`` (USD, where the assessment metadata carries ``cost_usd``), ``err|<code>`` (judge and evaluation errors);
* automatic retries (issue 17): ``retry|open|<trace>`` (the trace has non-final results and fewer failed evaluations
  than the cap, ``mlflow_io.writer.MAX_FAILED_EVALUATIONS``: a retry is due), ``retry|gaveup|<trace>`` (the cap is
  reached) and ``retry|code|<code>`` (per non-final error code of a trace given up on); by trace, so the report can
  ask the deferred set which of them wait for a retry;
* per (judge, node): ``j|<judge>|<node>|n`` (scored), ``|sum``, ``|sq`` (sum of squares), ``|below``
  (below threshold), ``|e`` (errors), ``|v<score>`` / ``|f<score>`` (how many passed / failed with exactly that
  score, to 0.001: the exact percentiles, minimum, maximum and the histogram split at the threshold, for both
  sources; counts, so they can be taken back);
* per tool (the counts in the metadata of the trace's feedbacks, :mod:`tracejudge.mlflow_io.tool_record`: at most 20 names per trace,
  the rest as ``(other)``; ids in names folded, ``tool_record.fold_name``, by one rule for both sources):
  ``tool|<name>|n`` (calls), ``|x`` (failed), ``|r`` (retries), ``|us`` (total duration, integer microseconds,
  so both sources sum it exactly), ``|b<i>`` (calls in latency bin ``i``); and ``tooltraces`` (traces that made tool calls).

Beside the counters, per bucket: every trace's overall score (the lowest and highest traces) and up to 20 failing
results (trace, judge, node, score, rationale or error) for themes and alert examples.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from tracejudge.mlflow_io.writer import FINAL_ERRORS, MAX_FAILED_EVALUATIONS
from tracejudge.mlflow_io.tool_record import ToolCounts, fold_names

BUCKET_MS = 300_000
HIST_BINS = 10
KEEP_EXTREMES = 10
KEEP_FAILURES = 20
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
    #: evaluations that wrote a non-final feedback of ours (valid or superseded): automatic retries' count
    failed_evaluations: int = 0
    #: its tool calls per tool (what its feedbacks' metadata says); empty when it made none
    tools: dict[str, ToolCounts] = field(default_factory=dict)


@dataclass
class Contribution:
    """What one trace adds to the rollups: its bucket and series, counters, thresholds, score and failing examples."""

    trace_id: str
    bucket: int
    series: str
    counters: dict[str, float]
    thresholds: dict[tuple[str, str], float]
    score: float | None
    failures: list[dict[str, Any]]


def contribution(trace: TraceRecord) -> Contribution:
    """A trace's contribution: the one function both sources sum (in memory, or in Redis by replacement)."""
    return Contribution(
        trace_id=trace.trace_id,
        bucket=bucket_of(trace.timestamp_ms),
        series=series_name(trace.workflow, trace.environment),
        counters=dict(trace_fields(trace)),
        thresholds={(r.judge, r.node): r.threshold for r in trace.results if r.threshold is not None},
        score=trace.score,
        failures=failure_examples(trace),
    )


@dataclass
class Rollup:
    """Counters per bucket, the extremes and failing examples; merge-able."""

    counters: dict[int, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    lowest: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    highest: dict[int, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, trace: TraceRecord) -> None:
        """Count one trace: add its :func:`contribution` (what Redis holds for it, see ``rollup_store``)."""
        self.add_contribution(contribution(trace))

    def add_contribution(self, c: Contribution) -> None:
        target = self.counters[c.bucket]
        for name, value in c.counters.items():
            target[name] += value
        self.thresholds.update(c.thresholds)
        if c.score is not None:
            self.lowest[c.bucket].append((c.score, c.trace_id))
            self.highest[c.bucket].append((c.score, c.trace_id))
        self.failures[c.bucket].extend(c.failures[:KEEP_FAILURES])

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
    out.update(retry_fields(trace))
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
        out[base + value_field(r.score, passed=r.passed)] += 1
        if not r.passed:
            out[base + "below"] += 1
    if trace.tools:
        out["tooltraces"] += 1
    for name, c in fold_names(trace.tools).items():  # ids in names folded here too: records written before folding
        base = f"tool|{name}|"
        for part, value in (("n", c.calls), ("x", c.failed), ("r", c.retries), ("us", c.duration_us)):
            if value:
                out[base + part] += value
        for b, n in c.bins.items():
            out[f"{base}b{b}"] += n
    return out


def retry_fields(trace: TraceRecord) -> dict[str, float]:
    """Whether the trace's valid results include non-final ones, and whether its automatic retries are used up.

    >>> t = TraceRecord("tr-1", 0, "wf", "production", "error", None, None,
    ...                 [ResultRecord("coherence", "workflow", None, 0.5, False, error_code="TIMEOUT")], failed_evaluations=4)
    >>> retry_fields(t)
    {'retry|gaveup|tr-1': 1, 'retry|code|TIMEOUT': 1}
    """
    codes = sorted({r.error_code for r in trace.results if r.error_code and r.error_code not in FINAL_ERRORS})
    if not codes:
        return {}
    if trace.failed_evaluations < MAX_FAILED_EVALUATIONS:
        return {f"retry|open|{trace.trace_id}": 1}
    return {f"retry|gaveup|{trace.trace_id}": 1, **{f"retry|code|{code}": 1 for code in codes}}


def value_field(score: float, *, passed: bool = True) -> str:
    """The counter of one exact score (to 0.001): ``v`` when it passed, ``f`` when it failed its threshold.

    >>> value_field(0.85), value_field(1.0), value_field(0.72, passed=False)
    ('v0.850', 'v1.000', 'f0.720')
    """
    return f"{'v' if passed else 'f'}{score:.3f}"


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


def rollup_from_traces(traces: Iterable[TraceRecord]) -> Rollup:
    """Count traces in memory (the MLflow source)."""
    rollup = Rollup()
    for trace in traces:
        rollup.add(trace)
    return rollup
