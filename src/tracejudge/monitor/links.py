"""Links into the MLflow UI: a trace, the experiment's traces, and its Overview -> Quality tab.

The UI's address is ``MLFLOW_UI_URL``; by default the tracking URI when that is an http(s) server. A local
store (sqlite, a directory, a database) has no UI until someone starts one, so no address is guessed: the
links are then the UI's paths (``/#/experiments/...``) and :func:`open_ui_command` says how to start it.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from tracejudge.config import Settings
from tracejudge.monitor.models import Links


def mlflow_ui_url(tracking_uri: str | None = None, environ: dict[str, str] | None = None) -> str | None:
    """Where the MLflow UI is, or None when nobody said and the store is not an http(s) server.

    >>> mlflow_ui_url("http://mlflow.internal:5000/", {})
    'http://mlflow.internal:5000'
    >>> mlflow_ui_url("sqlite:///mlflow.db", {"MLFLOW_UI_URL": "https://ui.example/"})
    'https://ui.example'
    >>> mlflow_ui_url("sqlite:///mlflow.db", {}) is None
    True
    """
    settings = Settings.from_env(environ)
    if settings.mlflow_ui_url:
        return settings.mlflow_ui_url.rstrip("/")
    uri = tracking_uri if tracking_uri is not None else (settings.mlflow_tracking_uri or "")
    parts = urlsplit(uri or "")
    if parts.scheme in ("http", "https") and parts.hostname:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"
    return None


def open_ui_command(tracking_uri: str | None) -> str:
    """How to open the MLflow UI over a store that serves none (passwords in the URI hidden).

    >>> open_ui_command("sqlite:////tmp/x/mlflow.db")
    'mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db'
    >>> open_ui_command("postgresql://tj:secret@db/mlflow")
    'mlflow ui --backend-store-uri postgresql://tj:***@db/mlflow'
    >>> open_ui_command(None)
    'mlflow ui'
    """
    from tracejudge.config import redact_url

    if not tracking_uri:
        return "mlflow ui"  # MLflow's default store, the same one the unset tracking URI means
    return f"mlflow ui --backend-store-uri {redact_url(tracking_uri)}"


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
    """The experiment's links; for a store without a UI address, paths in the UI and how to open it.

    >>> links_for("1", tracking_uri="sqlite:///mlflow.db").experiment_quality
    '/#/experiments/1/overview/quality'
    """
    ui = mlflow_ui_url(tracking_uri)
    if tracking_uri is None:
        tracking_uri = Settings.from_env().mlflow_tracking_uri
    return Links(
        mlflow_ui=ui, open_ui=None if ui is not None else open_ui_command(tracking_uri),
        experiment_quality=quality_url(ui or "", experiment_id), experiment_traces=traces_url(ui or "", experiment_id),
    )


def where(url: str, links: Links) -> str:
    """A link as text: the URL, or for a store without a UI address how to get there.

    >>> where("/#/experiments/1/traces", Links(mlflow_ui=None, open_ui="mlflow ui", experiment_quality="", experiment_traces=""))
    'run `mlflow ui`, then open /#/experiments/1/traces at the address it prints'
    """
    if links.mlflow_ui is not None:
        return url
    return f"run `{links.open_ui}`, then open {url} at the address it prints"
