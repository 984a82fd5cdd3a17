"""``tracejudge demo`` keeps to itself: its own worker, its queues and keys under a private prefix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import redis

from tracejudge.testing.processes import RedisServer

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server installed")


def test_demo_runs_on_a_private_prefix_with_its_own_worker(tmp_path):
    with RedisServer(appendonly=False, directory=tmp_path / "redis") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEJUDGE_", "OPENAI_"))}
        env.update(TRACEJUDGE_REDIS_URL=server.url, MLFLOW_TRACKING_URI="")
        done = subprocess.run(
            [sys.executable, "-m", "tracejudge", "demo", "--dir", str(tmp_path / "demo"), "--latency-ms", "0"],
            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert "verdict:" in output, output
        # the research node is a tool-calling agent, judged by the agent judges; its tool calls are counted
        for judge in ("tool_selection", "tool_arguments", "trajectory_efficiency"):
            assert re.search(rf"^research\s+{judge}\s+0\.\d\d", output, re.M), (judge, output)
        assert "tool calls: 2, failed 0, retries 0: serper_search 1" in output and "fetch_page 1" in output, output
        # then a three-turn conversation, judged as a whole by the session judges, its verdict after the trace's
        session = re.search(r"^verdict: session (demo-chat-[0-9a-f]+) \(3 turns\): (PASSED|FAILED|ERROR)", output, re.M)
        assert session, output
        trace_verdict = re.search(r"^verdict: ", output, re.M)
        assert trace_verdict.start() < session.start() and not output[trace_verdict.start():].startswith("verdict: session"), output
        for judge in ("conversation_completeness", "knowledge_retention"):
            assert re.search(rf"^session\s+{judge}\s+0\.\d\d", output, re.M), (judge, output)
        # the closing lines give ready-to-paste commands on the demo's own store (not ./mlflow.db)
        store = re.search(r"MLflow store: (sqlite:///\S+);", output)
        assert store, output
        for command in ("report", "dashboard"):
            assert re.search(rf"MLFLOW_TRACKING_URI={re.escape(store.group(1))} tracejudge {command} --experiment-id \d+$", output, re.M), output
        prefix = re.search(r"keys under (tjdemo-[0-9a-f]+:)", output)
        assert prefix, output
        removed = re.search(r"removed the demo's (\d+) Redis keys \(under (tjdemo-[0-9a-f]+:)\)", output)
        assert removed and int(removed.group(1)) > 0 and removed.group(2) == prefix.group(1), output
        # it wrote only under its prefix, and took all of it away: nothing is left in the user's Redis
        keys = [k.decode() for k in redis.Redis.from_url(server.url).keys("*")]
        assert keys == [], keys
