"""Shared fixtures: the real parts the pipeline tests run against.

* a real Redis (``TRACEJUDGE_TEST_REDIS_URL``, default db 14 of the local
  server; .ci/run starts one if none answers), flushed per test module;
* the bundled OpenAI-compatible test server over real HTTP;
* a real MLflow store (a sqlite file in a temporary directory);
* a real Celery worker, in a thread of the test process (threads pool).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")

TEST_REDIS_URL = os.environ.get("TRACEJUDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
_STORE_DIR = Path(tempfile.mkdtemp(prefix="tracejudge-tests-"))
TRACKING_URI = f"sqlite:///{_STORE_DIR / 'mlflow.db'}"


@pytest.fixture(scope="session")
def fake_llm() -> Iterator["FakeLLMServer"]:  # noqa: F821
    from tracejudge.testing import FakeLLMServer

    with FakeLLMServer(latency_ms=0, retry_after=0.05) as server:
        yield server


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:  # pragma: no cover - environment problem
        pytest.fail(f"these tests need a real Redis at {TEST_REDIS_URL} ({exc}); .ci/run starts one")
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def mlflow_store() -> str:
    """A sqlite-backed MLflow store for the whole session, with its own artifact root."""
    import mlflow

    os.environ["MLFLOW_TRACKING_URI"] = TRACKING_URI
    mlflow.set_tracking_uri(TRACKING_URI)
    experiment = "tracejudge-tests"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(_STORE_DIR / "artifacts").as_uri())
    mlflow.set_experiment(experiment)
    return TRACKING_URI


@pytest.fixture(scope="session")
def pipeline_env(fake_llm, redis_url: str, mlflow_store: str) -> Iterator[dict[str, str]]:
    """Environment for a worker: test Redis, test LLM, test MLflow store."""
    env = {
        "TRACEJUDGE_REDIS_URL": redis_url,
        "TRACEJUDGE_LLM_BASE_URL": fake_llm.base_url,
        "TRACEJUDGE_LLM_API_KEY": "sk-SENTINEL-7f3c9e1d-must-never-be-logged",
        "MLFLOW_TRACKING_URI": mlflow_store,
        # a key prefix of its own, so two test runs on one Redis never take each other's tasks
        "TRACEJUDGE_KEY_PREFIX": f"tjtest-{uuid.uuid4().hex[:8]}:",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from tracejudge.tasks.runtime import reset_runtime
    from tracejudge.worker import reset_app

    reset_app()
    reset_runtime()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_app()
    reset_runtime()


@pytest.fixture(scope="module")
def worker(pipeline_env) -> Iterator[object]:
    """A real Celery worker in a thread (threads pool), consuming both queues."""
    from celery.contrib.testing.worker import start_worker

    from tracejudge.worker import QUEUES, get_app

    app = get_app()
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=list(QUEUES),
        shutdown_timeout=30,
        loglevel="WARNING",
    ) as controller:
        yield controller


@pytest.fixture()
def worker_process(pipeline_env, tmp_path, monkeypatch) -> Iterator[object]:
    """A ``tracejudge worker`` subprocess with its own key prefix and its own test LLM server.

    For promises about a worker process (what its LLM client remembers, what it logs): the test
    sees it only from outside, as a user would.
    """
    from types import SimpleNamespace

    from tracejudge.testing import FakeLLMServer
    from tracejudge.testing.processes import WorkerProcess
    from tracejudge.worker import reset_app

    prefix = f"tjproc-{uuid.uuid4().hex[:8]}:"
    with FakeLLMServer(latency_ms=0, retry_after=0.05) as llm:
        env = {**pipeline_env, "TRACEJUDGE_KEY_PREFIX": prefix, "TRACEJUDGE_LLM_BASE_URL": llm.base_url}
        monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)  # this process enqueues on the worker's queues
        reset_app()
        try:
            with WorkerProcess(env, concurrency=4, log=tmp_path / "worker.log") as process:
                yield SimpleNamespace(llm=llm, process=process, log=process.log)
        finally:
            monkeypatch.undo()
            reset_app()


@pytest.fixture()
def article_trace(mlflow_store) -> str:
    from tracejudge.testing.workflows import record_article_trace

    return record_article_trace()
