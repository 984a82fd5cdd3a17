"""``rediss://`` with a password: a real TLS redis-server (self-signed CA), a worker and an evaluation."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

import tracejudge
from tracejudge.testing.processes import free_port
from tracejudge.testing.workflows import record_plain_trace

PASSWORD = "tls-pa55word-sentinel"

pytestmark = pytest.mark.skipif(
    not (shutil.which("openssl") and shutil.which("redis-server")), reason="needs openssl and redis-server"
)


@pytest.fixture()
def tls_redis(tmp_path):
    def run(*args: str) -> None:
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=tracejudge-test-ca")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "ext.cnf")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", "server.pem",
         "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no",
         "--requirepass", PASSWORD, "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    import redis

    deadline = time.monotonic() + 30  # a generous bound for a loaded machine; not a speed assertion
    last_error: Exception | None = None
    while True:
        try:
            if redis.Redis.from_url(url + "&ssl_cert_reqs=required").ping():
                break
        except Exception as exc:  # not listening yet, or TLS refused
            last_error = exc
        if proc.poll() is not None:
            pytest.fail(f"the TLS redis-server exited with status {proc.returncode} before it answered")
        if time.monotonic() > deadline:
            proc.terminate()
            pytest.fail(f"the TLS redis-server did not answer a TLS PING with the password within 30 s: {last_error!r}")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_rediss_url_with_password_works_end_to_end(pipeline_env, tls_redis, caplog):
    from celery.contrib.testing.worker import start_worker

    from tracejudge.tasks.runtime import reset_runtime
    from tracejudge.worker import QUEUES, get_app, reset_app

    saved = os.environ["TRACEJUDGE_REDIS_URL"]
    os.environ["TRACEJUDGE_REDIS_URL"] = tls_redis  # no ssl_cert_reqs: tracejudge defaults it to required
    reset_app()
    reset_runtime()
    try:
        app = get_app()
        assert "ssl_cert_reqs=required" in app.conf.broker_url
        trace_id = record_plain_trace("Is TLS on?", "Yes, rediss:// with a password.")
        config = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"], "execution": {"trace_wait_seconds": 20}}}}}
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=list(QUEUES), shutdown_timeout=30, loglevel="WARNING"):
            verdict = tracejudge.enqueue(trace_id, config=config, gate=True).verdict(timeout=60)
        assert verdict.status == "passed"
        assert PASSWORD not in caplog.text
    finally:
        os.environ["TRACEJUDGE_REDIS_URL"] = saved
        reset_app()
        reset_runtime()
