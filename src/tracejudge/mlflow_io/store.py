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

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tracejudge.judges.model import JudgeResult
from tracejudge.mlflow_io import reader, writer
from tracejudge.mlflow_io.reader import LoadedTrace, TraceNotReady
from tracejudge.mlflow_io.rest import RestWriter, rest_writer_for

T = TypeVar("T")

#: MLflow writes in flight per process on a store that takes many writers (an http(s) tracking server, a database
#: server): they overlap the round trips.
SERVER_WRITE_CONCURRENCY = writer.DEFAULT_WRITE_CONCURRENCY
#: ... and on a local store (a sqlite file, a file store), where every write takes the file's one write lock: more
#: writers only wait on it (sqlite's busy handler sleeps 1, 2, 5, 10... ms per retry), while two still overlap one
#: write's commit (fsync) with the next one's Python work. Measured in bench/README.md ("Write concurrency").
LOCAL_WRITE_CONCURRENCY = 2
#: URI schemes of local stores: a sqlite file, a file store (``file:`` or a bare path; MLflow's default is local too).
LOCAL_SCHEMES = frozenset({"", "file", "sqlite"})

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


def default_write_concurrency(tracking_uri: str | None) -> int:
    """The write concurrency for a store when ``TRACEJUDGE_WRITE_CONCURRENCY`` sets none.

    >>> default_write_concurrency("sqlite:///mlflow.db"), default_write_concurrency("https://mlflow.example.com")
    (2, 8)
    >>> default_write_concurrency(None)  # MLflow's default store is local (sqlite:///mlflow.db or ./mlruns)
    2
    """
    if not tracking_uri:
        return LOCAL_WRITE_CONCURRENCY
    if tracking_uri.lower().startswith("databricks"):  # "databricks", "databricks://profile", "databricks-uc"
        return SERVER_WRITE_CONCURRENCY
    scheme = urlsplit(tracking_uri).scheme.lower()
    if scheme in LOCAL_SCHEMES or len(scheme) == 1:  # a one-letter scheme is a Windows drive: a file store
        return LOCAL_WRITE_CONCURRENCY
    return SERVER_WRITE_CONCURRENCY


class UnknownExperiment(LookupError):
    """No experiment has this id or name."""


class BadFilter(ValueError):
    """MLflow refused a ``filter_string``; the message quotes MLflow's error."""


@dataclass
class TracePage:
    """One page of :meth:`TraceStore.search_traces`: trace infos, and the token of the next page (None at the end)."""

    traces: list[Any]
    next_page_token: str | None


