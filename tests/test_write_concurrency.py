"""The write concurrency each kind of MLflow store gets by default, and ``TRACEJUDGE_WRITE_CONCURRENCY`` over it.

A local store (sqlite file, file store) takes one writer at a time, so more writers only wait on its lock;
a tracking server takes many. Which number is faster is measured in bench/ (``sweep.py --single``), not here.
"""

from __future__ import annotations

import pytest

from tracejudge.config import ConfigError, Settings
from tracejudge.mlflow_io.store import (
    LOCAL_WRITE_CONCURRENCY,
    SERVER_WRITE_CONCURRENCY,
    TraceStore,
    default_write_concurrency,
)


@pytest.mark.parametrize(
    "uri", ["sqlite:///mlflow.db", "sqlite:////tmp/x/mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns", "mlruns", "C:\\mlruns", None, ""]
)
def test_local_stores_get_the_local_default(uri) -> None:
    assert default_write_concurrency(uri) == LOCAL_WRITE_CONCURRENCY


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example.com", "databricks", "postgresql://u@db:5432/mlflow", "mysql://u@db/mlflow"]
)
def test_servers_get_the_server_default(uri) -> None:
    assert default_write_concurrency(uri) == SERVER_WRITE_CONCURRENCY


def test_a_local_store_writes_with_fewer_threads_than_a_server() -> None:
    assert 1 <= LOCAL_WRITE_CONCURRENCY < SERVER_WRITE_CONCURRENCY


def test_the_store_sizes_its_write_pool_and_rest_connections_by_its_uri() -> None:
    import asyncio

    local = TraceStore("sqlite:////tmp/tracejudge-wc-test.db")
    loop = asyncio.new_event_loop()
    server = TraceStore("http://127.0.0.1:5000", loop=loop)
    try:
        assert local.write_concurrency == LOCAL_WRITE_CONCURRENCY
        assert local.write_pool._max_workers == LOCAL_WRITE_CONCURRENCY
        assert server.write_concurrency == SERVER_WRITE_CONCURRENCY
        assert server.write_pool._max_workers == SERVER_WRITE_CONCURRENCY
        assert server.rest is not None and server.rest._max_connections == SERVER_WRITE_CONCURRENCY
    finally:
        local.close()
        server.close()
        loop.close()


def test_the_environment_variable_overrides_the_default_on_any_store(monkeypatch) -> None:
    monkeypatch.setenv("TRACEJUDGE_WRITE_CONCURRENCY", "5")
    settings = Settings.from_env()
    assert settings.write_concurrency == 5
    for uri in ("sqlite:////tmp/tracejudge-wc-test.db", "https://mlflow.example.com"):
        store = TraceStore(uri, write_concurrency=settings.write_concurrency)
        try:
            assert store.write_concurrency == 5 and store.write_pool._max_workers == 5
        finally:
            store.close()


def test_unset_means_the_stores_default(monkeypatch) -> None:
    monkeypatch.delenv("TRACEJUDGE_WRITE_CONCURRENCY", raising=False)
    assert Settings.from_env().write_concurrency is None


def test_a_bad_value_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("TRACEJUDGE_WRITE_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match="TRACEJUDGE_WRITE_CONCURRENCY"):
        Settings.from_env()


def test_a_worker_on_the_test_sqlite_store_uses_the_local_default(worker) -> None:
    """The worker's own runtime (built from the environment, as ``tracejudge worker`` builds it) on a sqlite store."""
    import os

    from tracejudge.tasks.runtime import get_runtime

    assert "TRACEJUDGE_WRITE_CONCURRENCY" not in os.environ
    store = get_runtime().store
    assert store.tracking_uri.startswith("sqlite:")
    assert store.write_pool._max_workers == LOCAL_WRITE_CONCURRENCY
