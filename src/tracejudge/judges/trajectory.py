"""What an agent did, as judge data: its tool calls and its steps, and how they are shown to a judge.

``{tool_calls}`` is the ordered list of :class:`ToolCall` (tool and retriever
calls under a target: name, arguments, result or error, status, duration);
``{trajectory}`` the ordered list of :class:`Step` (LLM calls, tools and
sub-nodes under the target, nested by ``depth``). Both are built from the
trace's spans by :mod:`tracejudge.mlflow_io.trajectory`; this module knows no
MLflow, so calibration sets and tests can write them by hand.

They are rendered as one compact JSON object per line, so the judge reads data,
not prose. Each long value (arguments, a result, a step's input or output) is
cut on its own, so every call stays visible however long one result is; the
whole list still obeys the variable's ``max_input_chars`` budget.

>>> calls = [ToolCall(name="search", arguments={"q": "flights"}, result={"n": 2}, duration_ms=12.5)]
>>> print(render_tool_calls(calls, budget=1000)[0])
{"call": 1, "tool": "search", "arguments": {"q": "flights"}, "result": {"n": 2}, "status": "OK", "duration_ms": 12.5}
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: A value cut for the prompt keeps at least this much of its text.
MIN_VALUE_CHARS = 200
#: Most characters one step's input or output summary gets in ``{trajectory}``.
STEP_SUMMARY_CHARS = 600
NO_TOOL_CALLS = "(no tool or retriever calls under this target)"
NO_STEPS = "(no LLM calls, tool calls or sub-nodes under this target)"

StepKind = Literal["llm", "tool", "retriever", "node"]


class ToolCall(BaseModel):
    """One tool (or retriever) call: what was asked, what came back, how it went.

    ``retry`` is True when the call repeats a failed call of the same tool made just before it
    under the same target (the usual shape of a retry loop).
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["tool", "retriever"] = "tool"
    arguments: Any = None
    result: Any = None
    error: str | None = None
    status: Literal["OK", "ERROR", "UNSET"] = "OK"
    duration_ms: float | None = None
    node: str | None = None
    span_id: str | None = None
    retry: bool = False

    @property
    def failed(self) -> bool:
        return self.status == "ERROR" or self.error is not None


class Step(BaseModel):
    """One step of a trajectory: an LLM call, a tool call or a sub-node, with its input and output."""

    model_config = ConfigDict(extra="forbid")

    kind: StepKind
    name: str
    input: Any = None
    output: Any = None
    error: str | None = None
    status: Literal["OK", "ERROR", "UNSET"] = "OK"
    duration_ms: float | None = None
    depth: int = Field(default=0, ge=0)
    span_id: str | None = None


def render_tool_calls(calls: list[ToolCall], *, budget: int) -> tuple[str, int | None]:
    """The calls as JSON lines, and the uncut length when a value had to be cut (else None)."""
    if not calls:
        return NO_TOOL_CALLS, None
    per_value = _per_value(budget, values=2 * len(calls))
    lines: list[str] = []
    full = 0
    for number, call in enumerate(calls, 1):
        row: dict[str, Any] = {"call": number, "tool": call.name}
        if call.kind != "tool":
            row["kind"] = call.kind
        if call.node:
            row["node"] = call.node
        row["arguments"] = call.arguments
        if call.error is not None:
            row["error"] = call.error
        if call.result is not None or call.error is None:
            row["result"] = call.result
        row["status"] = call.status
        if call.duration_ms is not None:
            row["duration_ms"] = round(call.duration_ms, 1)
        if call.retry:
            row["retry"] = True
        line, uncut = _line(row, ("arguments", "result", "error"), per_value)
        lines.append(line)
        full += uncut
    text = "\n".join(lines)
    return text, (full + len(lines) - 1 if full + len(lines) - 1 > len(text) else None)


def render_trajectory(steps: list[Step], *, budget: int) -> tuple[str, int | None]:
    """The steps as indented JSON lines (two spaces per ``depth``), and the uncut length when cut."""
    if not steps:
        return NO_STEPS, None
    per_value = min(STEP_SUMMARY_CHARS, _per_value(budget, values=2 * len(steps)))
    lines: list[str] = []
    full = 0
    for number, step in enumerate(steps, 1):
        row: dict[str, Any] = {"step": number, "kind": step.kind, "name": step.name, "input": step.input}
        if step.error is not None:
            row["error"] = step.error
        else:
            row["output"] = step.output
        row["status"] = step.status
        if step.duration_ms is not None:
            row["duration_ms"] = round(step.duration_ms, 1)
        line, uncut = _line(row, ("input", "output", "error"), per_value)
        indent = "  " * step.depth
        lines.append(indent + line)
        full += len(indent) + uncut
    text = "\n".join(lines)
    return text, (full + len(lines) - 1 if full + len(lines) - 1 > len(text) else None)


