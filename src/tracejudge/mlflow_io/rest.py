"""A lean async writer for MLflow tracking servers: the write-back straight to MLflow's REST API.

MLflow's Python client costs ~3 ms of CPU per call (requests, protobuf and
entity conversions) and needs a thread per call in flight. This writer sends
the same requests (the bodies ``message_to_json`` makes for the client's
calls, field for field) with the async httpx client the judges use, on the
process's event loop, so a trace's writes cost a fraction of that and no
threads. It covers the write-back only:

- ``POST /api/3.0/mlflow/traces/{trace_id}/assessments`` (a feedback, as ``log_feedback``);
- ``PATCH /api/2.0/mlflow/traces/{trace_id}/tags`` (``set_trace_tag``);
- ``POST /api/2.0/mlflow/runs/log-batch`` (the run's quality metrics, as ``log_batch``);
- ``PUT /api/2.0/mlflow-artifacts/artifacts/...`` (``quality_assessment.json``, as ``log_dict``
  writes it, when the run's artifacts are served by the tracking server: ``mlflow-artifacts:/``).

Reads, local stores (sqlite, files) and anything this writer does not do
(other artifact stores, AWS SigV4 or plug-in auth, client certificates)
stay with MLflow's client: :func:`rest_writer_for` answers None for them.
Checked against an MLflow 3.17.2 server only (``tests/test_rest_writer.py``
writes through both paths and compares what lands).

>>> rest_writer_for("sqlite:///mlflow.db") is None
True
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlsplit

from tracejudge.judges.model import JudgeResult
from tracejudge.mlflow_io.reader import MlflowUnavailable
from tracejudge.ops import metrics

try:  # openai >= 3 ships on httpx2; older releases on httpx (the judges' client does the same)
    import httpx2 as _httpx  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _httpx  # type: ignore[no-redef]

log = logging.getLogger(__name__)

_UNAVAILABLE_STATUS = {502, 503, 504}


class MlflowWriteError(RuntimeError):
    """The tracking server refused a write (not a connection problem: retrying will not help)."""

    def __init__(self, message: str, *, status: int, error_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


def rest_writer_for(tracking_uri: str | None, *, max_connections: int = 16) -> "RestWriter | None":
    """A :class:`RestWriter` for an ``http(s)://`` tracking URI, or None where MLflow's client must write.

    >>> rest_writer_for("http://127.0.0.1:5000") is not None
    True
    >>> rest_writer_for("databricks") is None
    True
    """
    if not tracking_uri or urlsplit(tracking_uri).scheme not in ("http", "https"):
        return None
    try:
        from mlflow.utils.credentials import get_default_host_creds

        creds = get_default_host_creds(tracking_uri)
    except Exception as exc:  # an MLflow without this helper: its client writes
        log.info("writing through MLflow's client (no host credentials helper: %s)", exc)
        return None
    if getattr(creds, "aws_sigv4", False) or getattr(creds, "auth", None) or getattr(creds, "client_cert_path", None):
        return None  # auth the client does and we do not
    from mlflow import environment_variables as mlflow_env

    if getattr(mlflow_env, "MLFLOW_WORKSPACE", None) is not None and mlflow_env.MLFLOW_WORKSPACE.get():
        return None  # workspaces add headers the client knows
    return RestWriter(
        tracking_uri,
        token=getattr(creds, "token", None),
        username=getattr(creds, "username", None),
        password=getattr(creds, "password", None),
        verify=(False if getattr(creds, "ignore_tls_verification", False) else getattr(creds, "server_cert_path", None) or True),
        max_connections=max_connections,
    )


class RestWriter:
    """Writes to one MLflow tracking server over its REST API, on the caller's event loop.

    Build it with :func:`rest_writer_for`; every method is a coroutine.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        verify: Any = True,
        max_connections: int = 16,
        timeout_seconds: float | None = None,
    ) -> None:
        self.base_url = tracking_uri.rstrip("/")
        headers = {"User-Agent": "tracejudge"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._auth = (username, password) if username and password else None
        self._headers = headers
        self._verify = verify
        self._max_connections = max_connections
        if timeout_seconds is None:  # MLflow's own setting for its HTTP calls (workers set 30 s)
            from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

            timeout_seconds = float(MLFLOW_HTTP_REQUEST_TIMEOUT.get())
        self._timeout = timeout_seconds
        self._client: Any = None
        self._artifact_roots: dict[str, str | None] = {}

    def __repr__(self) -> str:  # never shows credentials
        return f"RestWriter({self.base_url!r})"

    @property
    def client(self) -> Any:
        """The httpx ``AsyncClient`` (made on first use, on the loop that uses it)."""
        if self._client is None:
            self._client = _httpx.AsyncClient(
                base_url=self.base_url,
                headers=self._headers,
                auth=self._auth,
                verify=self._verify,
                timeout=self._timeout,
                limits=_httpx.Limits(max_connections=self._max_connections, max_keepalive_connections=self._max_connections),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ the writes

    async def log_feedback(
        self, trace_id: str, result: JudgeResult, *, evaluation_id: str, overrides: str | None = None, plan: str | None = None,
        tools: str | None = None,
    ) -> str:
        """Write one result as a feedback assessment (what ``log_assessment`` sends); returns its id.

        With ``overrides`` (an assessment id) the new one supersedes it: MLflow marks the old one invalid.
        ``plan``: the full evaluation's plan fingerprint, kept in the metadata (``writer.PLAN``); ``tools``: the
        trace's tool calls per tool (``writer.TOOLS``).
        """
        body = {"assessment": feedback_json(
            trace_id, result, evaluation_id=evaluation_id, overrides=overrides, plan=plan, tools=tools
        )}
        reply = await self.call("log_feedback", "POST", f"/api/3.0/mlflow/traces/{quote(trace_id, safe='')}/assessments", json=body)
        return str((reply.get("assessment") or {}).get("assessment_id", ""))

    async def set_trace_tag(self, trace_id: str, key: str, value: str) -> None:
        """``MlflowClient.set_trace_tag`` (values over 250 characters are cut, as the store does)."""
        await self.call(
            "set_trace_tag", "PATCH", f"/api/2.0/mlflow/traces/{quote(trace_id, safe='')}/tags",
            json={"key": key, "value": str(value)[:250]},
        )

    async def log_metrics(self, run_id: str, metrics: dict[str, float], *, step: int = 0) -> None:
        """``MlflowClient.log_batch(run_id, metrics=[Metric(k, v, step or now, step)...])`` (as ``writer.summary_calls``)."""
        timestamp = step or int(time.time() * 1000)
        body = {
            "run_id": run_id,
            "metrics": [{"key": k, "value": float(v), "timestamp": timestamp, "step": step} for k, v in metrics.items()],
        }
        await self.call("log_batch", "POST", "/api/2.0/mlflow/runs/log-batch", json=body)

    async def artifact_root(self, run_id: str, experiment_id: str | None) -> str | None:
        """The ``mlflow-artifacts`` path of the run's artifacts (``<exp>/<run>/artifacts``), or None when the
        server does not serve them (then MLflow's client writes the report).

        A run's artifact URI is its experiment's artifact location + ``/<run_id>/artifacts`` (how MLflow
        creates runs), so one ``experiments/get`` per experiment serves every run in it.
        """
        if experiment_id is None:
            return None
        if experiment_id not in self._artifact_roots:
            reply = await self.call("get_experiment", "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment_id})
            location = (reply.get("experiment") or {}).get("artifact_location") or ""
            parts = urlsplit(location)
            self._artifact_roots[experiment_id] = (
                (parts.netloc + parts.path).strip("/") if parts.scheme == "mlflow-artifacts" and not parts.netloc else None
            )
        root = self._artifact_roots[experiment_id]
        return f"{root}/{run_id}/artifacts" if root is not None else None

    async def log_dict(self, artifact_root: str, path: str, dictionary: dict[str, Any]) -> None:
        """Upload ``dictionary`` as JSON to ``<artifact_root>/<path>`` (the bytes ``MlflowClient.log_dict`` writes)."""
        content = json.dumps(dictionary, indent=2, default=str).encode("utf-8")
        await self.call(
            "log_dict", "PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quote(f'{artifact_root}/{path}')}",
            content=content, headers={"Content-Type": "application/json"},
        )

    # ------------------------------------------------------------------ one request

    async def call(self, op: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One request; a server that does not answer is :class:`MlflowUnavailable` (retryable), a refusal
        :class:`MlflowWriteError` with MLflow's error code and message. ``op`` names the call (for timers)."""
        try:
            response = await self.client.request(method, path, **kwargs)
        except (_httpx.TransportError, OSError) as exc:  # connect/read errors and timeouts
            metrics.count_mlflow_call(op, "unavailable")
            raise MlflowUnavailable(f"MLflow tracking server unavailable ({op}): {type(exc).__name__}: {exc}") from None
        if response.status_code in _UNAVAILABLE_STATUS:
            metrics.count_mlflow_call(op, "unavailable")
            raise MlflowUnavailable(f"MLflow tracking server unavailable ({op}): status code {response.status_code}")
        metrics.count_mlflow_call(op, "ok" if response.status_code < 400 else "error")
        if response.status_code >= 400:
            code, message = _error_of(response)
            raise MlflowWriteError(
                f"MLflow refused {op} ({response.status_code} {code or ''}): {message}", status=response.status_code, error_code=code
            )
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            return {}


def feedback_json(
    trace_id: str,
    result: JudgeResult,
    *,
    evaluation_id: str,
    overrides: str | None = None,
    plan: str | None = None,
    now_ms: int | None = None,
    tools: str | None = None,
) -> dict[str, Any]:
    """The ``assessment`` MLflow's client sends for ``log_feedback(**writer.feedback_kwargs(...))``.

    >>> from tracejudge.judges.model import JudgeResult
    >>> r = JudgeResult(name="coherence", target="write", span_id="s1", score=0.9, threshold=0.8, passed=True, key="k")
    >>> body = feedback_json("tr-1", r, evaluation_id="e1", now_ms=0)
    >>> body["assessment_name"], body["feedback"], body["source"]["source_type"], body["create_time"]
    ('coherence', {'value': 0.9}, 'LLM_JUDGE', '1970-01-01T00:00:00.000Z')
    """
    from tracejudge.mlflow_io import writer

    now = int(time.time() * 1000) if now_ms is None else now_ms
    stamp = datetime.fromtimestamp(now / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now % 1000:03d}Z"
    body: dict[str, Any] = {"assessment_name": result.name, "trace_id": trace_id}
    if result.span_id:
        body["span_id"] = result.span_id
    source_type, source_id = writer.source_of(result)
    body["source"] = {"source_type": source_type, "source_id": source_id}
    body["create_time"] = stamp
    body["last_update_time"] = stamp
    if result.error is not None:
        error: dict[str, Any] = {"error_code": result.error.type}
        if result.error.message:
            error["error_message"] = result.error.message
        body["feedback"] = {"value": None, "error": error}
    else:
        body["feedback"] = {"value": float(result.score) if result.score is not None else None}
        if result.rationale is not None:
            body["rationale"] = result.rationale
    body["metadata"] = writer.feedback_metadata(result, evaluation_id=evaluation_id, plan=plan, tools=tools)
    if overrides:
        body["overrides"] = overrides
    body["valid"] = True
    return body


def _error_of(response: Any) -> tuple[str | None, str]:
    try:
        data = response.json()
        return data.get("error_code"), str(data.get("message", ""))[:500]
    except ValueError:
        return None, response.text[:500]
