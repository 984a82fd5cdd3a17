"""Hand this process's finished spans to MLflow's exporter now, for a caller that waits on the verdict.

MLflow (3.x, async trace logging on by default) batches finished spans in an
OpenTelemetry ``BatchSpanProcessor`` that exports every
``MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS`` (5 s) unless 5 spans are
waiting, so a small trace reaches the store up to 5 s after the workflow
returned, and a worker judging it waits that long (measured: gate latency
p50 5.5 s). Pushing the batch processors' spans to the exporter costs the
caller well under a millisecond (the exporter's own queue then writes the
trace within milliseconds); MLflow's public ``flush_trace_async_logging``
also stops and restarts that queue's consumer thread, which waits out its
1 s poll (measured: 1.17 s in the caller, gate latency p50 1.6 s).

>>> flush_pending_traces()  # nothing pending (or MLflow not imported): a no-op
"""

from __future__ import annotations

import logging
import sys
import threading

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
    for processor in list(_batch_processor_registry):
        try:
            processor.force_flush(FLUSH_TIMEOUT_MILLIS)
        except Exception as exc:  # never fail an enqueue over it: the worker waits for the trace anyway
            log.debug("could not flush MLflow's span processor %r: %s", processor, exc)
