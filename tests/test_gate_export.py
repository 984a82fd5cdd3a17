"""A gate (``enqueue(..., gate=True)``) has MLflow export the caller's trace at once.

MLflow batches finished spans for up to ``MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS``
(5 s by default) before writing a trace, and the worker waits for it that long. Here a
producer process runs with that interval at 10 minutes: a trace enqueued without the gate is
not in the store right after, a gated one is there within the test's generous limit (it could
only be there that early because ``enqueue`` flushed it). bench/gate_latency.py measures
the latency itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

PRODUCER = r"""
import json, time
import mlflow
from mlflow import MlflowClient
import tracejudge
from tracejudge.testing.workflows import record_article_trace

mlflow.set_experiment("gate-export")
client = MlflowClient()

def stored(trace_id):
    try:
        return client.get_trace(trace_id) is not None
    except Exception:
        return False

background = record_article_trace(topic="background")
tracejudge.enqueue(background, gate=False)
background_stored = stored(background)

gated = record_article_trace(topic="gated")
tracejudge.enqueue(gated, gate=True)
deadline = time.monotonic() + 60
while not stored(gated) and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"background_stored_at_once": background_stored, "gated_stored": stored(gated)}))
"""


def test_a_gated_trace_reaches_the_store_without_mlflows_batch_delay(tmp_path, redis_url):
    env = {
        "PATH": "/usr/bin:/bin",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS": "600000",  # MLflow alone would write after 10 min
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TRACEJUDGE_REDIS_URL": redis_url,
        "TRACEJUDGE_KEY_PREFIX": f"tjgate-{uuid.uuid4().hex[:8]}:",
        "TRACEJUDGE_LLM_BASE_URL": "http://127.0.0.1:9/v1",
    }
    done = subprocess.run([sys.executable, "-c", PRODUCER], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"background_stored_at_once": False, "gated_stored": True}, done.stderr[-3000:]
