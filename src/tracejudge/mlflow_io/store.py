"""The one door to MLflow: :class:`TraceStore` holds the process's MLflow client.

It reads traces (waiting for late exports), searches them page by page, and
writes assessments, trace tags, reports and metrics, concurrently on a
bounded pool. Nothing else in tracejudge calls ``mlflow.*`` or builds a
client, and the store never touches MLflow's global tracking URI: it talks
to the URI it was given (``MLFLOW_TRACKING_URI`` through ``Settings``).

>>> store = TraceStore("sqlite:///mlruns.db")  # doctest: +SKIP
>>> loaded = store.wait_for_trace("tr-5f1c...", wait_seconds=30)  # doctest: +SKIP
>>> store.write_all(store.result_calls(loaded.trace_id, results, evaluation_id="e1"))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from tracejudge.judges.model import JudgeResult
from tracejudge.mlflow_io import reader, writer
from tracejudge.mlflow_io.reader import LoadedTrace, TraceNotReady

T = TypeVar("T")

POLL_INITIAL_SECONDS = 0.02  # a gate's trace is usually written within tens of ms of the enqueue
POLL_MAX_SECONDS = 2.0

#: MLflow's own environment defaults for worker processes, unless the user set them.
WORKER_ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_MODEL_CATALOG_URI": "",
    # MLflow's HTTP client retries 7 times with long backoff by default, and a retried POST whose first
    # reply was lost writes a second assessment; our task retries instead (it re-reads the trace first).
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def set_worker_environment() -> None:
    """Set MLflow's worker defaults (:data:`WORKER_ENVIRONMENT`) where the user has not."""
    for key, value in WORKER_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def import_mlflow() -> None:
    """Import MLflow now (about 2 s), so the first evaluation does not pay for it."""
    import mlflow  # noqa: F401


@dataclass
class TracePage:
    """One page of :meth:`TraceStore.search_traces`: trace infos, and the token of the next page (None at the end)."""

    traces: list[Any]
    next_page_token: str | None


class TraceStore:
    """The process's MLflow client, for reading traces and writing results back."""

    def __init__(self, tracking_uri: str | None = None, *, write_concurrency: int = writer.DEFAULT_WRITE_CONCURRENCY) -> None:
        self.tracking_uri = tracking_uri
        self.write_pool = ThreadPoolExecutor(max_workers=write_concurrency, thread_name_prefix="tracejudge-write")
        self._client: Any = None
        self._tracing: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ clients

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (built once, on first use; MLflow is imported then)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from mlflow import MlflowClient
                    from mlflow.tracing.client import TracingClient

                    self._tracing = TracingClient(tracking_uri=self.tracking_uri)
                    self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def tracing(self) -> Any:
        """MLflow's tracing client (assessments), for the same tracking URI."""
        self.client  # noqa: B018  (builds both)
        return self._tracing

    # ------------------------------------------------------------------ reading

    def load_trace(self, trace_id: str) -> LoadedTrace:
        """Fetch a trace once and extract its targets (``TraceNotReady``, ``MlflowUnavailable``...)."""
        return reader.load_trace(self.client, trace_id)

    def wait_for_trace(self, trace_id: str, *, wait_seconds: float) -> LoadedTrace:
        """Load the trace, polling with backoff (0.1 s doubling to 2 s) while it is not exported yet."""
        reader.check_trace_id(trace_id)
        give_up = time.monotonic() + wait_seconds
        pause = POLL_INITIAL_SECONDS
        while True:
            try:
                return self.load_trace(trace_id)
            except TraceNotReady:
                if time.monotonic() + pause > give_up:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, POLL_MAX_SECONDS)

    def search_traces(
        self,
        experiment_ids: Sequence[str],
        *,
        filter_string: str | None = None,
        order_by: Sequence[str] = ("timestamp_ms ASC",),
        max_results: int = 100,
        page_token: str | None = None,
    ) -> TracePage:
        """One page of trace infos (no spans) matching ``filter_string``; pass ``next_page_token`` on.

        ``filter_string`` is MLflow's trace filter, e.g. ``"trace.timestamp_ms > 1732780800000"``.
        """
        found = writer.call_mlflow(
            self.client.search_traces,
            experiment_ids=list(experiment_ids),
            filter_string=filter_string,
            order_by=list(order_by),
            max_results=max_results,
            page_token=page_token,
            include_spans=False,
        )
        return TracePage(traces=[t.info for t in found], next_page_token=getattr(found, "token", None))

    # ------------------------------------------------------------------ writing

    def result_calls(
        self,
        trace_id: str,
        results: Sequence[JudgeResult],
        *,
        evaluation_id: str,
        overrides: dict[str, str] | None = None,
    ) -> list[Callable[[], str]]:
        """One call per result, each writing it as a feedback assessment (for :meth:`write_all`).

        ``overrides`` maps a result key to the assessment it supersedes (MLflow marks that one invalid).
        """
        tracing = self.tracing
        overrides = overrides or {}
        return [
            functools.partial(
                writer.log_result, tracing, trace_id, r, evaluation_id=evaluation_id, overrides=overrides.get(r.key or "")
            )
            for r in results
        ]

    def report_run(self, loaded: LoadedTrace) -> str | None:
        """The run that holds the trace's report: its own run, else the experiment's online run.

        A trace without a run is linked to the online run here (``link_traces_to_run``).
        """
        run_id = loaded.run_id
        if run_id is None and loaded.experiment_id is not None:
            run_id = writer.online_run_id(self.client, loaded.experiment_id)
            writer.link_trace(self.client, loaded.trace_id, run_id)
        return run_id

    @staticmethod
    def report_uri(run_id: str, trace_id: str) -> str:
        """``runs:/<run>/tracejudge/<trace>/quality_assessment.json``."""
        return writer.report_uri(run_id, trace_id)

    def summary_calls(
        self,
        trace_id: str,
        *,
        run_id: str | None,
        tags: dict[str, str],
        report: dict[str, Any] | None,
        metrics: dict[str, float],
        step: int = 0,
    ) -> list[Callable[[], Any]]:
        """The calls writing trace tags, and the report (unless None) and metrics on ``run_id`` (for :meth:`write_all`).

        ``step`` is the metrics' step (the trace's start time in ms: a time series on a run of many traces).
        """
        return writer.summary_calls(
            self.client, trace_id, tags=tags, run_id=run_id, report=report, metrics=metrics, step=step
        )

    def write_all(self, calls: list[Callable[[], T]]) -> list[T]:
        """Run the calls concurrently on the store's pool; wait for all, then raise the first failure."""
        return writer.write_all(calls, executor=self.write_pool)

    def close(self) -> None:
        self.write_pool.shutdown(wait=False)
