"""``bench/instrumented_worker.py`` times what the benchmarks report, on the code as it is now.

It wraps functions by name; when the code moves, it must refuse to start rather than time nothing
(it used to patch functions that no longer existed and report empty phases). Here a real
instrumented worker judges one trace, and its per-task record must hold every phase and the
MLflow calls, counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


BENCH = Path(__file__).resolve().parent.parent / "bench" / "instrumented_worker.py"


def test_every_timer_and_whatif_target_exists():
    code = (
        "import runpy; m = runpy.run_path(%r, run_name='instrumented');"
        "m['install'](); m['install_whatifs'](list(m['WHATIFS'])); print('installed')" % str(BENCH)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "installed" in done.stdout, done.stderr[-3000:]


def test_a_missing_target_stops_the_worker_with_its_name():
    code = (
        "import runpy; m = runpy.run_path(%r, run_name='instrumented');"
        "m['TIMED'] = None; m['_target']('tracejudge.tasks.evaluate:no_such_function')" % str(BENCH)
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "tracejudge.tasks.evaluate:no_such_function no longer exists" in done.stderr


def test_instrumented_worker_records_every_phase_of_a_real_evaluation(pipeline_env, tmp_path, monkeypatch):
    import tracejudge
    from tracejudge.testing.workflows import record_article_trace
    from tracejudge.worker import reset_app

    prefix = f"tjbench-{uuid.uuid4().hex[:8]}:"
    phases = tmp_path / "phases"
    phases.mkdir()
    env = {**os.environ, **pipeline_env, "TRACEJUDGE_KEY_PREFIX": prefix, "TJBENCH_PHASES_DIR": str(phases)}
    log = tmp_path / "worker.log"
    cmd = [sys.executable, str(BENCH), "worker", "--processes", "1", "--pool", "threads", "--concurrency", "2", "--loglevel", "INFO",
           "--hostname", f"bench-{prefix}@%h", "--without-gossip", "--without-mingle"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # start-up on a loaded machine; not a speed assertion
        while "ready." not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)
        reset_app()
        trace_id = record_article_trace()
        config = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"], "execution": {"trace_wait_seconds": 20}}}}}
        verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=120)
        assert verdict.status == "passed"
        records = []
        for _ in range(100):  # the record is written after the task's result is stored
            records = [json.loads(line) for path in phases.glob("phases-*.jsonl") for line in path.read_text().splitlines()]
            if records:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        monkeypatch.undo()
        reset_app()
    assert len(records) == 1, records
    record = records[0]
    assert record["trace_id"] == trace_id and record["evaluate"] > 0
    for phase in ("get_trace", "redis_cache", "judges", "write_back", "lock", "lock_held"):
        assert record["phases"].get(phase, 0) > 0, (phase, record["phases"])
    # 3 targets x coherence = 3 feedback writes, counted under the name the harness reads
    assert record["ops"]["log_feedback"][0] == 3, record["ops"]
    assert record["ops"]["get_trace"][0] >= 1