def _per_value(budget: int, *, values: int) -> int:
    return max(MIN_VALUE_CHARS, budget // max(1, values))


def _line(row: dict[str, Any], cuttable: tuple[str, ...], per_value: int) -> tuple[str, int]:
    """One JSON line with each long value cut to ``per_value`` characters; and the uncut line's length."""
    uncut = len(_dumps(row))
    for key in cuttable:
        if key not in row or row[key] is None:
            continue
        text = row[key] if isinstance(row[key], str) else _dumps(row[key])
        if len(text) > per_value:
            row[key] = f"{text[:per_value]}[... cut by tracejudge: {len(text) - per_value} of {len(text)} characters omitted ...]"
    return _dumps(row), uncut


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class ToolStats(BaseModel):
    """Counts and latency of some tool calls (design section 6.2's per-tool breakdown)."""

    calls: int = 0
    failed: int = 0
    retries: int = 0
    total_duration_ms: float = 0.0

    @property
    def avg_duration_ms(self) -> float | None:
        return round(self.total_duration_ms / self.calls, 3) if self.calls else None

    @property
    def success_rate(self) -> float | None:
        return round(1 - self.failed / self.calls, 6) if self.calls else None

    def add(self, call: ToolCall) -> None:
        self.calls += 1
        self.failed += int(call.failed)
        self.retries += int(call.retry)
        self.total_duration_ms = round(self.total_duration_ms + (call.duration_ms or 0.0), 3)


class ToolUsage(BaseModel):
    """What a trace's tools did, counted without any LLM call: in total, per tool, and per node.

    A call belongs to the nearest node above it (``workflow`` when none), so nested nodes are not
    counted twice.

    >>> u = tool_usage([ToolCall(name="a", duration_ms=4, node="n"), ToolCall(name="a", status="ERROR", error="x", node="n")])
    >>> u.total.calls, u.total.failed, u.tools["a"].avg_duration_ms, u.nodes["n"].calls
    (2, 1, 2.0, 2)
    """

    total: ToolStats = Field(default_factory=ToolStats)
    tools: dict[str, ToolStats] = Field(default_factory=dict)
    nodes: dict[str, ToolStats] = Field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """Run metrics (design section 6.2 names, plus failures and retries), per tool and per node too."""
        t = self.total
        out: dict[str, float] = {
            "total_tool_calls": float(t.calls),
            "tool_failed_calls": float(t.failed),
            "tool_retries": float(t.retries),
            "unique_tools_used": float(len(self.tools)),
            "tool_total_duration_ms": t.total_duration_ms,
        }
        if t.calls:
            out["tool_success_rate"] = t.success_rate or 0.0
            out["tool_avg_duration_ms"] = t.avg_duration_ms or 0.0
        for name, stats in self.tools.items():
            out[f"tool_calls/{name}"] = float(stats.calls)
            out[f"tool_failed_calls/{name}"] = float(stats.failed)
            out[f"tool_avg_duration_ms/{name}"] = stats.avg_duration_ms or 0.0
        for node, stats in self.nodes.items():
            out[f"node_tool_calls/{node}"] = float(stats.calls)
            out[f"node_tool_failed_calls/{node}"] = float(stats.failed)
        return out

    def report(self) -> dict[str, Any]:
        """The ``tool_usage`` section of ``quality_assessment.json``."""

        def row(s: ToolStats) -> dict[str, Any]:
            return {"calls": s.calls, "failed": s.failed, "retries": s.retries, "success_rate": s.success_rate,
                    "total_duration_ms": s.total_duration_ms, "avg_duration_ms": s.avg_duration_ms}

        return {**row(self.total), "unique_tools_used": len(self.tools),
                "tools": {k: row(v) for k, v in self.tools.items()}, "nodes": {k: row(v) for k, v in self.nodes.items()}}


def tool_usage(calls: list[ToolCall], *, default_node: str = "workflow") -> ToolUsage:
    """Count a trace's tool calls (the workflow target's: every call in the trace once)."""
    usage = ToolUsage()
    for call in calls:
        usage.total.add(call)
        usage.tools.setdefault(call.name, ToolStats()).add(call)
        usage.nodes.setdefault(call.node or default_node, ToolStats()).add(call)
    return usage
