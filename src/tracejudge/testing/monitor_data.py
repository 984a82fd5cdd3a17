"""Judged traces at chosen times, for the monitor's tests, screenshots and benchmark.

:func:`seed_mlflow` records ``article_writer``-shaped traces with past start times in MLflow and writes their
judge results through the workers' own writer (the same assessments, metadata and tags a worker writes);
:func:`seed_rollups` counts :class:`TraceRecord` s into Redis the way workers do. :func:`judged` builds a trace's
results from scores, with rationales worded like a judge's.
"""

from __future__ import annotations

import random
from typing import Any, Iterable

from tracejudge.judges.model import ErrorInfo, JudgeResult, quality_band
from tracejudge.monitor.rollup import ResultRecord, TraceRecord, bucket_of
from tracejudge.monitor.rollup_store import record_verdict

THRESHOLDS = {("research", "relevance"): 0.8, ("research", "groundedness"): 0.75, ("write", "coherence"): 0.75,
              ("write", "completeness"): 0.7, ("workflow", "harmfulness"): 0.8}

FAIL_RATIONALES = {
    "relevance": [
        "The findings drift off topic and miss the question asked about {topic}.",
        "Off topic: the research summary misses the question and cites unrelated sources.",
        "Partly relevant, but it misses the question's focus on recent work.",
    ],
    "groundedness": [
        "Several claims are not supported by the search results; unsupported claims about benchmarks.",
        "The summary makes unsupported claims that the retrieved sources do not mention.",
    ],
    "coherence": [
        "The article jumps between sections without transitions; abrupt topic changes.",
        "Paragraphs repeat the same point; abrupt topic changes make it hard to follow.",
    ],
    "completeness": [
        "The article leaves out the requested examples and has no conclusion.",
        "Missing the requested examples; the conclusion section is absent.",
    ],
    "harmfulness": ["Contains an unsafe suggestion without a warning."],
}
PASS_RATIONALE = "Meets the criterion: {judge} is good for {topic}."


def judged(scores: dict[tuple[str, str], float | str], *, topic: str = "AI safety", rng: random.Random | None = None,
           cost_usd: float | None = None) -> list[JudgeResult]:
    """Judge results for one trace: ``{(node, judge): score or ERROR_CODE}``; ``cost_usd`` per scored result."""
    rng = rng or random.Random(0)
    out = []
    for (node, judge), value in scores.items():
        threshold = THRESHOLDS.get((node, judge), 0.8)
        if isinstance(value, str):
            out.append(JudgeResult(name=judge, target=node, threshold=threshold, error=ErrorInfo(type=value, message=f"{judge} failed: {value}")))
            continue
        passed = value >= threshold
        rationale = PASS_RATIONALE.format(judge=judge, topic=topic) if passed else rng.choice(FAIL_RATIONALES.get(judge, ["Below the bar."])).format(topic=topic)
        out.append(JudgeResult(name=judge, target=node, score=round(value, 3), threshold=threshold, passed=passed, rationale=rationale,
                               model="gpt-4o-mini", cost_usd=cost_usd))
    return out


GATE_JUDGES = ("relevance", "coherence", "harmfulness")


def overall(results: list[JudgeResult], *, gate: tuple[str, ...] = GATE_JUDGES) -> tuple[str, float | None, str | None]:
    """(status, score, band) the way the verdict decides with ``quality_gate.judges: gate``."""
    results = [r for r in results if r.name in gate] or results
    scores = [r.score for r in results if r.score is not None]
    score = round(sum(scores) / len(scores), 6) if scores else None
    if any(r.error for r in results) or score is None:
        status = "error"
    elif all(r.passed for r in results if r.error is None):
        status = "passed"
    else:
        status = "failed"
    return status, score, quality_band(score)


#: One tool call recorded under the research node: (tool name, failed, duration in ms).
ToolSpan = tuple[str, bool, float]


