"""Results a user can trust (issue "Trust the numbers", items 1, 4, 5, 14), through a real worker and MLflow store.

* a transient judge failure is judged again next time, and the new result supersedes the failed assessment;
* two deliveries racing over one trace never write an assessment twice;
* the overall deadline counts from when judging starts, not from the task's start;
* a partial run (``judges=``) writes its assessments but leaves the full evaluation's verdict, tags and report.
"""

from __future__ import annotations

import random
import threading
import time

import mlflow
from mlflow import MlflowClient

import tracejudge
from tracejudge.testing.workflows import record_article_trace, record_plain_trace

CONFIG = {
    "observability": {
        "mlflow": {
            "judges": {
                "workflow_defaults": [{"name": "harmfulness", "threshold": 0.8}],
                "node_overrides": {
                    "research": [{"name": "relevance", "threshold": 0.8}, {"name": "groundedness", "threshold": 0.7}],
                    "write": [{"name": "coherence", "threshold": 0.75}],
                },
                "execution": {"timeout_seconds": 5, "trace_wait_seconds": 20},
            }
        }
    },
}
JUDGES_PER_TRACE = 6  # harmfulness on 3 targets, relevance + groundedness on research, coherence on write


def assessments(trace_id: str) -> list:
    return [a for a in MlflowClient().get_trace(trace_id).info.assessments if getattr(a, "feedback", None) is not None]


def wait_for(predicate, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_transient_failure_is_judged_again_and_superseded(worker, fake_llm):
    trace_id = record_plain_trace("What is 2+2?", "4")
    config = {"observability": {"mlflow": {"judges": {"workflow_defaults": ["coherence"],
                                                      "execution": {"max_attempts": 2, "trace_wait_seconds": 20}}}}}
    fake_llm.script("503", "503")  # both attempts of the one judge call fail
    first = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert first.status == "error"
    assert [r.error.type for r in first.errors] == ["PROVIDER_ERROR"]

    calls = fake_llm.stats()["requests"]
    second = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert fake_llm.stats()["requests"] - calls == 1  # judged again: the LLM is healthy now
    assert second.status == "passed" and second.judged == 1 and second.reused == 0

    written = assessments(trace_id)
    valid = [a for a in written if a.valid is not False]
    invalid = [a for a in written if a.valid is False]
    assert len(valid) == 1 and valid[0].value == second.results()[0].score
    assert len(invalid) == 1 and invalid[0].error.error_code == "PROVIDER_ERROR"
    assert valid[0].overrides == invalid[0].assessment_id

    third = tracejudge.enqueue(trace_id, config=config).verdict(timeout=60, raise_on_block=False)
    assert third.reused == 1 and third.judged == 0  # a score is final: reused, no new call
    assert fake_llm.stats()["requests"] - calls == 1


def test_racing_deliveries_never_write_an_assessment_twice(pipeline_env, fake_llm):
    """Two deliveries of each trace, the second started at a random moment of the first, over many rounds."""
    from tracejudge.config import load_config
    from tracejudge.tasks import EvaluationRequest, evaluate_request, get_runtime

    runtime = get_runtime()
    config = load_config(CONFIG)
    rng = random.Random(7)
    rounds = 16
    duplicates = {}
    # how long one delivery takes here: the second one starts anywhere in the first, from its read of the trace
    # to its write-back (the one read happens under the lock, so the second must see all the first wrote)
    calibration = record_article_trace(article="Calibration article.")
    mlflow.flush_trace_async_logging()
    started = time.perf_counter()
    evaluate_request(EvaluationRequest(trace_id=calibration, config=config), runtime)
    took = time.perf_counter() - started
    for round_ in range(rounds):
        trace_id = record_article_trace(article=f"Round {round_}: an article.")
        mlflow.flush_trace_async_logging()
        errors: list[BaseException] = []

        def deliver(delay: float) -> None:
            time.sleep(delay)  # where in the other delivery this one starts (scenario, not a wait for a result)
            try:
                evaluate_request(EvaluationRequest(trace_id=trace_id, config=config), runtime)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=deliver, args=(0.0,)), threading.Thread(target=deliver, args=(took * rng.uniform(0.0, 1.0),))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        valid = [a for a in assessments(trace_id) if a.valid is not False]
        per_key = {}
        for a in valid:
            per_key.setdefault((a.span_id, a.name), []).append(a)
        assert len(per_key) == JUDGES_PER_TRACE
        extra = sum(len(v) - 1 for v in per_key.values())
        if extra:
            duplicates[trace_id] = extra
    assert not duplicates, f"assessments written twice in {len(duplicates)} of {rounds} rounds: {duplicates}"


