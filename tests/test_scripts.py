"""run-tests.sh stops the redis-server it had to start, and says where that server logged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from tracejudge.testing.processes import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server installed")
def test_run_tests_stops_the_redis_it_started_and_names_its_log(tmp_path):
    port = free_port()
    run_dir = tmp_path / "run"
    env = dict(os.environ, REDIS_PORT=str(port), TRACEJUDGE_RUN_DIR=str(run_dir))
    # ``--version``: the whole script (bootstrap, Redis, pytest, clean-up) without running the suite again
    done = subprocess.run([str(ROOT / "run-tests.sh"), "--version"], env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    log = run_dir / f"redis-{port}.log"
    assert f"log: {log}" in output, output
    assert log.exists()
    assert "/tmp/tracejudge-redis" not in output
    assert f"stopped the redis-server we started" in output, output
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    assert not (run_dir / f"redis-{port}.pid").exists()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server installed")
def test_run_tests_leaves_a_running_redis_alone(tmp_path):
    from tracejudge.testing.processes import RedisServer

    with RedisServer(appendonly=False, directory=tmp_path / "own") as server:
        env = dict(os.environ, REDIS_PORT=str(server.port), TRACEJUDGE_RUN_DIR=str(tmp_path / "run"))
        done = subprocess.run([str(ROOT / "run-tests.sh"), "--version"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "stopped" not in done.stdout
        assert redis.Redis(port=server.port).ping()
