"""Turn a :class:`Rollup` (from MLflow or from Redis) into a :class:`QualitySummary`: the one aggregation."""

from __future__ import annotations

import heapq
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Callable

from tracejudge.monitor.links import quality_url, trace_url, traces_url
from tracejudge.monitor.models import (
    Bucket,
    BucketPoint,
    Failure,
    JudgeStats,
    Links,
    NodeStats,
    QualitySummary,
    RetryFigures,
    Stats,
    Theme,
    Totals,
    TraceRef,
    WorstNode,
)
from tracejudge.mlflow_io.writer import MAX_FAILED_EVALUATIONS
from tracejudge.monitor.rollup import HIST_BINS, Rollup, hist_bin
from tracejudge.monitor.themes import failure_themes
from tracejudge.monitor.tool_figures import tool_figures

BUCKET_SECONDS = {"hour": 3600, "day": 86400}
#: Built-in judges grouped into the design's dimensions (the radar); custom judges join by name when they match.
DIMENSIONS = {
    "relevance": "relevance",
    "coherence": "coherence",
    "completeness": "completeness",
    "harmfulness": "safety",
    "safety": "safety",
    "groundedness": "correctness",
    "answer_correctness": "correctness",
    "technical_accuracy": "correctness",
    "citation_quality": "correctness",
    "correctness": "correctness",
}
EXTREMES = 5
MAX_FAILURES = 50


