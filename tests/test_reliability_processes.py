"""Reliability against real processes on loopback: workers killed and stopped, Redis and MLflow restarted.

Every test builds its own private stack (:class:`tests.chaos.ChaosStack`):
a ``redis-server`` on a free port (append-only file on), an MLflow store (a sqlite
file, or a real ``mlflow server``), the fake LLM server, and ``tracejudge worker``
subprocesses. The promises are checked in counts, never in seconds: every trace
gets a verdict and exactly one feedback assessment per (span, judge), and judge
calls are not repeated for work already judged. Recovery times are printed
(``pytest -s``) for people to read.

The scenarios themselves live in ``tests/chaos.py`` and are shared
with ``bench/chaos.py``, which runs them at full size (100+ traces, 30 s outage).
"""

from __future__ import annotations

import shutil

import pytest

import tracejudge
from tracejudge.verdict import QualityVerdict
from tests.chaos import (
    JUDGES_PER_TRACE,
    ChaosStack,
    ScenarioResult,
    audit_traces,
    chaos_config,
    run_graceful_shutdown,
    run_mlflow_outage,
    run_long_evaluation,
    run_redis_restart,
    run_worker_kill,
)

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def show(result: ScenarioResult) -> None:
    recovery = "-" if result.recovery_seconds is None else f"{result.recovery_seconds:.1f} s"
    print(f"\n[{result.scenario}] recovery (failure -> last verdict): {recovery}; "
          f"LLM calls {result.llm_requests} (plan {result.expected_llm_requests}); "
          f"{ {k: v for k, v in result.notes.items() if k != 'worker_logs'} }")


def assert_exact(result: ScenarioResult) -> None:
    """A verdict (not an error) for every trace, and exactly one assessment per (span, judge)."""
    assert result.verdicts == result.traces, result.describe()
    assert not result.error_verdicts, result.describe()
    assert result.audit.duplicates == 0, result.describe()
    assert result.audit.lost == 0, result.describe()
    assert result.audit.unexpected == 0, result.describe()
    assert result.audit.written == result.audit.expected == result.traces * JUDGES_PER_TRACE, result.describe()
    for verdict in result.outcome.verdicts.values():
        assert verdict.judged + verdict.reused == JUDGES_PER_TRACE, result.describe()


def test_worker_sigkilled_mid_run_with_default_settings_loses_and_duplicates_nothing():
    # default settings: the killed worker's lease lapses, its evaluations go to the new worker
    result = run_worker_kill(traces=100, latency_ms=150, concurrency=8)
    show(result)
    # the kill really hit a worker with work in flight and work still queued
    assert result.notes["unacked_at_kill"] > 0, result.describe()
    assert result.notes["verdicts_before_kill"] < result.traces, result.describe()
    assert_exact(result)
    # work the killed worker had judged but not cached may be judged again; nothing else is
    assert result.llm_requests >= result.expected_llm_requests


def test_an_evaluation_longer_than_the_visibility_timeout_is_not_redelivered_while_its_worker_lives():
    # default settings (visibility timeout 15 s); judge calls of 40 s; a second, idle worker runs
    # kombu's restore sweep every 3 s and would take the message if the lease were not renewed
    result = run_long_evaluation(seconds=40, workers=2)
    show(result)
    assert_exact(result)
    assert result.notes["deliveries"] == 1, result.describe() + "\n" + result.notes.get("worker_logs", "")
    assert result.llm_requests == result.expected_llm_requests, result.describe()


