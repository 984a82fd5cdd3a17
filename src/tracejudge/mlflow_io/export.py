"""Hand this process's finished spans to MLflow's exporter now, for a caller that waits on the verdict.

MLflow (3.x, async trace logging on by default) batches finished spans in an
OpenTelemetry ``BatchSpanProcessor`` that exports every
``MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS`` (5 s) unless 5 spans are
waiting, so a small trace reaches the store up to 5 s after the workflow
returned, and a worker judging it waits that long (measured: gate latency
p50 5.5 s). Pushing the batch processors' spans to the exporter and waiting
for its queue to write them costs the caller the write itself (milliseconds
on a local store), so the worker never reads a half-written trace; MLflow's public ``flush_trace_async_logging``
also stops and restarts that queue's consumer thread, which waits out its
1 s poll (measured: 1.17 s in the caller, gate latency p50 1.6 s).

>>> flush_pending_traces()  # nothing pending (or MLflow not imported): a no-op
"""

from __future__ import annotations

import logging
import sys
import threading
import time

log = logging.getLogger(__name__)

#: The most the caller waits for the batch processors to hand their spans over.
FLUSH_TIMEOUT_MILLIS = 5000


def flush_pending_traces() -> None:
    """Export the finished spans MLflow is holding in this process (no-op if MLflow was never imported)."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:  # no MLflow in this process: no trace of ours is pending
        return
    try:
        from mlflow.tracing.processor.base_mlflow import _batch_processor_registry
    except ImportError:  # another MLflow layout: its public flush, off the caller's thread
        threading.Thread(target=mlflow.flush_trace_async_logging, name="tracejudge-flush", daemon=True).start()
        return
    processors = list(_batch_processor_registry)
    for processor in processors:
        try:
            processor.force_flush(FLUSH_TIMEOUT_MILLIS)
        except Exception as exc:  # never fail an enqueue over it: the worker waits for the trace anyway
            log.debug("could not flush MLflow's span processor %r: %s", processor, exc)
    # Then wait (boundedly) until the exporter's queue has written them: a worker reading the trace while
    # it is half written saw it without its run (``mlflow.sourceRun``) and put the report on the online run.
    deadline = time.monotonic() + FLUSH_TIMEOUT_MILLIS / 1000
    for processor in processors:
        export_queue = getattr(getattr(processor, "span_exporter", None), "_async_queue", None)
        pending = getattr(export_queue, "_queue", None)
        if pending is None or not export_queue.is_active():
            continue
        while getattr(pending, "unfinished_tasks", 0) and time.monotonic() < deadline:
            time.sleep(0.001)