def test_the_overall_deadline_starts_when_judging_starts(worker):
    """The worker waits 3 s for a late trace; a 2 s overall timeout must still leave the judges their time."""
    config = {
        "observability": {"mlflow": {"judges": {
            **CONFIG["observability"]["mlflow"]["judges"],
            "execution": {"timeout_seconds": 5, "trace_wait_seconds": 30, "overall_timeout_seconds": 2},
        }}},
    }
    handles = []

    def enqueue_then_finish_late(trace_id: str) -> None:
        handle = tracejudge.enqueue(trace_id, config=config)
        assert wait_for(lambda: handle.status == "STARTED", timeout=30), handle.status
        time.sleep(3)  # the workflow runs on; the worker waits for its trace meanwhile
        handles.append(handle)

    record_article_trace(during=enqueue_then_finish_late)
    verdict = handles[0].verdict(timeout=60, raise_on_block=False)
    assert [r.error.type for r in verdict.errors] == []
    assert verdict.status == "passed" and len(verdict.results()) == JUDGES_PER_TRACE


def test_a_partial_run_never_replaces_the_full_evaluation(worker):
    trace_id = record_article_trace()
    full = tracejudge.enqueue(trace_id, config=CONFIG).verdict(timeout=60, raise_on_block=False)
    assert full.status == "passed" and full.artifact_uri
    client = MlflowClient()

    def summary():
        trace = client.get_trace(trace_id)
        tags = {k: v for k, v in trace.info.tags.items() if k.startswith("tracejudge.")}
        run_id = full.artifact_uri.split("/")[1]
        return tags, mlflow.artifacts.load_dict(full.artifact_uri), client.get_run(run_id).data.metrics

    before = summary()
    partial = tracejudge.enqueue(trace_id, config=CONFIG, judges=["completeness"]).verdict(timeout=60, raise_on_block=False)
    assert partial.partial is True
    assert {r.name for r in partial.results()} == {"completeness"}
    assert summary() == before  # tags, report and run metrics are the full evaluation's
    names = [a.name for a in assessments(trace_id) if a.valid is not False]
    assert names.count("completeness") == len(partial.results())  # its assessments were written
    assert len(names) == JUDGES_PER_TRACE + len(partial.results())


