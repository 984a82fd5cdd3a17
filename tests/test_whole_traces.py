"""Issue 17, point 1: a trace is judged only when it is whole.

MLflow exports a trace's spans one by one, then its trace record (with ``mlflow.trace.sizeStats``
-> ``num_spans``). A trace enqueued the moment its workflow returns (``enqueue(block=False)``, no
gate, so no export flush) can be read in between: its root span already makes it look finished,
but some nodes are missing. The worker compares the span count with the spans read and waits.

The pipeline test records 300 nine-span traces from four threads while a real worker process
judges them, and counts partial verdicts (fewer targets than the workflow has nodes + root).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace as NS

import pytest

import tracejudge

NODES = ("plan", "search", "draft", "review")
TRACES = 300


def record_four_node_trace(i: int) -> str:
    """A workflow of four node spans, each calling a tool: nine spans."""
    import mlflow
    from mlflow.entities import SpanType

    @mlflow.trace(name="lookup", span_type=SpanType.TOOL)
    def tool(x: str) -> str:
        return f"looked up {x}"

    def node(name: str):
        @mlflow.trace(name=f"node_{name}", span_type=SpanType.AGENT)
        def run(text: str) -> dict:
            return {"output": f"{name}: {tool(text)}"}

        return run

    @mlflow.trace(name="four_nodes", span_type=SpanType.CHAIN)
    def workflow(question: str) -> str:
        text = question
        for name in NODES:
            text = node(name)(text)["output"]
        return text

    workflow(f"question {i}?")
    return mlflow.get_last_active_trace_id(thread_local=True)


def span(span_id, parent=None):
    return NS(span_id=span_id, parent_id=parent, name=f"span-{span_id}")


def trace_of(spans, metadata):
    return NS(info=NS(trace_metadata=metadata, state="OK"), data=NS(spans=spans))


def test_the_span_count_decides_whether_a_trace_is_whole():
    from tracejudge.mlflow_io.reader import SIZE_STATS, TRACE_RECORD_KEY, not_whole

    counted = {SIZE_STATS: json.dumps({"num_spans": 3}), TRACE_RECORD_KEY: "3"}
    assert not_whole(trace_of([span("r"), span("a", "r"), span("b", "r")], counted)) is None
    assert "2 of its 3 spans" in not_whole(trace_of([span("r"), span("a", "r")], counted))
    # no trace record yet (spans exported, the record with the count not written): not whole until the last look
    assert "trace record" in not_whole(trace_of([span("r"), span("a", "r")], {}))
    assert not_whole(trace_of([span("r"), span("a", "r")], {}), last_look=True) is None
    # without a count, a span whose parent is missing proves the trace is not whole, even at the last look
    assert "parent span" in not_whole(trace_of([span("r"), span("b", "a")], {TRACE_RECORD_KEY: "3"}), last_look=True)
    # a record written by an exporter without counts (older MLflow): judged as read
    assert not_whole(trace_of([span("r"), span("a", "r")], {TRACE_RECORD_KEY: "2"})) is None


def test_a_half_exported_trace_is_not_ready():
    from tracejudge.mlflow_io.reader import SIZE_STATS, TRACE_RECORD_KEY, TraceNotReady, fetch_trace

    class Client:
        def get_trace(self, trace_id):
            return trace_of([span("r"), span("a", "r")], {SIZE_STATS: json.dumps({"num_spans": 9}), TRACE_RECORD_KEY: "3"})

    with pytest.raises(TraceNotReady, match="2 of its 9 spans"):
        fetch_trace(Client(), "tr-" + "a" * 32)


def test_traces_enqueued_as_their_workflows_return_are_judged_whole(worker_process, mlflow_store):
    config = {
        "observability": {"mlflow": {"artifact_level": "minimal", "judges": {"workflow_defaults": ["coherence"]}}},
    }

    def run(i: int):
        trace_id = record_four_node_trace(i)
        return tracejudge.enqueue(trace_id, config=config, block=False)  # the moment it returns: no flush

    with ThreadPoolExecutor(max_workers=4) as pool:  # load: four workflows at a time, and the worker judging
        handles = list(pool.map(run, range(TRACES)))
    verdicts = [h.verdict(timeout=600, raise_on_block=False) for h in handles]
    expected = {*NODES, "workflow"}
    judged = [v for v in verdicts if v.status != "error"]
    partial = [v for v in judged if {t.node_id for t in v.targets} != expected]
    incomplete = [v for v in verdicts if v.error is not None and v.error.type == "TRACE_INCOMPLETE"]
    other_errors = [v for v in verdicts if v.status == "error" and v not in incomplete]
    uncounted = [v for v in verdicts if any("span count unknown" in w for w in v.warnings)]
    print(f"partial verdicts: {len(partial)} of {len(verdicts)}; TRACE_INCOMPLETE: {len(incomplete)}")
    assert not partial, [(v.trace_id, sorted(t.node_id for t in v.targets), v.status) for v in partial[:5]]
    assert not other_errors, [(v.trace_id, v.error) for v in other_errors[:5]]
    assert not uncounted  # MLflow 3.17 records the count on every trace
    # A trace reported incomplete really lacks spans in the store, for good: under this load MLflow's exporter
    # (sqlite, one writer) sometimes fails to write a span and drops it; the old reader judged such a trace in part.
    from mlflow.tracking._tracking_service.utils import _get_store

    store = _get_store(mlflow_store)
    for verdict in incomplete:
        trace = store.get_trace(verdict.trace_id, allow_partial=True)
        counted = json.loads(trace.info.trace_metadata["mlflow.trace.sizeStats"])["num_spans"]
        assert len(trace.data.spans) < counted
        assert "not whole yet" in verdict.error.message


def test_a_trace_read_half_exported_is_judged_only_when_whole(worker, pipeline_env, redis_url, mlflow_store, tmp_path):
    """The race made certain: the spans of a real nine-span trace are written into the store in two parts,
    as MLflow's exporter does, and the rest (with the trace record and its span count) only once the
    worker holds the trace's lock, i.e. is reading it. The old reader judged the two spans it found."""
    import time

    import mlflow
    import redis as redis_lib
    from mlflow import MlflowClient
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.tracking._tracking_service.utils import _get_store

    scratch = f"sqlite:///{tmp_path / 'scratch.db'}"
    mlflow.set_tracking_uri(scratch)
    try:
        mlflow.set_experiment("scratch")
        trace_id = record_four_node_trace(0)
        mlflow.flush_trace_async_logging()
        trace = MlflowClient(scratch).get_trace(trace_id)
    finally:
        mlflow.set_tracking_uri(mlflow_store)
        mlflow.set_experiment("tracejudge-tests")
    assert len(trace.data.spans) == 9

    store = _get_store(mlflow_store)
    experiment_id = mlflow.get_experiment_by_name("tracejudge-tests").experiment_id
    first = [s for s in trace.data.spans if s.parent_id is None or s.name == "node_plan"]
    store.log_spans(experiment_id, first)  # the root span and one node: the trace already looks finished (OK)
    assert len(MlflowClient(mlflow_store).get_trace(trace_id).data.spans) == 2

    config = {"observability": {"mlflow": {"artifact_level": "minimal", "judges": {"workflow_defaults": ["coherence"]}}}}
    handle = tracejudge.enqueue(trace_id, config=config, block=False)
    redis = redis_lib.Redis.from_url(redis_url)

    def reading() -> bool:  # the worker holds the trace's evaluation lock: it is reading the trace
        return any(redis.scan_iter(match=f"{pipeline_env['TRACEJUDGE_KEY_PREFIX']}*lock:{trace_id}"))

    give_up = time.monotonic() + 60
    while not reading() and handle.status not in ("SUCCESS", "FAILURE") and time.monotonic() < give_up:
        time.sleep(0.01)  # polling for a condition, not a fixed wait
    store.log_spans(experiment_id, [s for s in trace.data.spans if s not in first])
    info = trace.info
    info.trace_location = TraceLocation.from_experiment_id(experiment_id)
    store.start_trace(info)  # the trace record, with mlflow.trace.sizeStats -> num_spans = 9

    verdict = handle.verdict(timeout=120, raise_on_block=False)
    assert {t.node_id for t in verdict.targets} == {*NODES, "workflow"}, verdict.summary()
