"""Links into the MLflow UI: a trace, the experiment's traces, and its Overview -> Quality tab.

The UI's address is ``MLFLOW_UI_URL``; by default the tracking URI when that is an http(s) server, else
``http://127.0.0.1:5000`` (what ``mlflow ui`` serves).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from tracejudge.config import Settings
from tracejudge.monitor.models import Links

DEFAULT_UI = "http://127.0.0.1:5000"


def mlflow_ui_url(tracking_uri: str | None = None, environ: dict[str, str] | None = None) -> str:
    """Where the MLflow UI is.

    >>> mlflow_ui_url("http://mlflow.internal:5000/", {})
    'http://mlflow.internal:5000'
    >>> mlflow_ui_url("sqlite:///mlflow.db", {"MLFLOW_UI_URL": "https://ui.example/"})
    'https://ui.example'
    >>> mlflow_ui_url("sqlite:///mlflow.db", {})
    'http://127.0.0.1:5000'
    """
    settings = Settings.from_env(environ)
    if settings.mlflow_ui_url:
        return settings.mlflow_ui_url.rstrip("/")
    uri = tracking_uri if tracking_uri is not None else (settings.mlflow_tracking_uri or "")
    parts = urlsplit(uri or "")
    if parts.scheme in ("http", "https") and parts.hostname:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return DEFAULT_UI


def trace_url(ui: str, experiment_id: str, trace_id: str) -> str:
    """The trace's page in the MLflow UI.

    >>> trace_url("http://h:5000", "1", "tr-ab")
    'http://h:5000/#/experiments/1/traces?selectedEvaluationId=tr-ab&traceId=tr-ab'
    """
    t = quote(trace_id, safe="")
    return f"{ui}/#/experiments/{quote(str(experiment_id), safe='')}/traces?selectedEvaluationId={t}&traceId={t}"


def quality_url(ui: str, experiment_id: str) -> str:
    """The experiment's Overview -> Quality tab (count, average, histogram, moving average per assessment)."""
    return f"{ui}/#/experiments/{quote(str(experiment_id), safe='')}/overview/quality"


def traces_url(ui: str, experiment_id: str) -> str:
    return f"{ui}/#/experiments/{quote(str(experiment_id), safe='')}/traces"


def links_for(experiment_id: str, *, tracking_uri: str | None = None) -> Links:
    ui = mlflow_ui_url(tracking_uri)
    return Links(mlflow_ui=ui, experiment_quality=quality_url(ui, experiment_id), experiment_traces=traces_url(ui, experiment_id))
