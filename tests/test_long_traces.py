"""Issue 17, point 3: pick-up finds traces that run long.

The scan's window is on when a trace *ended* (``trace.end_time_ms``), not when it started: a
10-minute agent run appears in the store when it ends, long after any start-time window
(watermark minus a 60 s overlap) has passed it by. Recorded here with explicit span times, a
real Redis state, the sqlite MLflow store and a real worker judging what the scan enqueues.
"""

from __future__ import annotations

import time
import uuid

import tracejudge

TEN_MINUTES_NS = 10 * 60 * 1_000_000_000


def record_long_trace(experiment_id: str) -> str:
    """A workflow whose root span started ten minutes before it ended (one node span inside)."""
    import mlflow

    end = time.time_ns()
    start = end - TEN_MINUTES_NS
    root = mlflow.start_span_no_context(
        "long_agent", span_type="CHAIN", inputs={"question": "what did the long run find?"},
        experiment_id=experiment_id, start_time_ns=start,
    )
    node = mlflow.start_span_no_context(
        "node_research", span_type="AGENT", parent_span=root, inputs={"question": "what did the long run find?"},
        start_time_ns=start + 1_000_000,
    )
    node.end(outputs={"findings": "It found three papers on the topic."}, end_time_ns=end - 1_000_000)
    root.end(outputs={"answer": "It found three papers on the topic."}, end_time_ns=end)
    mlflow.flush_trace_async_logging()
    return root.trace_id


def test_a_ten_minute_trace_is_picked_up_and_judged(worker, pipeline_env, mlflow_store, redis_url):
    import mlflow
    import redis

    from tracejudge.config import load_config
    from tracejudge.controls.online import WATERMARK, scan
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks.state import RedisState

    name = f"online-long-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name)
    config = load_config({
        "observability": {"mlflow": {"judges": {
            "workflow_defaults": ["coherence"], "online": {"experiments": [name], "delay_seconds": 0},
        }}},
    })
    state = RedisState(redis.Redis.from_url(redis_url), prefix=f"tjlong-{uuid.uuid4().hex[:8]}:")
    store = TraceStore(mlflow_store)
    handles = []

    def enqueue(trace_id: str, workflow: str) -> None:
        handles.append(tracejudge.enqueue(trace_id, config=config))

    kwargs = dict(store=store, state=state, config=config, fingerprint="long", enqueue=enqueue)
    scan(**kwargs)  # the beat has been scanning all along: the watermark is at "now"
    assert state.watermarks.get(f"{WATERMARK}{experiment_id}") is not None and not handles

    trace_id = record_long_trace(experiment_id)
    info = store.client.get_trace(trace_id).info
    assert info.execution_duration >= 10 * 60 * 1000 - 5  # recorded as ten minutes long

    result = scan(**kwargs)
    assert result.enqueued.get(experiment_id) == 1, result
    [handle] = handles
    verdict = handle.verdict(timeout=120, raise_on_block=False)
    assert verdict.trace_id == trace_id and verdict.status in ("passed", "failed")
    assert {t.node_id for t in verdict.targets} == {"research", "workflow"}
    assert scan(**kwargs).enqueued.get(experiment_id, 0) == 0  # and only once
