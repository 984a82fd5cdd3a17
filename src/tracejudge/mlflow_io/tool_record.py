"""A trace's tool usage in its MLflow record: the counts per tool in the metadata of our feedbacks on it.

The monitor counts tool calls per tool (calls, failed, retries, latency) from what MLflow holds, without reading
spans: every feedback an evaluation writes on a trace that made tool calls carries the trace's counts per tool as
compact JSON under ``tracejudge.tools`` (``writer.TOOLS``), and ``search_traces`` returns them with the trace's
assessments. No extra MLflow call: a trace's spans do not change, so every feedback of ours on it says the same;
the newest valid one is read (:func:`read_counts`).

Per trace at most :data:`MAX_TOOLS` tools are kept by name (most calls first, then by name); the rest are summed
under :data:`OTHER`. Names are cut to :data:`MAX_NAME` characters, and the ids in them folded (:func:`fold_name`:
``fetch_order_18734`` counts as ``fetch_order_#``), so names built from ids do not make a counter each. Durations
go into fixed latency bins (:data:`LATENCY_EDGES_MS`, 1-2-5 steps), so a p95 can be read from summed counts.

>>> from tracejudge.judges.trajectory import ToolCall
>>> counts = tool_counts([ToolCall(name="search", duration_ms=12.0), ToolCall(name="search", status="ERROR", duration_ms=3.0)])
>>> encode(counts)
'{"v":1,"tools":{"search":[2,1,0,15000,{"2":1,"4":1}]}}'
>>> decode(encode(counts)) == counts
True
"""

from __future__ import annotations

import bisect
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from tracejudge.judges.trajectory import ToolCall
from tracejudge.mlflow_io.writer import KEY, TOOLS

log = logging.getLogger(__name__)

FORMAT = 1
#: Most tools kept by name per trace; the rest are summed under :data:`OTHER`.
MAX_TOOLS = 20
#: Longest tool name kept (longer ones are cut).
MAX_NAME = 100
OTHER = "(other)"
#: Upper edges (ms, inclusive) of the latency bins; bin ``len(LATENCY_EDGES_MS)`` holds the slower calls.
LATENCY_EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 300000)
#: What :func:`fold_name` writes for an id in a tool name.
ID_MARK = "#"
#: An id in a tool name: a hex run of 8 or more (with its ``-``-joined parts: a UUID), or a run of 4+ digits.
_ID = re.compile(r"[0-9A-Fa-f]{8,}(?:-[0-9A-Fa-f]+)*|[0-9]{4,}")


@dataclass
class ToolCounts:
    """One tool's calls in one trace (or summed over traces): counts, total duration (µs) and latency bins."""

    calls: int = 0
    failed: int = 0
    retries: int = 0
    duration_us: int = 0
    bins: dict[int, int] = field(default_factory=dict)

    def add(self, other: "ToolCounts") -> None:
        self.calls += other.calls
        self.failed += other.failed
        self.retries += other.retries
        self.duration_us += other.duration_us
        for b, n in other.bins.items():
            self.bins[b] = self.bins.get(b, 0) + n


def latency_bin(duration_ms: float) -> int:
    """The latency bin of a duration.

    >>> latency_bin(0.4), latency_bin(1.0), latency_bin(12.5), latency_bin(10**6)
    (0, 0, 4, 17)
    """
    return bisect.bisect_left(LATENCY_EDGES_MS, duration_ms)


def fold_name(name: str) -> str:
    """A tool name with the ids in it replaced by :data:`ID_MARK` (a hex run of 8+ holding a digit, a UUID, a run of
    4+ digits); the same name always folds the same way, and a folded name folds to itself.

    >>> fold_name("fetch_order_18734"), fold_name("get/550e8400-e29b-41d4-a716-446655440000"), fold_name("sha256_v2")
    ('fetch_order_#', 'get/#', 'sha256_v2')
    >>> fold_name("call_deadbeef"), fold_name("call_deadbeef01"), fold_name(fold_name("run_20261205"))
    ('call_deadbeef', 'call_#', 'run_#')
    """
    return _ID.sub(lambda m: ID_MARK if any(c.isdigit() for c in m.group()) else m.group(), name)