def test_duplicate_delivery_one_after_the_other_and_at_the_same_time():
    from tracejudge.config import load_config
    from tracejudge.payload import EvaluationRequest
    from tracejudge.worker import QUEUE_ONLINE, TASK_EVALUATE, get_app

    slow = "[[tj:latency=1500]]"
    with ChaosStack() as stack:
        first, second = stack.record(2, research=f"Findings {slow}", article=f"Article {slow}")
        config = load_config(chaos_config())

        def payload(trace_id: str) -> dict:
            return EvaluationRequest(trace_id=trace_id, config=config).model_dump(mode="json", exclude_none=True)

        def send(body: dict):
            return get_app().send_task(TASK_EVALUATE, args=[body], queue=QUEUE_ONLINE)

        # one slot each, so two messages sent together run on the two workers at the same time
        wa = stack.worker("wa", concurrency=1)
        wb = stack.worker("wb", concurrency=1)

        # (a) the same payload twice, one after the other
        body = payload(first)
        assert send(body).get(timeout=60)["status"] == "passed"
        calls = stack.llm_requests()
        assert calls == JUDGES_PER_TRACE
        before = {a.assessment_id for a in _feedbacks(first)}
        # the task result is compact (fields at their defaults left out): read it as the handle does
        again = QualityVerdict.model_validate(send(body).get(timeout=60))
        assert again.status == "passed" and again.judged == 0 and again.reused == JUDGES_PER_TRACE
        assert stack.llm_requests() == calls, "the second delivery called the LLM again"
        assert {a.assessment_id for a in _feedbacks(first)} == before, "the second delivery wrote assessments"

        # (b) the same evaluation delivered twice at once (two task ids), on two workers
        body = payload(second)
        results = [send(body), send(body)]
        verdicts = [QualityVerdict.model_validate(r.get(timeout=90)) for r in results]
        assert all(v.status == "passed" for v in verdicts)
        assert sorted(v.judged for v in verdicts) == [0, JUDGES_PER_TRACE], [v.headline() for v in verdicts]
        assert stack.llm_requests() - calls == JUDGES_PER_TRACE, "both deliveries judged"
        audit = audit_traces([first, second])
        assert audit.exact, audit.problems
        # each worker got one of the two deliveries of (b): they really overlapped
        received = [sum(f"[{r.id}] received" in w.log.read_text(errors="replace") for r in results) for w in (wa, wb)]
        assert received == [1, 1], stack.log_tail()


def test_redis_restarted_mid_run_workers_reconnect_and_enqueue_fails_fast_meanwhile():
    result = run_redis_restart(traces=40, down=4, latency_ms=150, concurrency=8)
    show(result)
    error = result.notes["enqueue_error"]
    assert isinstance(error, tracejudge.EnqueueError), result.describe()
    message = str(error)
    assert "could not enqueue trace tr-" in message
    assert "is unreachable" in message and "127.0.0.1" in message and "Connection refused" in message
    assert result.notes["unacked_at_restart"] > 0, "the restart did not hit evaluations in flight"
    assert result.notes["broker_reconnects"] >= 1, result.describe()
    assert_exact(result)
    # work in flight waited out the restart instead of failing or starting over
    assert result.llm_requests == result.expected_llm_requests, result.describe()


def test_graceful_shutdown_finishes_in_flight_and_leaves_the_rest_queued():
    result = run_graceful_shutdown(traces=12, judge_latency_ms=2000, concurrency=4)
    show(result)
    notes = result.notes
    assert notes["exit_code"] == 0, result.describe()
    assert notes["running_at_term"] > 0 and notes["queued_at_term"] > 0, result.describe()
    # in-flight evaluations finished (with all their judge calls), the others are still queued, none hangs unacked
    assert notes["verdicts_after_exit"] >= notes["verdicts_at_term"] + notes["running_at_term"], result.describe()
    assert notes["verdicts_after_exit"] + notes["queued_after_exit"] == result.traces, result.describe()
    assert notes["unacked_after_exit"] == 0, result.describe()
    assert notes["llm_requests_after_exit"] == notes["verdicts_after_exit"] * JUDGES_PER_TRACE, result.describe()
    assert_exact(result)
    assert result.llm_requests == result.expected_llm_requests, result.describe()


def test_mlflow_server_down_mid_run_retries_without_rejudging():
    result = run_mlflow_outage(traces=30, outage=12, latency_ms=150, concurrency=8)
    show(result)
    assert result.notes["verdicts_before_outage"] < result.traces, result.describe()
    assert result.notes["task_retries"] > 0, "no evaluation met the outage"
    assert_exact(result)
    assert result.llm_requests == result.expected_llm_requests, result.describe()


def _feedbacks(trace_id: str) -> list:
    from mlflow import MlflowClient

    trace = MlflowClient().get_trace(trace_id)
    return [a for a in trace.info.assessments if getattr(a, "feedback", None) is not None]