def seed_mlflow(experiment_id: str, traces: Iterable[tuple[Any, ...]], *, workflow: str = "article_writer") -> list[str]:
    """Record one trace per ``(start_ms, results)`` or ``(start_ms, results, tools)`` in MLflow and write the
    results as a worker would.

    ``tools`` (a list of :data:`ToolSpan`) are recorded as TOOL spans under the research node, one after the
    other; their counts go into the feedbacks' metadata the worker's way (counted from the trace's spans as read back).
    Each trace is waited for in the store before its results are written, so this works whether MLflow
    exports traces synchronously or (its default, and whatever this process's exporter was set up with
    first) asynchronously.
    """
    import mlflow

    from tracejudge.mlflow_io import writer
    from tracejudge.mlflow_io.export import flush_pending_traces
    from tracejudge.mlflow_io.store import TraceStore

    store = TraceStore()  # MLflow's current tracking URI
    ids = []
    for start_ms, results, *more in traces:
        tools: list[ToolSpan] = more[0] if more else []
        ns = start_ms * 1_000_000
        root = mlflow.start_span_no_context(workflow, inputs={"topic": "AI safety"}, experiment_id=experiment_id, start_time_ns=ns)
        spans = {"workflow": root.span_id}
        at = ns + 1_000_000
        for node in ("research", "write"):
            child = mlflow.start_span_no_context(f"node_{node}", parent_span=root, inputs={"topic": "AI safety"},
                                                 attributes={"node.id": node}, start_time_ns=at)
            for name, failed, ms in tools if node == "research" else []:
                tool = mlflow.start_span_no_context(name, parent_span=child, span_type="TOOL", inputs={"q": "AI safety"},
                                                    start_time_ns=at)
                at += int(ms * 1_000_000)
                if failed:
                    tool.set_status("ERROR")
                else:
                    tool.set_outputs({"hits": 3})
                tool.end(end_time_ns=at)
            at += 1_000_000
            child.set_outputs({"text": f"{node} output"})
            child.end(end_time_ns=at)
            spans[node] = child.span_id
        root.set_outputs({"article": "..."})
        root.end(end_time_ns=at + 1_000_000)
        trace_id = root.trace_id
        # in the store before its results, even if an earlier test left async export on (MLflow's public
        # flush_trace_async_logging would cost ~1.2 s a trace: it restarts its export queue's thread)
        flush_pending_traces()
        store.wait_for_trace(trace_id, wait_seconds=60)
        status, score, band = overall(results)
        for r in results:
            r.span_id = spans.get(r.target)
            r.key = writer.result_key(trace_id, r.span_id, r.name, "v1", r.model, r.threshold)
        tools_text = None
        if tools:  # counted from the spans as the worker reads them, in every feedback's metadata
            from tracejudge.mlflow_io import tool_record
            from tracejudge.mlflow_io.reader import trace_tool_calls

            tools_text = tool_record.trace_text(trace_tool_calls(store.load_trace(trace_id)))
            assert tools_text is not None, f"no tool calls read back from {trace_id}"
        calls = store.result_calls(trace_id, results, evaluation_id=f"seed-{trace_id[-8:]}", tools=tools_text)
        tags = {"tracejudge.status": status, "tracejudge.passed": "true" if status == "passed" else "false",
                "tracejudge.score": "" if score is None else f"{score:.4f}", "tracejudge.band": band or ""}
        calls += store.summary_calls(trace_id, run_id=None, tags=tags, report={}, metrics={})
        store.write_all(calls)
        ids.append(trace_id)
    store.close()
    return ids


def record(trace_id: str, start_ms: int, results: list[JudgeResult], *, workflow: str = "article_writer",
           environment: str = "production", tools: dict[str, Any] | None = None) -> TraceRecord:
    """A :class:`TraceRecord` for :func:`seed_rollups`; ``tools``: its tool calls per tool (``tool_record.ToolCounts``)."""
    status, score, band = overall(results)
    return TraceRecord(
        trace_id=trace_id, timestamp_ms=start_ms, workflow=workflow, environment=environment, status=status, score=score, band=band,
        results=[ResultRecord(judge=r.name, node=r.target, score=r.score, threshold=r.threshold, passed=r.passed,
                              error_code=r.error.type if r.error else None, rationale=r.rationale, cost_usd=r.cost_usd)
                 for r in results],
        tools=dict(tools or {}),
    )


def seed_rollups(redis: Any, experiment_id: str, records: Iterable[TraceRecord], *, prefix: str = "", batch: int = 200) -> int:
    """Count records into Redis exactly as workers do (pipelined), as if each was judged when its trace ran (so the
    coverage record says workers were recording from the first one's bucket); returns how many."""
    n = 0
    pipe = redis.pipeline(transaction=False)
    for rec in records:
        record_verdict(pipe, rec, experiment_id=experiment_id, prefix=prefix, now_ms=bucket_of(rec.timestamp_ms))
        n += 1
        if n % batch == 0:
            pipe.execute()
    pipe.execute()
    return n
