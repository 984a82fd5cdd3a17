#!/usr/bin/env python
"""What reading an agent's tool calls and trajectory costs the worker per trace (CPU, no I/O).

    .venv/bin/python bench/agent_extract.py [--nodes 4] [--tools 10] [--rounds 200]

Builds an in-memory trace shaped like an agent (a root, ``--nodes`` node spans, each with ``--tools`` rounds of
a chat-model span and a tool span carrying ~1 kB of arguments/result) and times, per trace:

* ``targets``: ``extract_targets(trace, agent=False)``, what the worker does when no judge of its plan reads
  ``{tool_calls}`` or ``{trajectory}`` (inputs, outputs, context; the reader before agents);
* ``tool_usage``: counting the trace's tool calls for the verdict and run metrics from the spans
  (``trace_tool_usage`` on such a trace: no steps built), which every evaluation does;
* ``targets_agent``: ``extract_targets(trace)``, every target with its ``{tool_calls}`` and ``{trajectory}``
  (what a plan with an agent judge, or a code judge, adds: ``reader.add_agent_data``);
* ``render``: rendering ``{tool_calls}`` and ``{trajectory}`` of the root target at the default budget.

Prints p50 / p95 in ms and the load average before and after (run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

from tracejudge.judges.trajectory import render_tool_calls, render_trajectory
from tracejudge.mlflow_io.reader import LoadedTrace, extract_targets, trace_tool_usage
from tracejudge.mlflow_io.trajectory import SpanTree

def span(span_id, parent, name, kind, start, inputs=None, outputs=None, attributes=None):
    status = SimpleNamespace(status_code=SimpleNamespace(value="OK"), description="")
    return SimpleNamespace(span_id=span_id, parent_id=parent, name=name, span_type=kind, start_time_ns=start,
                           end_time_ns=start + 1_000_000, inputs=inputs, outputs=outputs, attributes=attributes or {},
                           status=status, events=[])


def agent_trace(nodes: int, tools: int) -> SimpleNamespace:
    spans = [span("root", None, "agent_workflow", "CHAIN", 0, {"request": "x" * 200}, {"answer": "y" * 500})]
    t = 1
    for n in range(nodes):
        node = f"n{n}"
        spans.append(span(node, "root", f"node_{node}", "AGENT", t, {"task": "z" * 200}, {"out": "o" * 500}))
        for k in range(tools):
            t += 2
            messages = [{"role": "user", "content": "q" * 300}] * (k + 1)
            spans.append(span(f"{node}c{k}", node, "chat", "CHAT_MODEL", t, {"messages": messages},
                              {"choices": [{"message": {"content": None, "tool_calls": [{"function": {"name": "search", "arguments": "{}"}}]}}]}))
            spans.append(span(f"{node}t{k}", node, "tool_search", "TOOL", t + 1, {"query": "s" * 200}, {"results": ["r" * 100] * 8}))
    return SimpleNamespace(data=SimpleNamespace(spans=spans), info=SimpleNamespace(assessments=[]))


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--tools", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    load_before = os.getloadavg()
    trace = agent_trace(args.nodes, args.tools)
    root = extract_targets(trace)[-1].judge_input

    def usage() -> None:
        tree = SpanTree(trace.data.spans)
        loaded = LoadedTrace(trace_id="tr-bench", experiment_id=None, run_id=None, workflow_name="agent",
                             targets=extract_targets(trace, agent=False, tree=tree), tree=tree, agent_data=False)
        trace_tool_usage(loaded)

    rows = {
        "targets": timed(lambda: extract_targets(trace, agent=False), args.rounds),
        "tool_usage": timed(usage, args.rounds),
        "targets_agent": timed(lambda: extract_targets(trace), args.rounds),
        "render": timed(lambda: (render_tool_calls(root.tool_calls, budget=20_000), render_trajectory(root.trajectory, budget=20_000)), args.rounds),
    }
    print(f"trace: {len(trace.data.spans)} spans ({args.nodes} nodes x {args.tools} tool rounds), {args.rounds} rounds")
    for name, values in rows.items():
        values.sort()
        print(f"{name:15s} p50 {statistics.median(values):7.3f} ms   p95 {values[int(0.95 * (len(values) - 1))]:7.3f} ms")
    print(f"load average before {' '.join(f'{x:.2f}' for x in load_before)}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
