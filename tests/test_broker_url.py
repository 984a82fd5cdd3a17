"""A malformed broker or Redis URL is one line naming the variable, exit 2, in gate, enqueue, worker and beat
(issue 21: ``TRACEJUDGE_REDIS_URL=htp://x`` or a port that is not a number ended in a kombu traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracejudge.cli import main as cli_main
from tracejudge.config import ConfigError, Settings

TRACE = "tr-0123456789abcdef0123456789abcdef"
BAD = [
    ("TRACEJUDGE_REDIS_URL", "htp://x", "must be a redis://"),
    ("TRACEJUDGE_REDIS_URL", "redis://cache:abc/0", "the port must be a number"),
    ("TRACEJUDGE_REDIS_URL", "redis://cache:99999/0", "the port must be a number"),
    ("TRACEJUDGE_BROKER_URL", "amqp://guest:s3cret@rabbit:56x2//", "the port must be a number"),
    ("TRACEJUDGE_RESULT_BACKEND", "redis://:6379/0", "names no host"),
]


@pytest.mark.parametrize(("variable", "url", "problem"), BAD)
def test_settings_name_the_variable(variable, url, problem):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({variable: url})
    assert err.value.path == variable and problem in str(err.value)
    assert "s3cret" not in str(err.value)  # a password in the URL is never shown


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache:6380/1", "redis://[::1]:6379/2", "unix:///run/redis.sock?db=1", "redis://cache"])
def test_good_urls_pass(url):
    assert Settings.from_env({"TRACEJUDGE_REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(("variable", "url", "problem"), BAD[:4])
@pytest.mark.parametrize("command", [["gate", TRACE, "--timeout", "1"], ["enqueue", TRACE]])
def test_gate_and_enqueue_say_it_in_one_line(command, variable, url, problem, monkeypatch, capsys):
    from tracejudge.worker import reset_app

    monkeypatch.setenv(variable, url)
    reset_app()
    try:
        assert cli_main(command) == 2
    finally:
        monkeypatch.undo()
        reset_app()
    err = capsys.readouterr().err
    assert err.startswith(f"error: environment: {variable}: ") and problem in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("url", ["htp://x", "redis://cache:abc/0"])
@pytest.mark.parametrize("command", ["worker", "beat"])
def test_worker_and_beat_say_it_in_one_line(command, url):
    env = {**os.environ, "TRACEJUDGE_REDIS_URL": url}
    env.pop("TRACEJUDGE_BROKER_URL", None)
    done = subprocess.run([sys.executable, "-m", "tracejudge", command], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr[-800:]
    assert done.stderr.startswith("error: environment: TRACEJUDGE_REDIS_URL: "), done.stderr[-800:]
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
