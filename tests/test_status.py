"""`tracejudge status`: exit 0 with a live worker, 1 when messages wait with none (or a bound is passed), 2 when
Redis does not answer; the verdict counts and trace lag come from what real workers recorded."""

from __future__ import annotations

import json
import time

import pytest

from tracejudge.cli import main as cli_main


def _status(capsys, *args: str) -> tuple[int, dict]:
    code = cli_main(["status", "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def _worker(app, queues):
    from celery.contrib.testing.worker import start_worker

    return start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=queues,
                        shutdown_timeout=30, loglevel="WARNING")


def test_messages_waiting_with_no_worker_is_a_problem(pipeline_env, article_trace, capsys):
    import tracejudge

    handle = tracejudge.enqueue(article_trace)  # the online queue; no worker runs
    assert handle.status == "PENDING"
    code, report = _status(capsys)
    assert code == 1 and report["healthy"] is False
    assert report["workers"] == []
    online = report["queues"]["tracejudge.online"]
    assert online["depth"] == 1 and online["consumers"] == [] and online["oldest_age_seconds"] is not None
    assert report["queues"]["tracejudge.gate"]["depth"] == 0
    assert "1 message waits on tracejudge.online and no worker reads it" in report["problems"]
    # a bound on the oldest message's age is a problem of its own
    code, report = _status(capsys, "--max-age", "0")
    assert code == 1 and any(p.startswith("the oldest message on tracejudge.online has waited") for p in report["problems"])
    # the table says the same
    assert cli_main(["status"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEMS" in out and "1 message waits on tracejudge.online and no worker reads it" in out


def test_a_live_worker_is_healthy_and_its_verdicts_are_counted(pipeline_env, article_trace, capsys):
    import tracejudge
    from tracejudge.worker import QUEUES, get_app

    with _worker(get_app(), list(QUEUES)):
        verdict = tracejudge.enqueue(article_trace, gate=True).verdict(timeout=120, raise_on_block=False)
        # the message left by the test before is judged too: wait until the queue is empty and nothing is held
        code, report = _status(capsys)
        deadline = time.monotonic() + 120
        while report["queues"]["tracejudge.online"]["depth"] or report["held_by_workers"]:
            assert time.monotonic() < deadline, report
            code, report = _status(capsys)
    assert code == 0, report["problems"]
    assert report["healthy"] is True and report["problems"] == []
    [worker] = report["workers"]
    assert sorted(worker["queues"]) == sorted(QUEUES) and worker["processes"] == 1 and worker["concurrency"] == 2
    recent = report["last_15_minutes"]
    assert recent["verdicts_total"] >= 1 and recent["verdicts"].get(verdict.status, 0) >= 1
    assert recent["judge_results"] >= len(list(verdict.results()))
    assert recent["trace_lag_p95_seconds"] is not None and recent["trace_lag_p95_seconds"] >= 0
    assert recent["last_verdict_age_seconds"] is not None
    assert report["spend"]["day"] and "spent_usd" in report["spend"]


def test_pickup_lagging_is_a_problem(pipeline_env, redis_url, capsys):
    import redis

    from tracejudge.controls.online import WATERMARK
    from tracejudge.tasks.state import RedisState

    state = RedisState(redis.Redis.from_url(redis_url), prefix=pipeline_env["TRACEJUDGE_KEY_PREFIX"])
    state.watermarks.set(f"{WATERMARK}42", str(int((time.time() - 3600) * 1000)))
    try:
        code, report = _status(capsys, "--max-pickup-lag", "600")
    finally:
        state.watermarks.forget(f"{WATERMARK}42")
    assert code == 1
    [pickup] = report["pickup"]
    assert pickup["experiment"] == "42" and 3590 <= pickup["lag_seconds"] <= 3700
    assert any(p.startswith("pick-up of experiment 42 is ") for p in report["problems"])


def test_redis_down_cannot_tell(monkeypatch, capsys):
    from tracejudge.testing.processes import free_port
    from tracejudge.worker import reset_app

    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.delenv("TRACEJUDGE_BROKER_URL", raising=False)
    reset_app()
    try:
        code = cli_main(["status"])
    finally:
        monkeypatch.undo()
        reset_app()
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith("error: Redis at redis://127.0.0.1:") and "cannot tell" in captured.err


def test_on_rabbitmq_the_depth_comes_from_the_broker(pipeline_env):
    """With RabbitMQ as the broker the depth is RabbitMQ's own count (a passive declare; no age, nothing held)."""
    import os
    import subprocess
    import sys

    from tracejudge.testing.processes import RabbitVhost, rabbit_answers

    if not rabbit_answers():
        pytest.skip("no RabbitMQ at TRACEJUDGE_TEST_AMQP_URL (scripts/ensure-rabbitmq.sh starts one)")
    with RabbitVhost() as vhost:
        env = {**os.environ, **pipeline_env, "TRACEJUDGE_BROKER_URL": vhost.url}

        def status() -> tuple[int, dict]:
            done = subprocess.run([sys.executable, "-m", "tracejudge", "status", "--format", "json"], env=env,
                                  capture_output=True, text=True, timeout=120)
            return done.returncode, json.loads(done.stdout)

        code, report = status()
        assert code == 0 and report["queues"]["tracejudge.online"]["depth"] == 0
        enqueued = subprocess.run([sys.executable, "-m", "tracejudge", "enqueue", "tr-8f2c4e1a9b7d4c3e8a1f0b2c3d4e5f60"],
                                  env=env, capture_output=True, text=True, timeout=120)
        assert enqueued.returncode == 0, enqueued.stderr
        code, report = status()
        assert code == 1 and report["queues"]["tracejudge.online"] == {"depth": 1, "oldest_age_seconds": None, "consumers": []}
        assert report["held_by_workers"] is None
        assert "1 message waits on tracejudge.online and no worker reads it" in report["problems"]

        # the table says the age is unknown, not 0 or blank
        table = subprocess.run([sys.executable, "-m", "tracejudge", "status"], env={**env, "COLUMNS": "200"},
                               capture_output=True, text=True, timeout=120)
        [online] = [line for line in table.stdout.splitlines() if "tracejudge.online" in line and "nobody" in line]
        assert [c.strip() for c in online.strip("│ ").split("│")][:3] == ["tracejudge.online", "1", "unknown"], table.stdout
        # a worker's scrape-time gauges: the depth from RabbitMQ, no age sample (absent, not 0)
        from tracejudge.config import Settings
        from tracejudge.worker.serving import readings

        [queues] = [r for r in readings(Settings.from_env(env)) if r.name == "queues"]
        samples = {(s.name, s.labels["queue"]): s.value for family in queues.collect() for s in family.samples}
        assert samples[("tracejudge_queue_depth", "tracejudge.online")] == 1
        assert samples[("tracejudge_queue_depth", "tracejudge.gate")] == 0
        assert ("tracejudge_oldest_message_age_seconds", "tracejudge.online") not in samples
        assert samples[("tracejudge_oldest_message_age_seconds", "tracejudge.gate")] == 0  # empty: 0
        # a backlog alert rule reads the same depth
        import redis

        from tracejudge.config import load_config
        from tracejudge.monitor.alerts import check_alerts
        from tracejudge.worker import QUEUES

        alerts = load_config({"quality_alerts": {"rules": [{"kind": "backlog", "depth": 0, "queue": "tracejudge.online"}],
                                                 "sinks": [{"type": "log"}]}}).quality_alerts
        saved = os.environ.get("TRACEJUDGE_BROKER_URL")
        os.environ["TRACEJUDGE_BROKER_URL"] = vhost.url
        try:
            [backlog] = check_alerts(alerts, experiment="0", redis=redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"]),
                                     prefix=pipeline_env["TRACEJUDGE_KEY_PREFIX"], queues=QUEUES).outcomes
        finally:
            os.environ.pop("TRACEJUDGE_BROKER_URL") if saved is None else os.environ.__setitem__("TRACEJUDGE_BROKER_URL", saved)
        assert backlog.holds and "tracejudge.online holds 1 message (bound 0)" in backlog.message


def _evaluations_by_status() -> dict[str, float]:
    """``tracejudge_evaluations_total`` of this process, summed over queues, by status."""
    from prometheus_client import REGISTRY

    out: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "tracejudge_evaluations_total":
                out[sample.labels["status"]] = out.get(sample.labels["status"], 0.0) + sample.value
    return out


def test_every_verdict_is_counted_once_whichever_path_ended_it(pipeline_env, article_trace, monkeypatch, capsys):
    """Verdicts that end before a write-back (the trace not found, a bad payload) count in the pipeline's figures
    as the written ones do, by status and by code, and agree with tracejudge_evaluations_total."""
    import uuid

    import tracejudge
    from tracejudge.ops import metrics
    from tracejudge.ops.pipeline import read_window
    from tracejudge.tasks.runtime import reset_runtime
    from tracejudge.worker import QUEUE_ONLINE, QUEUES, TASK_EVALUATE, get_app, reset_app

    import redis

    prefix = f"tjcount-{uuid.uuid4().hex[:8]}:"  # a window of this test's verdicts only
    monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)
    reset_app()
    reset_runtime()
    metrics.enable()
    before = _evaluations_by_status()
    missing = "tr-" + uuid.uuid4().hex
    quick = {"observability": {"mlflow": {"judges": {"execution": {"trace_wait_seconds": 0.5}}}}}
    try:
        with _worker(get_app(), list(QUEUES)):
            judged = tracejudge.enqueue(article_trace, gate=True).verdict(timeout=120, raise_on_block=False)
            again = tracejudge.enqueue(article_trace, gate=True, judges=["harmfulness"]).verdict(timeout=120, raise_on_block=False)
            not_found = tracejudge.enqueue(missing, config=quick, gate=True).verdict(timeout=120, raise_on_block=False)
            bad = [get_app().send_task(TASK_EVALUATE, args=[{"trace": n}], queue=QUEUE_ONLINE).get(timeout=60) for n in (1, 2)]
        counted = {s: n - before.get(s, 0.0) for s, n in _evaluations_by_status().items() if n != before.get(s, 0.0)}
        window = read_window(redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"]), minutes=15, prefix=prefix)
        code, report = _status(capsys)
    finally:
        metrics.disable()
        monkeypatch.undo()
        reset_app()
        reset_runtime()
    assert not_found.status == "error" and not_found.error.type == "TRACE_NOT_FOUND"
    assert [b["error"]["type"] for b in bad] == ["INVALID_PAYLOAD", "INVALID_PAYLOAD"]  # two payloads without a trace id
    assert again.partial
    expected = {judged.status: 1}
    for status in ("partial", "error", "error", "error"):
        expected[status] = expected.get(status, 0) + 1
    assert window.verdicts == expected and window.total == 5
    assert window.verdict_errors == {"INVALID_PAYLOAD": 2, "TRACE_NOT_FOUND": 1}
    assert counted == {s: float(n) for s, n in expected.items()}  # the metric agrees, status by status
    # only a trace's first written verdict has a trace lag (the partial re-run of the judged trace has none: its
    # lag would be the trace's age); status shows the codes
    assert window.lag_count == 1
    recent = report["last_15_minutes"]
    assert recent["verdicts"] == expected and recent["verdict_errors"] == {"INVALID_PAYLOAD": 2, "TRACE_NOT_FOUND": 1}


def test_a_redelivered_evaluation_counts_once_and_two_evaluations_of_one_trace_twice(pipeline_env, monkeypatch):
    """The pipeline's entries are keyed by evaluation: a message delivered again (a later minute, another outcome)
    replaces its own entry; another evaluation of the same trace is an entry of its own. A message without an
    evaluation_id (not sent by enqueue) is its task id's evaluation, not a fresh one per delivery."""
    import uuid

    import redis

    from tracejudge.config import load_config
    from tracejudge.ops.pipeline import read_window, record_verdict
    from tracejudge.payload import EvaluationRequest
    from tracejudge.tasks import run_task
    from tracejudge.tasks.runtime import reset_runtime

    client = redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    prefix = f"tjredeliver-{uuid.uuid4().hex[:8]}:"
    pipe = client.pipeline()
    record_verdict(pipe, trace_id="tr-1", evaluation_id="e-1", status="error", results=0, errors={},
                   code="MLFLOW_UNAVAILABLE", lag_seconds=None, now=600.0, prefix=prefix)
    record_verdict(pipe, trace_id="tr-1", evaluation_id="e-1", status="passed", results=3, errors={}, lag_seconds=5.0,
                   now=665.0, prefix=prefix)  # the same message delivered again, a minute later: it replaces the first
    record_verdict(pipe, trace_id="tr-1", evaluation_id="e-2", status="failed", results=3, errors={"TIMEOUT": 1},
                   lag_seconds=9.0, now=670.0, prefix=prefix)  # an automatic retry: an evaluation of its own
    pipe.execute()
    window = read_window(client, minutes=15, now=700.0, prefix=prefix)
    assert window.verdicts == {"failed": 1, "passed": 1} and window.total == 2
    assert window.verdict_errors == {} and window.judge_results == 6 and window.judge_errors == {"TIMEOUT": 1}
    assert window.lag_count == 2
    assert all(client.ttl(k) > 0 for k in client.scan_iter(f"{prefix}*"))  # nothing kept for ever

    # through the task entry: the same message twice, then another message for the same (missing) trace
    monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix + "task:")
    reset_runtime()
    quick = load_config({"observability": {"mlflow": {"judges": {"execution": {"trace_wait_seconds": 0.2}}}}})
    payload = EvaluationRequest(trace_id="tr-" + uuid.uuid4().hex, config=quick).model_dump(mode="json", exclude_none=True)
    del payload["evaluation_id"]
    try:
        outcomes = [run_task(dict(payload), task_id=task) for task in ("task-a", "task-a", "task-b")]
    finally:
        reset_runtime()
    assert [(o.verdict["error"]["type"], o.verdict["evaluation_id"]) for o in outcomes] == [
        ("TRACE_NOT_FOUND", "task-a"), ("TRACE_NOT_FOUND", "task-a"), ("TRACE_NOT_FOUND", "task-b")]
    window = read_window(client, minutes=15, prefix=prefix + "task:")
    assert window.verdicts == {"error": 2} and window.verdict_errors == {"TRACE_NOT_FOUND": 2}


def test_trace_lag_is_the_first_verdicts_only():
    """A re-judge, a backfill or a retry of a trace that already holds our results adds no lag sample: after a
    backfill of day-old traces, pipeline_lag would otherwise fire with nothing behind."""
    from types import SimpleNamespace

    from mlflow.entities import AssessmentSource, Feedback

    from tracejudge.mlflow_io.writer import KEY
    from tracejudge.tasks.evaluate import first_verdict_lag

    ours = Feedback(name="relevance", value=0.9, metadata={KEY: "k1"}, source=AssessmentSource("LLM_JUDGE", "gpt-4o-mini"))
    fresh = SimpleNamespace(timestamp_ms=1_000_000, duration_ms=2_000, assessments=[])
    judged = SimpleNamespace(timestamp_ms=1_000_000, duration_ms=2_000, assessments=[ours])
    assert first_verdict_lag(fresh, now=1_010.0) == 8.0
    assert first_verdict_lag(judged, now=90_000.0) is None
    assert first_verdict_lag(SimpleNamespace(timestamp_ms=0, duration_ms=0, assessments=[]), now=5.0) is None
