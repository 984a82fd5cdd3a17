"""Operating tracejudge, against real processes: metrics, probes, the loop watchdog, the supervisor.

Each test builds its own stack (``tests/chaos.py``'s :class:`ChaosStack`: a private redis-server, a
sqlite MLflow store, the fake LLM over HTTP) and runs ``tracejudge worker`` subprocesses with
``TRACEJUDGE_METRICS_PORT``; what they check is read from outside, as an operator would: the
``/metrics`` page, the probes' status codes, exit statuses, verdicts and the assessments in MLflow.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.chaos import JUDGES_PER_TRACE, ChaosStack, audit_traces, chaos_config, count_ready, wait_for_verdicts, wait_until
from tracejudge.testing.processes import WorkerProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")]

REPO = Path(__file__).resolve().parents[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


def worker(stack: ChaosStack, name: str, *, processes: int = 1, concurrency: int = 4, wait: bool = True, **env: str) -> WorkerProcess:
    from tracejudge.mlflow_io.store import WORKER_ENVIRONMENT

    process = WorkerProcess(
        {**WORKER_ENVIRONMENT, **stack.env(**env)}, name=name, concurrency=concurrency, processes=processes,
        log=stack.workdir / f"{name}.log",
    )
    stack.workers.append(process)
    return process.start(wait=wait)


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_metrics_of_two_worker_processes_count_a_real_run_exactly():
    traces = 6
    with ChaosStack() as stack:
        port = free_port()
        w = worker(stack, "metrics", processes=2, TRACEJUDGE_METRICS_PORT=str(port))
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=180, what="both processes consuming")
        trace_ids = stack.record(traces)
        outcome = wait_for_verdicts(stack.enqueue(trace_ids), timeout=300)
        assert not outcome.failures, outcome.failures
        llm = stack.llm.stats()
        samples = scrape(port)

        # one evaluation per verdict, by status; its duration and the trace's lag observed once each
        statuses = outcome.statuses
        for status, n in statuses.items():
            assert total(samples, "tracejudge_evaluations_total", queue="tracejudge.online", status=status) == n, samples
        assert total(samples, "tracejudge_evaluations_total") == traces
        assert total(samples, "tracejudge_evaluation_seconds_count", queue="tracejudge.online") == traces
        assert total(samples, "tracejudge_trace_lag_seconds_count", queue="tracejudge.online") == traces
        # every judge result is a scored call, one LLM request each, with the fake LLM's tokens
        assert total(samples, "tracejudge_judge_calls_total", outcome="scored") == traces * JUDGES_PER_TRACE
        assert llm["requests"] == traces * JUDGES_PER_TRACE
        assert total(samples, "tracejudge_judge_call_seconds_count") == llm["requests"]
        assert total(samples, "tracejudge_llm_tokens_total", kind="prompt") == llm["prompt_tokens"]
        assert total(samples, "tracejudge_llm_tokens_total", kind="completion") == llm["completion_tokens"]
        # MLflow: one read per trace, one assessment per result; the queues are empty
        assert total(samples, "tracejudge_mlflow_calls_total", op="get_trace", outcome="ok") == traces
        assert total(samples, "tracejudge_mlflow_calls_total", op="log_assessment", outcome="ok") == traces * JUDGES_PER_TRACE
        assert total(samples, "tracejudge_queue_depth") == 0
        assert ("tracejudge_event_loop_lag_seconds", ()) in samples
        assert not [k for k in samples if "trace_id" in dict(k[1]) or any(t in str(k[1]) for t in trace_ids)]

        # the same traces again: every result is reused from the trace, no LLM request
        again = wait_for_verdicts(stack.enqueue(trace_ids), timeout=300)
        assert not again.failures, again.failures
        samples = scrape(port)
        assert stack.llm.stats()["requests"] == llm["requests"]
        assert total(samples, "tracejudge_judge_calls_total", outcome="reused") == traces * JUDGES_PER_TRACE
        assert total(samples, "tracejudge_judge_calls_total", outcome="scored") == traces * JUDGES_PER_TRACE
        assert total(samples, "tracejudge_evaluations_total") == 2 * traces
        w.terminate(timeout=120)


def test_a_judge_blocking_the_event_loop_turns_healthz_503_the_worker_exits_and_the_judge_is_quarantined(tmp_path):
    flag = tmp_path / "blocked"
    env = {
        "TRACEJUDGE_JUDGE_MODULES": "tests.blocking_judges",
        "TJ_TEST_BLOCK_FLAG": str(flag),
        "TRACEJUDGE_LOOP_BLOCK_SECONDS": "2",
        "PYTHONPATH": str(REPO),
    }
    config = chaos_config()
    judges = config["observability"]["mlflow"]["judges"]
    judges["workflow_defaults"] = [{"name": "blocks_loop", "threshold": 0.5}, {"name": "harmfulness", "threshold": 0.5}]
    judges["node_overrides"] = {}
    with ChaosStack(visibility_timeout=5) as stack:
        port = free_port()
        w1 = worker(stack, "w1", TRACEJUDGE_METRICS_PORT=str(port), **env)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        [trace_id] = stack.record(1)
        [handle] = stack.enqueue([trace_id], config=config)
        seen: list[tuple[int, str]] = []

        def unhealthy_or_gone() -> bool:
            if w1.proc.poll() is not None:
                return True
            try:
                seen.append(get(f"http://127.0.0.1:{port}/healthz"))
            except OSError:
                return False
            return seen[-1][0] == 503

        wait_until(unhealthy_or_gone, timeout=120, what="/healthz 503 or the worker gone", poll=0.05)
        assert seen and seen[-1][0] == 503, seen[-3:]
        assert "blocked" in seen[-1][1]
        assert w1.proc.wait(timeout=60) == 70  # it exits by itself, non-zero, for its supervisor to restart it
        log = w1.log.read_text()
        assert "event loop has been blocked" in log and "blocks_loop" in log  # says where the loop is stuck
        assert "quarantine" in log
        assert flag.exists() and not handle.ready()

        # the message comes back (the dead worker's lease lapsed); a fresh worker answers the blocking judge
        # LOOP_BLOCKED without running it, judges the rest, and stays up
        flag.unlink()
        w2 = worker(stack, "w2", **env)
        outcome = wait_for_verdicts([handle], timeout=180)
        assert not outcome.failures, outcome.failures
        verdict = outcome.verdicts[trace_id]
        results = [r for t in verdict.targets for r in t.judges]
        blocked = [r for r in results if r.name == "blocks_loop"]
        assert blocked and all(r.error is not None and r.error.type == "LOOP_BLOCKED" for r in blocked), blocked
        assert "blocked a worker's event loop" in blocked[0].error.message
        assert all(r.score is not None for r in results if r.name == "harmfulness")
        assert verdict.status == "error"
        assert not flag.exists() and w2.proc.poll() is None
        audit = audit_traces([trace_id])  # one assessment per (span, judge): the stuck delivery wrote nothing
        assert audit.duplicates == 0 and audit.written == len(results), audit


def test_the_supervisor_restarts_a_killed_process_and_sigterm_drains_every_process():
    traces, latency_ms = 8, 1500
    with ChaosStack(visibility_timeout=5) as stack:
        port = free_port()
        w = worker(stack, "sup", processes=2, concurrency=2, TRACEJUDGE_METRICS_PORT=str(port))
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=180, what="both processes consuming")
        first = children(w.pid)
        assert len(first) == 2, first

        # a process that dies is started again, and the port serves both again
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(children(w.pid)) == 2 and victim not in children(w.pid), timeout=60, what="a new process")
        wait_until(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=180, what="the new process consuming")
        assert "starting it again" in w.log.read_text()

        # SIGTERM with evaluations running in both processes: they finish, the rest stays queued
        slow = f"[[tj:latency={latency_ms}]]"
        trace_ids = stack.record(traces, research=f"Slow findings {slow}", article=f"Slow article {slow}")
        handles = stack.enqueue(trace_ids)
        wait_until(lambda: stack.llm.stats()["in_flight"] >= 3, timeout=120, what="evaluations running in both processes")
        running = children(w.pid)
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=180) == 0
        assert not any(alive(pid) for pid in running)
        done = count_ready(handles)
        assert done >= 1
        assert stack.unacked() == 0  # nothing left held: the running ones finished and were acknowledged
        assert done + stack.queued() == traces

        # a new worker judges the rest; nothing lost, nothing twice
        worker(stack, "after")
        outcome = wait_for_verdicts(handles, timeout=300)
        assert not outcome.failures, outcome.failures
        audit = audit_traces(trace_ids)
        assert audit.duplicates == 0 and audit.lost == 0 and audit.written == traces * JUDGES_PER_TRACE, audit