def iso(ms: int) -> str:
    """ISO 8601 UTC of a millisecond timestamp.

    >>> iso(0)
    '1970-01-01T00:00:00Z'
    """
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of scores given as ``{score: how many}``, linear between ranks (SQL's PERCENTILE_CONT),
    so never outside the lowest and highest score.

    >>> percentile({0.3: 1, 0.5: 1, 0.85: 1, 0.9: 1, 0.95: 1}, 0.5), percentile({0.82: 3}, 0.9)
    (0.85, 0.82)
    >>> percentile({0.3: 1, 0.5: 1}, 0.1)
    0.32
    """
    items = sorted((v, c) for v, c in values.items() if c > 0)
    total = sum(c for _, c in items)
    if total <= 0:
        return None
    rank = q * (total - 1)  # 0-based position among the sorted scores
    below = int(rank)
    frac = rank - below
    seen = 0.0
    lower = upper = None
    for value, count in items:
        if lower is None and seen + count > below:
            lower = value
        if seen + count > below + 1 or (frac == 0 and lower is not None):
            upper = value
            break
        seen += count
    upper = lower if upper is None else upper
    return round(lower + (upper - lower) * frac, 6)  # type: ignore[operator]


class _Acc:
    """Sums for one (judge[, node]) and its per-bucket series."""

    def __init__(self) -> None:
        self.n = self.sum = self.sq = self.below = self.errors = 0.0
        self.values: dict[float, float] = defaultdict(float)  # score (to 0.001) -> how many
        self.failing: dict[float, float] = defaultdict(float)  # the same, of results that failed their threshold
        self.series: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # n, sum, below

    def add(self, bucket: int, part: str, value: float) -> None:
        if part == "n":
            self.n += value
            self.series[bucket][0] += value
        elif part == "sum":
            self.sum += value
            self.series[bucket][1] += value
        elif part == "sq":
            self.sq += value
        elif part == "below":
            self.below += value
            self.series[bucket][2] += value
        elif part == "e":
            self.errors += value
        elif part.startswith("v"):
            self.values[float(part[1:])] += value
        elif part.startswith("f"):
            self.values[float(part[1:])] += value
            self.failing[float(part[1:])] += value

    @property
    def hist(self) -> list[float]:
        """Counts in tenths ([0, 0.1), ..., [0.9, 1.0]), from the exact scores."""
        return _tenths(self.values)

    @property
    def hist_failing(self) -> list[float]:
        """Of those, the results below their threshold (a bin the threshold splits has both)."""
        return _tenths(self.failing)

    def stats(self) -> dict[str, Any]:
        """Count, mean, variance, percentiles, lowest and highest score.

        >>> acc = _Acc()
        >>> for part, value in (("n", 2), ("sum", 1.7), ("sq", 1.445), ("v0.850", 2)):
        ...     acc.add(0, part, value)
        >>> s = acc.stats(); s["p10"], s["p50"], s["p90"], s["variance"], s["max"]
        (0.85, 0.85, 0.85, 0.0, 0.85)
        """
        n = int(self.n)
        mean = self.sum / self.n if self.n else None
        variance = max(0.0, self.sq / self.n - mean * mean) if mean is not None else None
        scored = [v for v, c in self.values.items() if c > 0]
        return dict(
            count=n,
            mean=_r(mean),
            variance=_r(variance),
            p10=percentile(self.values, 0.1),
            p50=percentile(self.values, 0.5),
            p90=percentile(self.values, 0.9),
            min=min(scored) if scored else None,
            max=max(scored) if scored else None,
            below=int(self.below),
            failure_rate=_r(self.below / self.n) if self.n else None,
            errors=int(self.errors),
        )

    def points(self, width_ms: int) -> list[BucketPoint]:
        merged: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for bucket, (n, s, b) in self.series.items():
            m = merged[bucket // width_ms * width_ms]
            m[0] += n
            m[1] += s
            m[2] += b
        return [
            BucketPoint(start=iso(start), count=int(n), mean=_r(s / n) if n else None, failure_rate=_r(b / n) if n else None)
            for start, (n, s, b) in sorted(merged.items())
        ]


def _tenths(values: dict[float, float]) -> list[float]:
    out = [0.0] * HIST_BINS
    for score, count in values.items():
        out[hist_bin(score)] += count
    return out


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summarise(
    rollup: Rollup,
    *,
    experiment_id: str,
    start_ms: int,
    end_ms: int,
    bucket: str = "day",
    source: str,
    links: Links,
    workflow: str | None = None,
    environment: str | None = None,
    scheduled: set[str] | Callable[[set[str]], set[str] | None] | None = None,
) -> QualitySummary:
    """Every figure of the report, dashboard and alerts, from counters.

    Only buckets inside ``[start_ms, end_ms)`` count. ``scheduled``: the traces with an automatic retry waiting in
    Redis's deferred set, or a lookup asked for the traces with a retry due (None: no Redis was asked), for
    :func:`retry_figures`.
    """
    width = BUCKET_SECONDS[bucket] * 1000
    per_judge: dict[str, _Acc] = defaultdict(_Acc)
    per_node: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    buckets: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[str, float] = defaultdict(float)
    for start in rollup.buckets():
        if not start_ms <= start < end_ms:
            continue
        b = buckets[start // width * width]
        for name, value in rollup.counters[start].items():
            totals[name] += value
            b[name] += value
            if name.startswith("j|"):
                _, judge, node, part = name.split("|", 3)
                per_judge[judge].add(start, part, value)
                per_node[(judge, node)].add(start, part, value)
                if part in ("n", "sum", "below"):
                    b[f"all|{part}"] += value

    def rate(num: float, den: float) -> float | None:
        return _r(num / den) if den else None

    all_n = sum(a.n for a in per_judge.values())
    all_sum = sum(a.sum for a in per_judge.values())
    all_below = sum(a.below for a in per_judge.values())
    all_errors = sum(a.errors for a in per_judge.values())
    verdicts = {k.split("|", 1)[1]: int(v) for k, v in totals.items() if k.startswith("status|")}
    n_verdicts = sum(verdicts.values())

    bucket_rows = []
    for start, b in sorted(buckets.items()):
        v_total = sum(v for k, v in b.items() if k.startswith("status|"))
        bucket_rows.append(
            Bucket(
                start=iso(start),
                traces=int(b.get("traces", 0)),
                gate_pass_rate=rate(b.get("status|passed", 0.0), v_total),
                failure_rate=rate(b.get("all|below", 0.0), b.get("all|n", 0.0)),
                mean=rate(b.get("all|sum", 0.0), b.get("all|n", 0.0)),
                errors={k[4:]: int(v) for k, v in sorted(b.items()) if k.startswith("err|")},
                bands={k[5:]: int(v) for k, v in sorted(b.items()) if k.startswith("band|")},
                cost_usd=round(b.get("cost", 0.0), 6),
            )
        )

    judges = [
        JudgeStats(judge=judge, dimension=DIMENSIONS.get(judge), series=acc.points(width), **acc.stats())
        for judge, acc in sorted(per_judge.items())
    ]
    nodes = [
        NodeStats(
            judge=judge,
            node=node,
            threshold=rollup.thresholds.get((judge, node)),
            histogram=[int(h) for h in acc.hist],
            histogram_below=[int(h) for h in acc.hist_failing],
            series=acc.points(width),
            **acc.stats(),
        )
        for (judge, node), acc in sorted(per_node.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    ]
    worst = sorted(
        (
            WorstNode(node=n.node, judge=n.judge, below=n.below, count=n.count, failure_rate=n.failure_rate or 0.0)
            for n in nodes
            if n.below
        ),
        key=lambda w: (-w.failure_rate, -w.below, w.node, w.judge),
    )[:10]
    dim_acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for judge, acc in per_judge.items():
        dim = DIMENSIONS.get(judge)
        if dim and acc.n:
            dim_acc[dim][0] += acc.sum
            dim_acc[dim][1] += acc.n

    in_window = [b for b in rollup.buckets() if start_ms <= b < end_ms]
    lowest = heapq.nsmallest(EXTREMES, _unique(s for b in in_window for s in rollup.lowest.get(b, [])))
    highest = heapq.nlargest(EXTREMES, _unique(s for b in in_window for s in rollup.highest.get(b, [])))
    failures = [f for b in reversed(in_window) for f in rollup.failures.get(b, [])]  # newest first
    recent = [f for b in reversed(in_window) for f in rollup.failures.get(b, [])][:MAX_FAILURES]

    tool_totals, tools = tool_figures(rollup, start_ms=start_ms, end_ms=end_ms, width_ms=width)

    def ref(score: float, trace_id: str) -> TraceRef:
        return TraceRef(trace_id=trace_id, score=round(score, 6), url=trace_url(links.mlflow_ui or "", experiment_id, trace_id))

    return QualitySummary(
        experiment_id=experiment_id,
        workflow=workflow,
        environment=environment,
        source=source,  # type: ignore[arg-type]
        since=iso(start_ms),
        until=iso(end_ms),
        bucket=bucket,  # type: ignore[arg-type]
        totals=Totals(
            traces=int(totals.get("traces", 0)),
            results=int(all_n + all_errors),
            scored=int(all_n),
            below=int(all_below),
            errors=int(all_errors),
            mean=rate(all_sum, all_n),
            failure_rate=rate(all_below, all_n),
            gate_pass_rate=rate(verdicts.get("passed", 0), n_verdicts),
            verdicts=verdicts,
            cost_usd=round(totals.get("cost", 0.0), 6),
        ),
        buckets=bucket_rows,
        judges=judges,
        nodes=nodes,
        error_codes={k[4:]: int(v) for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if k.startswith("err|")},
        bands={k[5:]: int(v) for k, v in sorted(totals.items()) if k.startswith("band|")},
        dimensions={d: round(s / n, 6) for d, (s, n) in sorted(dim_acc.items())},
        top_traces=[ref(s, t) for s, t in highest],
        bottom_traces=[ref(s, t) for s, t in lowest],
        worst_nodes=worst,
        themes=failure_themes(failures),
        failures=[
            Failure(
                trace_id=f["trace_id"], judge=f["judge"], node=f["node"], score=f.get("score"),
                error_code=f.get("error_code"), url=trace_url(links.mlflow_ui or "", experiment_id, f["trace_id"]),
            )
            for f in recent
        ],
        retries=retry_figures(totals, scheduled=scheduled),
        tool_totals=tool_totals,
        tools=tools,
        links=links,
    )


def retry_figures(
    totals: dict[str, float], *, scheduled: set[str] | Callable[[set[str]], set[str] | None] | None
) -> RetryFigures:
    """The window's traces with non-final results, from the rollup's ``retry|...`` counters (see ``monitor.rollup``).

    ``sources`` names the record (MLflow's feedbacks: read from MLflow, or from the Redis rollups that copy it, as the
    summary's ``source`` says) or Redis's coordination.

    >>> f = retry_figures({"retry|open|a": 1, "retry|open|b": 1, "retry|gaveup|c": 1, "retry|code|TIMEOUT": 1},
    ...                   scheduled={"a", "z"})
    >>> f.non_final, f.due, f.waiting, f.not_scheduled, f.gave_up, f.gave_up_codes
    (3, 2, 1, 1, 1, {'TIMEOUT': 1})
    """
    due = {k[len("retry|open|"):] for k, v in totals.items() if k.startswith("retry|open|") and v > 0}
    gave_up = sum(1 for k, v in totals.items() if k.startswith("retry|gaveup|") and v > 0)
    codes = {k[len("retry|code|"):]: int(v) for k, v in sorted(totals.items()) if k.startswith("retry|code|") and v > 0}
    if callable(scheduled):  # asked only for the traces with a retry due
        scheduled = scheduled(due)
    waiting = None if scheduled is None else len(due & scheduled)
    return RetryFigures(
        non_final=len(due) + gave_up,
        due=len(due),
        waiting=waiting,
        not_scheduled=None if waiting is None else len(due) - waiting,
        gave_up=gave_up,
        gave_up_codes=codes,
        attempt_cap=MAX_FAILED_EVALUATIONS,
        sources={
            "non_final": "record: valid results with a transient error",
            "due": "record: failed evaluations < cap",
            "waiting": "coordination: Redis deferred set" if scheduled is not None else "not read: no Redis asked",
            "gave_up": "record: failed evaluations = cap",
        },
    )


def _unique(pairs: Any) -> list[tuple[float, str]]:
    seen: dict[str, float] = {}
    for score, trace_id in pairs:
        seen[trace_id] = score
    return [(s, t) for t, s in seen.items()]


__all__ = ["summarise", "percentile", "iso", "DIMENSIONS", "Stats", "Theme", "quality_url", "traces_url"]