def test_a_delivery_that_lost_its_lock_does_not_write(pipeline_env, monkeypatch):
    """The lock lapses under a slow delivery (as when Redis could not be reached to renew it) and a second
    delivery takes it: the first must stop before its write-back (and retry later), not write next to the second."""
    import redis as redis_lib

    from tracejudge.config import load_config
    from tracejudge.tasks import EvaluationRequest, evaluate_request, get_runtime
    from tracejudge.tasks import state as state_module
    from tracejudge.tasks.state import EvaluationBusy

    monkeypatch.setattr(state_module, "LOCK_TTL_SECONDS", 1.0)  # renewed every 0.25 s
    runtime = get_runtime()
    config = load_config(CONFIG)
    slow = "[[tj:latency=1500]]"
    trace_id = record_article_trace(research=f"Findings {slow}", article=f"Article {slow}")
    mlflow.flush_trace_async_logging()
    lock_key = runtime.state.key(f"lock:{trace_id}")
    client = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            outcome["first"] = evaluate_request(EvaluationRequest(trace_id=trace_id, config=config), runtime)
        except EvaluationBusy as exc:
            outcome["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    assert wait_for(lambda: client.exists(lock_key), timeout=30)  # the first delivery holds the lock
    time.sleep(0.3)  # and is judging (its judge calls take 1.5 s)
    client.delete(lock_key)  # the lock lapses
    second = evaluate_request(EvaluationRequest(trace_id=trace_id, config=config), runtime)
    thread.join(60)
    assert second.status == "passed" and second.judged == JUDGES_PER_TRACE
    assert isinstance(outcome["first"], EvaluationBusy), outcome  # it stopped before writing: retried later
    valid = [a for a in assessments(trace_id) if a.valid is not False]
    assert len(valid) == JUDGES_PER_TRACE


def test_a_lock_busy_past_the_last_retry_is_an_evaluation_busy_verdict_not_a_pass(pipeline_env, monkeypatch):
    """Another holder keeps the per-trace lock through every retry: the policy retries with ``EVALUATION_BUSY``
    and, once it gives up, the verdict is an error with that code (never a pass, never ``MLFLOW_UNAVAILABLE``),
    nothing is written, and the holder's lock is left alone."""
    import redis as redis_lib

    from tracejudge.config import load_config
    from tracejudge.tasks import EvaluationRequest, evaluate as evaluate_module, get_runtime, run_task
    from tracejudge.tasks.retry import EVALUATION_BUSY, RetryPolicy
    from tracejudge.verdict import QualityVerdict

    monkeypatch.setattr(evaluate_module, "LOCK_WAIT_MARGIN_SECONDS", 0.0)
    busy_config = {"observability": {"mlflow": {"judges": {
        **CONFIG["observability"]["mlflow"]["judges"],
        # the lock wait is trace_wait + overall timeout + margin: 1 s per attempt here (the trace is flushed)
        "execution": {"timeout_seconds": 5, "trace_wait_seconds": 0.5, "overall_timeout_seconds": 0.5},
    }}}}
    config = load_config(busy_config)
    runtime = get_runtime()
    trace_id = record_article_trace()
    mlflow.flush_trace_async_logging()
    client = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    lock_key = runtime.state.key(f"lock:{trace_id}")
    client.set(lock_key, "another-delivery", ex=600)  # a live holder elsewhere
    payload = EvaluationRequest(trace_id=trace_id, config=config).model_dump(mode="json", exclude_none=True)
    policy = RetryPolicy(max_retries=2)
    written_before = len(assessments(trace_id))

    first = run_task(payload, attempt=0, policy=policy)
    assert first.verdict is None and first.retry is not None and first.retry.code == EVALUATION_BUSY, first

    last = run_task(payload, attempt=2, policy=policy)
    assert last.retry is None and last.verdict is not None, last
    verdict = QualityVerdict.model_validate(last.verdict)  # the compact task result, read as the handle reads it
    assert verdict.status == "error" and verdict.trace_id == trace_id, verdict
    assert verdict.error is not None and verdict.error.type == EVALUATION_BUSY, verdict
    assert "evaluation lock" in verdict.error.message
    assert len(assessments(trace_id)) == written_before == 0  # nothing written next to the holder
    assert client.get(lock_key) == b"another-delivery"
    client.delete(lock_key)


def test_an_evaluation_that_returns_early_releases_the_trace_lock(pipeline_env):
    """The lock is taken before the trace is read: a trace filtered out, a trace that never arrives and a plan
    naming an unknown judge each end the evaluation early, and each must leave the lock free for the next one."""
    import redis as redis_lib

    from tracejudge.config import JudgeRef, load_config
    from tracejudge.tasks import EvaluationRequest, evaluate_request, get_runtime

    runtime = get_runtime()
    client = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    trace_id = record_plain_trace("Filtered?", "Yes.")
    mlflow.flush_trace_async_logging()
    missing = "tr-" + "3" * 32
    judges = CONFIG["observability"]["mlflow"]["judges"]
    filtered = load_config({"observability": {"mlflow": {"judges": {**judges, "filters": {"workflows": ["article_writer"]}}}}})
    short_wait = load_config({"observability": {"mlflow": {"judges": {**judges, "execution": {"trace_wait_seconds": 0.2}}}}})
    cases = [
        (EvaluationRequest(trace_id=trace_id, config=filtered), trace_id, "skipped", None),
        (EvaluationRequest(trace_id=missing, config=short_wait), missing, "error", "TRACE_NOT_FOUND"),
        (EvaluationRequest(trace_id=trace_id, config=short_wait, judges=[JudgeRef(name="no_such_judge")]), trace_id, "error", "UNKNOWN_JUDGE"),
    ]
    for request, locked, status, code in cases:
        verdict = evaluate_request(request, runtime)
        assert verdict.status == status and (verdict.error.type if verdict.error else None) == code, verdict
        assert not client.exists(runtime.state.key(f"lock:{locked}"))


def test_a_second_delivery_of_a_missing_trace_does_not_wait_for_it_twice(pipeline_env, monkeypatch):
    """The lock is taken before the trace is read, so a second delivery of a trace that never arrives first
    waits for the lock while the first one waits for the trace. Its own wait for the trace counts from its
    start, not from getting the lock (a new user saw 44 s for a missing trace with the 30 s setting)."""
    import redis as redis_lib

    from tracejudge.config import load_config
    from tracejudge.tasks import EvaluationRequest, evaluate_request, get_runtime

    runtime = get_runtime()
    client = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    judges = CONFIG["observability"]["mlflow"]["judges"]
    config = load_config({"observability": {"mlflow": {"judges": {**judges, "execution": {"trace_wait_seconds": 3}}}}})
    missing = "tr-" + "5" * 32
    asked: dict[str, float] = {}
    plain_wait = runtime.store.wait_for_trace

    def recording_wait(trace_id: str, *, wait_seconds: float, **options):
        asked[threading.current_thread().name] = wait_seconds
        return plain_wait(trace_id, wait_seconds=wait_seconds, **options)

    monkeypatch.setattr(runtime.store, "wait_for_trace", recording_wait)
    outcome: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(first=evaluate_request(EvaluationRequest(trace_id=missing, config=config), runtime)),
        name="first",
    )
    thread.start()
    assert wait_for(lambda: client.exists(runtime.state.key(f"lock:{missing}")), timeout=30)
    second = evaluate_request(EvaluationRequest(trace_id=missing, config=config), runtime)
    thread.join(60)
    for verdict in (outcome["first"], second):
        assert verdict.status == "error" and verdict.error.type == "TRACE_NOT_FOUND", verdict
    # the second waited for the lock while the first waited for the trace: less than the full wait is left
    assert asked["first"] > asked[threading.current_thread().name], asked
