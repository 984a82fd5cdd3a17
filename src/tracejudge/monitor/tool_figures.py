"""Tool usage figures from the rollups' per-tool counters: calls and failure rate per tool over time, totals per tool.

The counters (``tool|<name>|n``, ``|x``, ``|r``, ``|us``, ``|b<i>``, and ``tooltraces``; see
:mod:`tracejudge.monitor.rollup`) come from each trace's tool usage feedback, the same from Redis and MLflow.
What is shown is bounded: the :data:`SHOWN` tools with most calls in the window by name, the rest summed as
``(other)`` (tool names are user strings; a trace keeps at most 20 names, see ``mlflow_io.tool_record``).

>>> from tracejudge.monitor.rollup import Rollup
>>> r = Rollup()
>>> r.counters[0].update({"tooltraces": 2, "tool|search|n": 3, "tool|search|x": 1, "tool|search|us": 30000, "tool|search|b4": 3})
>>> totals, tools = tool_figures(r, start_ms=0, end_ms=300_000, width_ms=3_600_000)
>>> totals.calls, totals.failure_rate, tools[0].tool, tools[0].mean_ms, tools[0].p95_ms
(3, 0.333333, 'search', 10.0, 20.0)
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone

from tracejudge.mlflow_io.tool_record import LATENCY_EDGES_MS, OTHER, ToolCounts
from tracejudge.monitor.models import ToolFigures, ToolPoint, ToolTotals
from tracejudge.monitor.rollup import Rollup

#: Tools shown by name (most calls in the window first); the rest are summed as ``(other)``.
SHOWN = 10
PREFIX = "tool|"


def tool_figures(rollup: Rollup, *, start_ms: int, end_ms: int, width_ms: int) -> tuple[ToolTotals | None, list[ToolFigures]]:
    """The window's tool totals and per-tool figures (None and [] when no judged trace made a tool call)."""
    per: dict[str, ToolCounts] = defaultdict(ToolCounts)
    series: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    traces = 0
    for start in rollup.buckets():
        if not start_ms <= start < end_ms:
            continue
        at = start // width_ms * width_ms
        for name, raw in rollup.counters[start].items():
            value = int(round(raw))
            if name == "tooltraces":
                traces += value
                continue
            if not name.startswith(PREFIX) or not value:
                continue
            tool, _, part = name[len(PREFIX):].rpartition("|")
            c = per[tool]
            if part == "n":
                c.calls += value
                series[tool][at][0] += value
            elif part == "x":
                c.failed += value
                series[tool][at][1] += value
            elif part == "r":
                c.retries += value
            elif part == "us":
                c.duration_us += value
            elif part.startswith("b"):
                c.bins[int(part[1:])] = c.bins.get(int(part[1:]), 0) + value
    per = {k: v for k, v in per.items() if v.calls}
    if not per:
        return None, []
    ranked = sorted((t for t in per if t != OTHER), key=lambda t: (-per[t].calls, t))
    shown, rest = ranked[:SHOWN], [t for t in per if t not in ranked[:SHOWN]]
    rows = [_figures(t, per[t], series[t]) for t in shown]
    if rest:
        other, other_series = ToolCounts(), defaultdict(lambda: [0, 0])
        for t in rest:
            other.add(per[t])
            for at, (n, x) in series[t].items():
                other_series[at][0] += n
                other_series[at][1] += x
        rows.append(_figures(OTHER, other, other_series))
    calls = sum(c.calls for c in per.values())
    failed = sum(c.failed for c in per.values())
    totals = ToolTotals(
        traces=traces, calls=calls, failed=failed, failure_rate=_rate(failed, calls),
        retries=sum(c.retries for c in per.values()), distinct_tools=len(per),
    )
    return totals, rows


def p95_ms(bins: dict[int, int]) -> float | None:
    """The upper edge (ms) of the latency bin holding the 95th percentile (nearest rank); None past the last edge.

    >>> p95_ms({0: 19, 5: 1}), p95_ms({3: 1}), p95_ms({17: 1}), p95_ms({})
    (1.0, 10.0, None, None)
    """
    total = sum(bins.values())
    if total <= 0:
        return None
    rank, seen = math.ceil(0.95 * total), 0
    for b in sorted(bins):
        seen += bins[b]
        if seen >= rank:
            return float(LATENCY_EDGES_MS[b]) if b < len(LATENCY_EDGES_MS) else None
    return None


def _figures(tool: str, c: ToolCounts, series: dict[int, list[int]]) -> ToolFigures:
    timed = sum(c.bins.values())
    return ToolFigures(
        tool=tool, calls=c.calls, failed=c.failed, failure_rate=_rate(c.failed, c.calls), retries=c.retries,
        mean_ms=round(c.duration_us / timed / 1000, 3) if timed else None, p95_ms=p95_ms(c.bins),
        series=[ToolPoint(start=_iso(at), calls=n, failed=x, failure_rate=_rate(x, n)) for at, (n, x) in sorted(series.items()) if n],
    )


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
