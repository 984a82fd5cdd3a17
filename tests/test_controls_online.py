"""Automatic pick-up: real ``tracejudge beat`` processes, a real worker process, the sqlite MLflow store.

Traces are recorded before the scanners start, while they run (arriving during
scans), and after a restart, with two beat processes scanning at once. Every
trace must be judged exactly once (one evaluation in the worker's log), and a
trace already judged with the current judges is not enqueued again. A scan that
fails because MLflow does not answer leaves the watermark, and the next scan
covers the window (tested on the scan function with a real Redis).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tracejudge.testing.processes import WorkerProcess


class BeatProcess:
    """A ``tracejudge beat`` subprocess with its own schedule file and log."""

    def __init__(self, env: dict[str, str], directory: Path, name: str) -> None:
        self.env = dict(os.environ, **env)
        self.log = directory / f"{name}.log"
        self.schedule = directory / f"{name}-schedule"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "BeatProcess":
        cmd = [sys.executable, "-m", "tracejudge", "beat", "--schedule", str(self.schedule), "--loglevel", "INFO"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _judged(client, trace_ids):
    done = set()
    for trace_id in trace_ids:
        info = client.get_trace_info(trace_id) if hasattr(client, "get_trace_info") else client.get_trace(trace_id).info
        if (info.tags or {}).get("tracejudge.status"):
            done.add(trace_id)
    return done


def _wait_judged(client, trace_ids, *, timeout: float) -> set[str]:
    give_up = time.monotonic() + timeout
    while True:
        done = _judged(client, trace_ids)
        if done == set(trace_ids) or time.monotonic() > give_up:
            return done
        time.sleep(0.5)


def _record(experiment_id: str, n: int, label: str) -> list[str]:
    import mlflow

    from tracejudge.testing.workflows import record_plain_trace

    mlflow.set_experiment(experiment_id=experiment_id)
    ids = [record_plain_trace(f"{label} question {i}?", f"{label} answer {i}.") for i in range(n)]
    mlflow.flush_trace_async_logging()
    return ids


def test_beat_picks_up_each_new_trace_once(pipeline_env, mlflow_store, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    import tracejudge

    experiment_name = f"online-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(experiment_name, artifact_location=(tmp_path / "artifacts").as_uri())
    config_path = tmp_path / "tracejudge.yaml"
    config_path.write_text(yaml.safe_dump({"observability": {"mlflow": {"judges": {
        "workflow_defaults": ["coherence"],
        "online": {"experiments": [experiment_name], "interval_seconds": 1, "delay_seconds": 0},
    }}}}))
    prefix = f"tjonline-{uuid.uuid4().hex[:8]}:"
    env = {**pipeline_env, "TRACEJUDGE_KEY_PREFIX": prefix, "TRACEJUDGE_CONFIG": str(config_path)}
    client = MlflowClient()

    before = _record(experiment_id, 4, "before")
    worker = WorkerProcess(env, name="online", concurrency=4, log=tmp_path / "worker.log").start()
    beats: list[BeatProcess] = []
    saved = {k: os.environ.get(k) for k in ("TRACEJUDGE_KEY_PREFIX", "TRACEJUDGE_CONFIG")}
    try:
        # one trace judged on request first: the scanners must not enqueue it again
        os.environ.update({"TRACEJUDGE_KEY_PREFIX": prefix, "TRACEJUDGE_CONFIG": str(config_path)})
        from tracejudge.enqueue import _config_cache
        from tracejudge.worker import reset_app

        _config_cache.clear()
        reset_app()
        assert tracejudge.enqueue(before[0]).verdict(timeout=60).status in ("passed", "failed")

        beats = [BeatProcess(env, tmp_path, f"beat{i}").start() for i in range(2)]  # two scanners at once
        during: list[str] = []
        for round_ in range(4):  # traces arriving while the scans run
            during += _record(experiment_id, 3, f"during{round_}")
            time.sleep(0.7)
        first = before + during
        done = _wait_judged(client, first, timeout=120)
        assert done == set(first), f"not judged: {set(first) - done}"

        for beat in beats:  # restart: the watermark and seen keys are in Redis, not in the beat
            beat.stop()
        after = _record(experiment_id, 3, "after")
        beats = [BeatProcess(env, tmp_path, "beat-restarted").start()]
        done = _wait_judged(client, after, timeout=90)
        assert done == set(after), f"not judged after the restart: {set(after) - done}"
        time.sleep(3)  # a few more scans, which must find nothing new
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        from tracejudge.enqueue import _config_cache
        from tracejudge.worker import reset_app

        _config_cache.clear()
        reset_app()

    log = (tmp_path / "worker.log").read_text(errors="replace")
    evaluations = re.findall(r"evaluated (tr-[0-9a-f]+)", log)
    counts = {t: evaluations.count(t) for t in before + during + after}
    assert all(n == 1 for n in counts.values()), {t: n for t, n in counts.items() if n != 1}
    scans = len(re.findall(r"online_scan\[", log))
    print(f"\n{len(counts)} traces, each evaluated once; {scans} scan tasks run by the worker")
    assert scans >= 3


def test_a_failed_scan_resumes_from_the_watermark(pipeline_env, mlflow_store, redis_url):
    import mlflow
    import redis
    from mlflow import MlflowClient

    from tracejudge.config import load_config
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.controls.online import WATERMARK, scan
    from tracejudge.tasks.state import RedisState

    name = f"online-fail-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name)
    config = load_config({"observability": {"mlflow": {"judges": {"online": {"experiments": [name], "delay_seconds": 0}}}}})
    state = RedisState(redis.Redis.from_url(redis_url), prefix=f"tjscan-{uuid.uuid4().hex[:8]}:")
    real = TraceStore(mlflow_store)

    class DownAfterLookup:
        """MLflow answers the experiment lookup, then goes down for the search."""

        def experiment_id(self, *args, **kwargs):
            return real.experiment_id(*args, **kwargs)

        def search_traces(self, *args, **kwargs):
            raise MlflowUnavailable("MLflow tracking server unavailable: Connection refused")

    first = _record(experiment_id, 3, "first")
    sent: list[str] = []
    kwargs = dict(state=state, config=config, fingerprint="x", enqueue=lambda t, w: sent.append(t))
    scan(store=real, **kwargs)
    mark = int(state.watermarks.get(f"{WATERMARK}{experiment_id}"))
    assert sorted(sent) == sorted(first)

    second = _record(experiment_id, 2, "second")
    with pytest.raises(MlflowUnavailable):
        scan(store=DownAfterLookup(), **kwargs)
    assert int(state.watermarks.get(f"{WATERMARK}{experiment_id}")) == mark  # unchanged by the failed scan
    scan(store=real, **kwargs)
    assert sorted(sent) == sorted(first + second)  # the next scan covered it, and nothing twice


def test_unknown_experiment_and_bad_filter_name_the_key(pipeline_env, mlflow_store, redis_url):
    import redis

    from tracejudge.config import load_config
    from tracejudge.mlflow_io.store import BadFilter, TraceStore, UnknownExperiment
    from tracejudge.controls.online import scan
    from tracejudge.tasks.state import RedisState

    store = TraceStore(mlflow_store)
    config = load_config({"observability": {"mlflow": {"judges": {"online": {"experiments": ["no-such-experiment-xyz"]}}}}})
    with pytest.raises(UnknownExperiment) as caught:
        scan(store=store, state=RedisState(redis.Redis.from_url(redis_url), prefix="tjx:"), config=config, fingerprint="x",
             enqueue=lambda t, w: None)
    assert "observability.mlflow.judges.online.experiments[0]" in str(caught.value)
    assert "no-such-experiment-xyz" in str(caught.value)
    with pytest.raises(BadFilter) as bad:
        store.search_traces(["0"], filter_string="tags.env = = 'prod'", max_results=1)
    assert "tags.env = = 'prod'" in str(bad.value) and "MLflow refused the filter" in str(bad.value)


def test_judged_with_the_current_plan_is_read_from_the_feedbacks(pipeline_env, mlflow_store, redis_url):
    """A full evaluation puts the plan's fingerprint in every feedback's metadata and writes no plan tag; a scan
    (``search_traces``: tags and assessments) skips the trace on it. A partial run (``judges=``) records no
    fingerprint, so its trace is still picked up. A full run that reuses every result under a changed plan
    has no feedback to carry the new fingerprint: it tags the trace, and the scan skips it on the tag."""
    import mlflow
    import redis
    from mlflow import MlflowClient

    from tracejudge.config import JudgeRef, load_config
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.tasks import EvaluationRequest, evaluate_request, get_runtime
    from tracejudge.controls.judged import plan_fingerprint
    from tracejudge.controls.online import scan
    from tracejudge.tasks.state import RedisState

    name = f"online-plan-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.create_experiment(name)
    judges = {"workflow_defaults": ["coherence"], "execution": {"trace_wait_seconds": 20},
              "online": {"experiments": [name], "delay_seconds": 0}}
    config = load_config({"observability": {"mlflow": {"judges": judges}}})
    runtime = get_runtime()
    client = MlflowClient()

    def fingerprint(cfg):
        return plan_fingerprint(cfg, runtime.registry.with_config(cfg), default_model=runtime.settings.default_model)

    def scanned(cfg):
        """What a fresh scanner (its own Redis prefix: no watermark, no seen keys) enqueues."""
        sent: list[str] = []
        state = RedisState(redis.Redis.from_url(redis_url), prefix=f"tjplan-{uuid.uuid4().hex[:8]}:")
        scan(store=TraceStore(mlflow_store), state=state, config=cfg, fingerprint=fingerprint(cfg),
             enqueue=lambda t, w: sent.append(t))
        return set(sent)

    def ours(trace_id):
        info = client.get_trace(trace_id).info
        feedbacks = [a for a in info.assessments if getattr(a, "feedback", None) is not None and a.valid is not False]
        return {k: v for k, v in info.tags.items() if k.startswith("tracejudge.")}, [a.metadata.get("tracejudge.plan") for a in feedbacks]

    full, partial, fresh = _record(experiment_id, 3, "plan")
    assert evaluate_request(EvaluationRequest(trace_id=full, config=config), runtime).judged == 1
    partial_run = evaluate_request(EvaluationRequest(trace_id=partial, config=config, judges=[JudgeRef(name="harmfulness")]), runtime)
    assert partial_run.partial and partial_run.judged == 1
    tags, plans = ours(full)
    assert "tracejudge.plan" not in tags and tags["tracejudge.status"] == "passed"
    assert plans == [fingerprint(config)]
    assert ours(partial) == ({}, [None])  # no tags, no fingerprint: not judged with the plan
    assert scanned(config) == {partial, fresh}

    # the same judges, but a per-judge sampling rate: a new fingerprint, and every result reused
    changed = load_config({"observability": {"mlflow": {"judges": {**judges, "sampling": {"judges": {"coherence": 1.0}}}}}})
    assert fingerprint(changed) != fingerprint(config)
    assert scanned(changed) == {full, partial, fresh}
    again = evaluate_request(EvaluationRequest(trace_id=full, config=changed), runtime)
    assert again.judged == 0 and again.reused == 1
    tags, plans = ours(full)
    assert tags["tracejudge.plan"] == fingerprint(changed) and plans == [fingerprint(config)]  # no second feedback
    assert scanned(changed) == {partial, fresh}
