"""``tracejudge backfill`` against the real pipeline (Redis, a Celery worker, the sqlite MLflow store).

Counts (already judged, filtered, sampled out), dry run, ``--wait`` with the
pass rate, ``--force``, an interrupted run resumed from its Redis checkpoint,
holding back on a deep queue, and a clear error for an unreachable MLflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml

import tracejudge
from tracejudge.cli import main


@pytest.fixture()
def experiment(mlflow_store, tmp_path):
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    name = f"backfill-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = [record_plain_trace(f"backfill question {i}?", f"backfill answer {i}.") for i in range(10)]
    mlflow.flush_trace_async_logging()
    mlflow.set_experiment("tracejudge-tests")
    config = tmp_path / "tracejudge.yaml"
    config.write_text(yaml.safe_dump({"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"]}}}}))
    return experiment_id, ids, str(config)


def _judged_count(trace_ids):
    """Traces whose feedbacks carry a plan fingerprint (what a full evaluation records)."""
    import mlflow

    def judged(trace_id):
        info = mlflow.get_trace(trace_id).info
        return any((a.metadata or {}).get("tracejudge.plan") for a in info.assessments if getattr(a, "feedback", None) is not None)

    return sum(1 for t in trace_ids if judged(t))


def test_backfill_counts_waits_and_skips_what_is_judged(worker, experiment, capsys):
    experiment_id, ids, config = experiment
    for trace_id in ids[:3]:  # judged already: backfill must skip these
        tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "looked at 10 traces: would enqueue 7, skipped as already judged 3" in out
    assert "sample of trace ids: " in out and ids[3] in out
    assert _judged_count(ids) == 3  # a dry run enqueues nothing

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config, "--wait", "120"]) == 0
    out = capsys.readouterr().out
    assert "enqueued 7, skipped as already judged 3" in out
    assert "pass rate: " in out and "of 7 judged" in out and "errors: none" in out
    assert _judged_count(ids) == 10

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config]) == 0
    assert "enqueued 0, skipped as already judged 10" in capsys.readouterr().out

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config, "--force", "--max", "2", "--wait", "60"]) == 0
    assert "looked at 2 traces: enqueued 2" in capsys.readouterr().out

    assert main(["backfill", "--experiment-id", experiment_id, "--config", config, "--sample", "0", "--force", "--dry-run"]) == 0
    assert "would enqueue 0, skipped as already judged 0, by filter 0, by sampling 10" in capsys.readouterr().out


def test_backfill_resumes_from_its_checkpoint(worker, experiment, pipeline_env, redis_url):
    import redis

    from tracejudge.backfill import run_backfill
    from tracejudge.enqueue import resolve_config
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks.state import RedisState

    experiment_id, ids, config_path = experiment
    config = resolve_config(config_path)
    state = RedisState(redis.Redis.from_url(redis_url), prefix=pipeline_env["TRACEJUDGE_KEY_PREFIX"])
    sent: list[str] = []

    def interrupted(trace_id):
        if len(sent) == 6:
            raise KeyboardInterrupt  # Ctrl-C on the second page
        sent.append(trace_id)
        return tracejudge.enqueue(trace_id, config=config_path)

    kwargs = dict(store=TraceStore(pipeline_env["MLFLOW_TRACKING_URI"]), state=state, config=config,
                  experiment_id=experiment_id, fingerprint="-", checkpoint=f"resume-{uuid.uuid4().hex[:6]}", page_size=4)
    with pytest.raises(KeyboardInterrupt):
        run_backfill(enqueue=interrupted, **kwargs)
    resumed_sent: list[str] = []
    result = run_backfill(enqueue=lambda t: resumed_sent.append(t) or tracejudge.enqueue(t, config=config_path), resume=True, **kwargs)
    assert result.resumed
    assert len(resumed_sent) == 6 and not set(resumed_sent) & set(sent[:4])  # from the page after the last finished one
    assert set(sent) | set(resumed_sent) == set(ids)
    again = run_backfill(enqueue=lambda t: pytest.fail("finished backfill enqueued again"), resume=True, **kwargs)
    assert again.resumed and again.counts.enqueued == result.counts.enqueued
    for handle in result.handles:
        handle.verdict(timeout=60, raise_on_block=False)


def test_backfill_holds_back_while_the_queue_is_deep(experiment, pipeline_env, redis_url):
    import redis

    from tracejudge.backfill import run_backfill
    from tracejudge.config import load_config
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks.state import RedisState

    experiment_id, ids, _ = experiment
    r = redis.Redis.from_url(redis_url)
    prefix = f"tjbp-{uuid.uuid4().hex[:6]}:"
    queue = "held.queue"
    r.rpush(f"{prefix}{queue}", *[b"x"] * 5)
    notes: list[str] = []
    sent: list[str] = []

    def drain():
        time.sleep(1.0)
        r.delete(f"{prefix}{queue}")  # the workers caught up

    threading.Thread(target=drain, daemon=True).start()
    result = run_backfill(
        store=TraceStore(pipeline_env["MLFLOW_TRACKING_URI"]), state=RedisState(r, prefix=prefix), config=load_config({}),
        experiment_id=experiment_id, fingerprint="-",
        checkpoint="bp", enqueue=lambda t: sent.append(t), max_queue=2, queue=queue, progress=lambda c, n: notes.append(n),
    )
    assert any("holding back" in n for n in notes)
    assert result.counts.enqueued == len(sent) == len(ids)


def test_backfill_says_mlflow_is_unreachable_with_the_uri_redacted(pipeline_env):
    from tracejudge.testing.processes import free_port

    env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://admin:hunter2@127.0.0.1:{free_port()}")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tracejudge", "backfill", "--experiment-id", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    print(f"\nunreachable MLflow reported after {time.perf_counter() - started:.2f} s (process start included)")
    assert proc.returncode == 2
    assert "MLflow at http://admin:***@127.0.0.1" in proc.stderr and "unreachable" in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_backfill_bad_input_names_the_option(worker, experiment, capsys):
    experiment_id, _, config = experiment
    assert main(["backfill", "--experiment-id", "no-such-experiment-abc", "--config", config]) == 2
    assert "--experiment-id: unknown experiment 'no-such-experiment-abc'" in capsys.readouterr().err
    assert main(["backfill", "--experiment-id", experiment_id, "--filter", "tags.env = = 'x'", "--config", config]) == 2
    assert "MLflow refused the filter" in capsys.readouterr().err
    assert main(["backfill", "--experiment-id", experiment_id, "--sample", "1.5"]) == 2
    assert "--sample: must be a number from 0 to 1" in capsys.readouterr().err
    assert main(["backfill", "--experiment-id", experiment_id, "--since", "last tuesday"]) == 2
    assert "--since: cannot read 'last tuesday'" in capsys.readouterr().err


def test_budget_command_prints_the_spend_by_model_and_judge(pipeline_env, redis_url, capsys, monkeypatch):
    import asyncio
    import json

    import redis.asyncio

    from tracejudge.controls.budget import RedisBudget

    prefix = f"tjbudgetcli-{uuid.uuid4().hex[:6]}:"
    monkeypatch.setenv("TRACEJUDGE_KEY_PREFIX", prefix)

    async def spend():
        client = redis.asyncio.Redis.from_url(redis_url)
        budget = RedisBudget(client, daily_usd=1.0, prefix=prefix)
        for judge, usd in (("coherence", 0.002), ("relevance", 0.001)):
            reservation = await budget.reserve(model="gpt-4o-mini", judge=judge, usd=usd * 2)
            await budget.settle(reservation, usd=usd)
        await client.aclose()

    asyncio.run(spend())
    assert main(["budget", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["spent_usd"] == pytest.approx(0.003)
    assert report["by_judge"] == {"coherence": pytest.approx(0.002), "relevance": pytest.approx(0.001)}
    assert main(["budget"]) == 0
    out = capsys.readouterr().out
    assert "by model" in out and "gpt-4o-mini" in out and "coherence" in out
    assert "workers count spend here only while judges.budget.daily_usd is set" in " ".join(out.split())  # no budget set


def test_budget_command_refuses_a_day_it_cannot_read(pipeline_env, capsys):
    assert main(["budget", "--day", "yesterday"]) == 2
    assert "--day: cannot read 'yesterday'; give a UTC day as YYYY-MM-DD" in capsys.readouterr().err


def test_check_mlflow_waits_for_a_slow_local_store_but_not_for_a_silent_server():
    """A sqlite store's first open can take seconds on a busy machine: that is not "did not answer"."""
    from tracejudge.backfill import BackfillError, check_mlflow

    class SlowClient:
        def search_experiments(self, max_results):
            time.sleep(2.0)  # longer than the 1.5 s server probe
            return []

    class SlowStore:
        client = SlowClient()

    check_mlflow(SlowStore(), "sqlite:////tmp/nowhere/mlflow.db")  # waits, no error
    with pytest.raises(BackfillError, match=r"MLflow at http://127\.0\.0\.1:5000 did not answer within 1\.5 s"):
        check_mlflow(SlowStore(), "http://127.0.0.1:5000")
