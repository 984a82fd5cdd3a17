"""The report (``quality_assessment.json``) lands where ``MlflowClient.log_dict`` puts it, without MLflow
reading every trace's run to find where its artifacts are (one run read per experiment, to check the layout)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import mlflow
from mlflow import MlflowClient
from mlflow.tracking._tracking_service.client import TrackingServiceClient

from tracejudge.mlflow_io import writer
from tracejudge.mlflow_io.store import TraceStore


def _report(i: int) -> dict:
    return {"trace_id": f"tr-{i}", "status": "passed", "results": [{"name": "coherence", "score": 0.9, "rationale": "ok"}]}


def test_reports_land_in_each_runs_artifacts_with_one_run_read_per_experiment(mlflow_store, monkeypatch):
    experiment = mlflow.create_experiment(f"reports-{uuid.uuid4().hex[:8]}")
    client = MlflowClient()
    runs = [client.create_run(experiment).info.run_id for _ in range(3)]
    reads: list[str] = []
    real_get_run = TrackingServiceClient.get_run  # MlflowClient.get_run and log_dict's own look-up both come here
    monkeypatch.setattr(TrackingServiceClient, "get_run", lambda self, run_id: reads.append(run_id) or real_get_run(self, run_id))
    store = TraceStore(mlflow_store)
    try:
        for i, run_id in enumerate(runs):
            store.write_all(store.summary_calls(f"tr-{i}", run_id=run_id, tags={}, report=_report(i), metrics=None,
                                                experiment_id=experiment))
    finally:
        store.close()
    assert reads == runs[:1]  # the first run checks the experiment's layout; the others are not read
    monkeypatch.undo()
    for i, run_id in enumerate(runs):
        uri = f"runs:/{run_id}/{writer.report_path(f'tr-{i}')}"
        assert mlflow.artifacts.load_dict(uri) == _report(i)
        local = Path(mlflow.artifacts.download_artifacts(uri))
        assert local.read_text() == json.dumps(_report(i), indent=2, default=str)  # the bytes MLflow's log_dict writes


def test_an_experiment_whose_runs_keep_artifacts_elsewhere_goes_through_mlflows_client(mlflow_store, monkeypatch):
    experiment = mlflow.create_experiment(f"elsewhere-{uuid.uuid4().hex[:8]}")
    client = MlflowClient()
    run_id = client.create_run(experiment).info.run_id
    store = TraceStore(mlflow_store)
    try:
        monkeypatch.setattr(store.client, "get_run", lambda run_id: SimpleNamespace(info=SimpleNamespace(artifact_uri="s3://other/place")))
        assert store.run_artifact_uri(run_id, experiment) is None
        assert store.run_artifact_uri(uuid.uuid4().hex, experiment) is None  # remembered for the experiment
        calls = store.summary_calls("tr-9", run_id=run_id, tags={}, report=_report(9), metrics=None, experiment_id=experiment)
        assert [c.args[0] for c in calls] == [store.client.log_dict]
        assert store.run_artifact_uri(run_id, None) is None  # no experiment known: MLflow's client too
    finally:
        store.close()