def fold_names(per: dict[str, ToolCounts]) -> dict[str, ToolCounts]:
    """Counts per tool with the names folded (:func:`fold_name`); tools that fold to one name are summed.

    >>> sorted((n, c.calls) for n, c in fold_names({"a_1234": ToolCounts(calls=1), "a_5678": ToolCounts(calls=2)}).items())
    [('a_#', 3)]
    """
    out: dict[str, ToolCounts] = {}
    for name, counts in per.items():
        folded = fold_name(name)
        if folded in out:
            out[folded].add(counts)
        else:
            out[folded] = ToolCounts(counts.calls, counts.failed, counts.retries, counts.duration_us, dict(counts.bins))
    return out


def tool_counts(calls: Iterable[ToolCall]) -> dict[str, ToolCounts]:
    """Per tool, a trace's calls counted (names folded, :func:`fold_name`; capped at :data:`MAX_TOOLS` names, the rest
    under :data:`OTHER`)."""
    per: dict[str, ToolCounts] = {}
    for call in calls:
        c = per.setdefault(fold_name(str(call.name)[:MAX_NAME]) or "(unnamed)", ToolCounts())
        c.calls += 1
        c.failed += int(call.failed)
        c.retries += int(call.retry)
        if call.duration_ms is not None:
            c.duration_us += int(round(call.duration_ms * 1000))
            b = latency_bin(call.duration_ms)
            c.bins[b] = c.bins.get(b, 0) + 1
    return cap(per, MAX_TOOLS)


def cap(per: dict[str, ToolCounts], keep: int) -> dict[str, ToolCounts]:
    """The ``keep`` tools with most calls (ties by name) by name, the rest summed under :data:`OTHER`.

    >>> sorted(cap({"a": ToolCounts(calls=3), "b": ToolCounts(calls=1), "c": ToolCounts(calls=2)}, 2))
    ['(other)', 'a', 'c']
    """
    ranked = sorted(per, key=lambda name: (name == OTHER, -per[name].calls, name))
    out = {name: per[name] for name in ranked[:keep] if name != OTHER}
    rest = [name for name in ranked if name not in out]
    if rest:
        other = ToolCounts()
        for name in rest:
            other.add(per[name])
        out[OTHER] = other
    return out


def encode(counts: dict[str, ToolCounts]) -> str:
    """The counts as the feedback's metadata holds them (sorted, compact: the same counts give the same text)."""
    tools = {
        name: [c.calls, c.failed, c.retries, c.duration_us, {str(b): n for b, n in sorted(c.bins.items())}]
        for name, c in sorted(counts.items())
    }
    return json.dumps({"v": FORMAT, "tools": tools}, separators=(",", ":"), ensure_ascii=False)


def decode(text: str | None) -> dict[str, ToolCounts] | None:
    """The counts in a feedback's metadata; None (logged) when they cannot be read."""
    if not text:
        return None
    try:
        data = json.loads(text)
        return {
            str(name): ToolCounts(int(n), int(x), int(r), int(us), {int(b): int(k) for b, k in bins.items()})
            for name, (n, x, r, us, bins) in data["tools"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("unreadable %s metadata (%s): %.120s", TOOLS, exc, text)
        return None


def read_counts(assessments: Iterable[Any]) -> dict[str, ToolCounts] | None:
    """What a trace's record says of its tools: the counts on the newest of our valid feedbacks that carry them
    (None: none does; a trace judged before tool figures were kept, or one without tool calls).

    ``assessments``: the trace's (MLflow entities, or anything with ``metadata``, ``valid``, ``create_time_ms``).
    """
    best, best_rank = None, None
    for i, a in enumerate(assessments):
        metadata = getattr(a, "metadata", None) or {}
        if TOOLS not in metadata or KEY not in metadata or getattr(a, "valid", True) is False:
            continue
        rank = (int(getattr(a, "create_time_ms", None) or 0), i)
        if best_rank is None or rank > best_rank:
            best, best_rank = metadata[TOOLS], rank
    return decode(best)


def trace_text(calls: Iterable[ToolCall]) -> str | None:
    """What an evaluation writes in its feedbacks' metadata for a trace's tool calls (None when it made none)."""
    counts = tool_counts(calls)
    return encode(counts) if counts else None