class TraceStore:
    """The process's MLflow client, for reading traces and writing results back."""

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        write_concurrency: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        rest_writer: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        #: MLflow writes in flight at once: as given, else :func:`default_write_concurrency` for the store.
        self.write_concurrency = write_concurrency or default_write_concurrency(tracking_uri)
        write_concurrency = self.write_concurrency
        self.write_pool = ThreadPoolExecutor(max_workers=write_concurrency, thread_name_prefix="tracejudge-write")
        #: Given an event loop and a tracking server (http/https), the write-back goes straight to MLflow's REST
        #: API on that loop (:mod:`~tracejudge.mlflow_io.rest`); reads, local stores and the rest use the client.
        self.loop = loop
        self.rest: RestWriter | None = (
            rest_writer_for(tracking_uri, max_connections=write_concurrency) if (loop is not None and rest_writer) else None
        )
        self._client: Any = None
        self._tracing: Any = None
        self._lock = threading.Lock()
        #: experiment id -> its artifact location, once a run of it was seen at ``<location>/<run>/artifacts``
        #: (None: one was not; see :meth:`run_artifact_uri`)
        self._run_layouts: dict[str, str | None] = {}

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

    def load_trace(self, trace_id: str, *, last_look: bool = False, agent: bool = True) -> LoadedTrace:
        """Fetch a whole trace once and extract its targets (``TraceNotReady``, ``MlflowUnavailable``...);
        ``agent=False``: their tool calls and steps only on ``reader.add_agent_data``."""
        return reader.load_trace(self.client, trace_id, last_look=last_look, agent=agent)

    def wait_for_trace(self, trace_id: str, *, wait_seconds: float, agent: bool = True) -> LoadedTrace:
        """Load the trace, polling with backoff (20 ms doubling to 2 s) while it is not exported yet or not
        whole (fewer spans than MLflow's span count, see ``reader.not_whole``); ``agent`` as in :meth:`load_trace`."""
        reader.check_trace_id(trace_id)
        give_up = time.monotonic() + wait_seconds
        pause = POLL_INITIAL_SECONDS
        while True:
            try:  # the last look within the wait judges a trace without a span count as read (reader.not_whole)
                return self.load_trace(trace_id, last_look=time.monotonic() + pause > give_up, agent=agent)
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

        ``filter_string`` is MLflow's trace filter, e.g. ``"trace.timestamp_ms > 1732780800000"``; one
        MLflow refuses is :class:`BadFilter`, quoting MLflow's message. Page tokens are text (the SQL
        store's are base64 bytes), so they can be kept in a JSON checkpoint.
        """
        from mlflow.exceptions import MlflowException

        try:
            found = writer.call_mlflow(
                self.client.search_traces,
                locations=list(experiment_ids),
                filter_string=filter_string,
                order_by=list(order_by),
                max_results=max_results,
                page_token=page_token,
                include_spans=False,
            )
        except MlflowException as exc:
            if filter_string and (getattr(exc, "error_code", "") == "INVALID_PARAMETER_VALUE" or "filter" in str(exc).lower()):
                raise BadFilter(f"MLflow refused the filter {filter_string!r}: {getattr(exc, 'message', exc)}") from None
            raise
        token = getattr(found, "token", None) or None
        if isinstance(token, bytes):
            token = token.decode()
        return TracePage(traces=[t.info for t in found], next_page_token=token)

    def experiment_id(self, ref: str, *, where: str = "experiment") -> str:
        """The id of the experiment with this id or name; :class:`UnknownExperiment` naming ``where`` if none."""
        from tracejudge.mlflow_io.query import ExperimentNotFound, resolve_experiment, store_uri

        try:
            return resolve_experiment(self.client, str(ref).strip())
        except ExperimentNotFound:
            raise UnknownExperiment(
                f"{where}: unknown experiment {str(ref).strip()!r} (no experiment has this id or name in the tracking "
                f"store {store_uri(self.client)})"
            ) from None

    # ------------------------------------------------------------------ writing

    def result_calls(
        self,
        trace_id: str,
        results: Sequence[JudgeResult],
        *,
        evaluation_id: str,
        overrides: dict[str, str] | None = None,
        plan: str | None = None,
        tools: str | None = None,
    ) -> list[Callable[[], str]]:
        """One call per result, each writing it as a feedback assessment (for :meth:`write_all`).

        ``overrides`` maps a result key to the assessment it supersedes (MLflow marks that one invalid);
        ``plan`` (a full evaluation's plan fingerprint) and ``tools`` (the trace's tool calls per tool,
        ``tool_record.encode``) go into every feedback's metadata.
        """
        overrides = overrides or {}
        if self.rest is not None:
            return [
                functools.partial(
                    self.rest.log_feedback, trace_id, r, evaluation_id=evaluation_id, overrides=overrides.get(r.key or ""),
                    plan=plan, tools=tools,
                )
                for r in results
            ]
        tracing = self.tracing
        return [
            functools.partial(
                writer.log_result, tracing, trace_id, r, evaluation_id=evaluation_id, overrides=overrides.get(r.key or ""),
                plan=plan, tools=tools,
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
        metrics: dict[str, float] | None,
        step: int = 0,
        experiment_id: str | None = None,
    ) -> list[Callable[[], Any]]:
        """The calls writing trace tags, and the report (unless None) and metrics (unless None) on ``run_id``
        (for :meth:`write_all`).

        ``step`` is the metrics' step (the trace's start time in ms: a time series on a run of many traces).
        ``experiment_id`` (the run's) lets the REST writer find the run's artifact root without a ``get_run``.
        """
        if self.rest is None:
            known = self.run_artifact_uri(run_id, experiment_id) if run_id is not None and report is not None else None
            return writer.summary_calls(
                self.client, trace_id, tags=tags, run_id=run_id, report=report, metrics=metrics, step=step,
                artifact_uri=known,
            )
        rest = self.rest
        calls: list[Callable[[], Any]] = [functools.partial(rest.set_trace_tag, trace_id, k, str(v)) for k, v in tags.items()]
        if run_id is not None and metrics:
            calls.append(functools.partial(rest.log_metrics, run_id, metrics, step=step))
        if run_id is not None and report is not None:
            calls.append(functools.partial(self._log_report, run_id, experiment_id, trace_id, report))
        return calls

    def run_artifact_uri(self, run_id: str, experiment_id: str | None) -> str | None:
        """The run's artifact URI without reading the run: its experiment's artifact location +
        ``/<run>/artifacts``, how MLflow creates runs. Checked once per experiment against the first run's own
        ``artifact_uri`` (``get_experiment`` + ``get_run``); where they differ, or without an experiment, None:
        then MLflow's client looks each run up itself (``log_dict``).
        """
        if experiment_id is None or str(self.tracking_uri or "").lower().startswith("databricks"):
            return None  # (Databricks' artifact URIs carry the profile: its client's own look-up)
        if experiment_id not in self._run_layouts:
            location = writer.call_mlflow(self.client.get_experiment, experiment_id).artifact_location
            actual = writer.call_mlflow(self.client.get_run, run_id).info.artifact_uri
            with self._lock:
                self._run_layouts[experiment_id] = location if actual == writer.run_artifact_uri(location, run_id) else None
        location = self._run_layouts[experiment_id]
        return writer.run_artifact_uri(location, run_id) if location is not None else None

    async def _log_report(self, run_id: str, experiment_id: str | None, trace_id: str, report: dict[str, Any]) -> None:
        """The report through the REST writer when the server holds the run's artifacts, else MLflow's client."""
        assert self.rest is not None
        root = await self.rest.artifact_root(run_id, experiment_id)
        if root is not None:
            await self.rest.log_dict(root, writer.report_path(trace_id), report)
            return
        call = functools.partial(writer.call_mlflow, self.client.log_dict, run_id, report, writer.report_path(trace_id))
        await asyncio.get_running_loop().run_in_executor(self.write_pool, call)

    def write_all(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run the calls concurrently, wait for all, then raise the first failure.

        Coroutine functions (the REST writer's) run together on the store's event loop, the others (MLflow's
        client) on its thread pool. Results come back in the order of ``calls``.
        """
        on_loop = {i for i, call in enumerate(calls) if _is_coroutine_function(call)}
        if not on_loop:
            return writer.write_all(calls, executor=self.write_pool)
        if self.loop is None:
            raise RuntimeError("coroutine writes need the store's event loop (TraceStore(loop=...))")
        future = asyncio.run_coroutine_threadsafe(_gather([c for i, c in enumerate(calls) if i in on_loop]), self.loop)
        first_error: BaseException | None = None
        blocking: list[Any] = []
        try:
            blocking = writer.write_all([c for i, c in enumerate(calls) if i not in on_loop], executor=self.write_pool)
        except Exception as exc:  # still wait for the loop's writes, so none is left running
            first_error = exc
        outcomes = future.result()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if first_error is not None or errors:
            raise first_error or errors[0]
        from_loop, from_pool = iter(outcomes), iter(blocking)
        return [next(from_loop) if i in on_loop else next(from_pool) for i in range(len(calls))]

    def close(self) -> None:
        if self.rest is not None and self.loop is not None and self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.rest.aclose(), self.loop).result(timeout=5)
            except Exception:  # closing is best effort
                pass
        self.write_pool.shutdown(wait=False)


def _is_coroutine_function(call: Any) -> bool:
    while isinstance(call, functools.partial):
        call = call.func
    return asyncio.iscoroutinefunction(call)


async def _gather(calls: list[Callable[[], Any]]) -> list[Any]:
    return await asyncio.gather(*(call() for call in calls), return_exceptions=True)
