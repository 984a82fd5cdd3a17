"""An MLflow server going down between the two reads of a trace is an outage, never "trace not ready".

MLflow's ``get_trace`` reads the trace's info, then downloads its span data in a
second request, and reports *any* failure of that download as "missing span
data". A server that dies in between used to be sorted as :class:`TraceNotReady`
(waited on, then a final TRACE_NOT_FOUND verdict: an evaluation lost to an
outage); it must be :class:`MlflowUnavailable`, which the task retries. The
race is made deterministic with a small HTTP proxy in front of a real
``mlflow server`` that answers the info request and drops the span-data
request, the way a server going down does. Span data that is really missing
(the server answers 404) stays :class:`TraceNotReady`.
"""

from __future__ import annotations

import http.client
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tracejudge.mlflow_io.reader import MlflowUnavailable, TraceNotReady
from tracejudge.mlflow_io.store import TraceStore

ARTIFACTS_PATH = "/api/2.0/mlflow-artifacts/"


class DroppingProxy:
    """Forwards HTTP to ``upstream``; while ``drop_artifacts`` is set, closes span-data requests unanswered."""

    def __init__(self, upstream_port: int) -> None:
        proxy = self
        self.drop_artifacts = False
        self.dropped = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _forward(self) -> None:
                if proxy.drop_artifacts and self.path.startswith(ARTIFACTS_PATH):
                    proxy.dropped += 1
                    self.close_connection = True
                    self.connection.close()  # no reply at all: the server went away mid-read
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "connection"}}
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    reply = upstream.getresponse()
                    data = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="dropping-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "DroppingProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_trace(tmp_path_factory):
    """A real ``mlflow server`` holding one article trace; MLflow's global URI and experiment are put back."""
    import mlflow
    from mlflow.tracking import fluent

    from tracejudge.testing.processes import MlflowServer
    from tracejudge.testing.workflows import record_article_trace

    uri, active = mlflow.get_tracking_uri(), fluent._active_experiment_id
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")}
    with MlflowServer(directory=tmp_path_factory.mktemp("reader-outage"), workers=1) as srv:
        try:
            mlflow.set_tracking_uri(srv.url)
            experiment_id = mlflow.create_experiment(f"reader-outage-{os.getpid()}")
            mlflow.set_experiment(experiment_id=experiment_id)
            trace_id = record_article_trace(in_run=False)
            mlflow.flush_trace_async_logging()
            yield srv, trace_id
        finally:
            mlflow.set_tracking_uri(uri)
            fluent._active_experiment_id = active
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def test_server_lost_between_info_and_span_data_is_unavailable_not_not_ready(server_trace):
    import mlflow

    srv, trace_id = server_trace
    with DroppingProxy(srv.port) as proxy:
        # MLflow resolves ``mlflow-artifacts:/`` span data against the global tracking URI (in a worker:
        # MLFLOW_TRACKING_URI, the same server), so both reads go through the proxy
        mlflow.set_tracking_uri(proxy.url)
        try:
            store = TraceStore(proxy.url)
            assert store.load_trace(trace_id).targets, "the trace reads fine through the proxy"
            proxy.drop_artifacts = True
            with pytest.raises(MlflowUnavailable, match="unavailable"):
                # before the fix: TraceNotReady ("missing span data"), waited on, then a final TRACE_NOT_FOUND verdict
                store.wait_for_trace(trace_id, wait_seconds=5)
        finally:
            mlflow.set_tracking_uri(srv.url)
        assert proxy.dropped >= 1, "the span-data request never reached the proxy: the test did not test the race"


def test_span_data_really_missing_is_still_not_ready(server_trace):
    import mlflow

    srv, trace_id = server_trace
    mlflow.set_tracking_uri(srv.url)
    store = TraceStore(srv.url)
    info = store.tracing.get_trace_info(trace_id)
    location = info.tags["mlflow.artifactLocation"]  # mlflow-artifacts:/<exp>/traces/<id>/artifacts
    relative = location.split("mlflow-artifacts:/", 1)[1]
    data = Path(srv.dir, "artifacts", relative, "traces.json")
    assert data.exists(), f"expected the span data at {data}"
    data.rename(data.with_suffix(".moved"))
    try:
        with pytest.raises(TraceNotReady, match="span data"):
            store.load_trace(trace_id)
    finally:
        data.with_suffix(".moved").rename(data)
