"""A tracking URI's password never shows: not in the verdict, the result backend, the CLI or the logs.

The MLflow store is a real PostgreSQL database reached through
``postgresql+psycopg://postgres:<sentinel>@127.0.0.1:5432/<db>`` (the server trusts local users, so
the sentinel password is carried but never checked). A worker subprocess uses that URI; an unknown
trace id makes it answer ``TRACE_NOT_FOUND``, whose message names the store. ``tracejudge gate`` in a
subprocess is the caller. (``run-tests.sh`` runs ``scripts/ensure-postgres.sh`` first.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

SENTINEL = "pgpw-SENTINEL-93b1e7"
PG_HOST = os.environ.get("POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("POSTGRES_PORT", "5432"))


@pytest.fixture(scope="module")
def postgres_store(tmp_path_factory):
    psycopg = pytest.importorskip("psycopg", reason="psycopg comes with the test extras: pip install -e '.[test]'")
    name = f"tj_redact_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"needs PostgreSQL at {PG_HOST}:{PG_PORT} trusting user postgres (scripts/ensure-postgres.sh starts one): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg://postgres:{SENTINEL}@{PG_HOST}:{PG_PORT}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_tracking_uri_password_is_redacted_in_verdict_result_backend_cli_and_logs(postgres_store, pipeline_env, tmp_path):
    import redis

    from tracejudge.testing.processes import WorkerProcess
    from tracejudge.mlflow_io.store import WORKER_ENVIRONMENT

    prefix = f"tjredact-{uuid.uuid4().hex[:8]}:"
    env = {
        **WORKER_ENVIRONMENT,
        "TRACEJUDGE_REDIS_URL": pipeline_env["TRACEJUDGE_REDIS_URL"],
        "TRACEJUDGE_LLM_BASE_URL": pipeline_env["TRACEJUDGE_LLM_BASE_URL"],
        "TRACEJUDGE_LLM_API_KEY": "sk-test-not-secret",
        "TRACEJUDGE_KEY_PREFIX": prefix,
        "MLFLOW_TRACKING_URI": postgres_store,
    }
    config = tmp_path / "cfg.yaml"
    config.write_text(
        yaml.safe_dump(
            {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"], "execution": {"trace_wait_seconds": 1}}}}}
        )
    )
    unknown = "tr-" + uuid.uuid4().hex
    with WorkerProcess(env, name="redact", concurrency=2, log=tmp_path / "worker.log") as worker:
        done = subprocess.run(
            [sys.executable, "-m", "tracejudge", "gate", unknown, "--config", str(config), "--timeout", "120", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        worker_log = worker.log.read_text(errors="replace")
    assert done.returncode == 2, done.stderr[-2000:]
    # the worker says once what it runs with, the store's password redacted there too
    runtime_line = next((line for line in worker_log.splitlines() if "tracejudge runtime:" in line), "")
    assert f"postgres:***@{PG_HOST}:{PG_PORT}" in runtime_line and "write concurrency 8" in runtime_line, worker_log[-3000:]
    verdict = json.loads(done.stdout)
    # the error's message says why if it is not TRACE_NOT_FOUND (an INVALID_PAYLOAD was seen once in a full run)
    assert verdict["status"] == "error" and verdict["error"]["type"] == "TRACE_NOT_FOUND", (verdict["error"], done.stderr[-2000:])
    message = verdict["error"]["message"]
    assert unknown in message and f"postgres:***@{PG_HOST}:{PG_PORT}" in message  # the store is named, its password is not

    # what the result backend holds for this evaluation, read raw from Redis
    client = redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    stored = [client.get(key) for key in client.scan_iter(match=f"*{verdict['evaluation_id']}*") if client.type(key) == b"string"]
    assert stored and any(b"TRACE_NOT_FOUND" in value for value in stored if value)

    for where, text in {
        "verdict (CLI --json)": done.stdout,
        "CLI stderr": done.stderr,
        "result backend": b"".join(v for v in stored if v).decode(errors="replace"),
        "worker log": worker_log,
    }.items():
        assert SENTINEL not in text, f"the tracking URI's password leaked into the {where}"
    # and the table form the CLI prints without --json
    from tracejudge.cli import format_verdict
    from tracejudge.verdict import QualityVerdict

    assert SENTINEL not in format_verdict(QualityVerdict.model_validate(verdict))
