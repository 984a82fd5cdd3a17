"""Judged once: one valid tracejudge assessment per (span, judge name), whatever changed (issue 17, point 4).

Through the real pipeline (enqueue -> Redis -> Celery worker in a thread -> fake
LLM over HTTP -> sqlite MLflow store). A new threshold, model, rubric or judge
version makes a new idempotency key; the new result must supersede our old
valid one (MLflow's ``overrides``) on every path: the normal write-back, the
``defer`` branch of a spent budget, and never a write at all when the trace's
lock was lost before the write-back. People's (HUMAN) assessments are never
overridden.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import tracejudge
from tracejudge.judges import CodeJudge
from tracejudge.judges.registry import register_judge
from tracejudge.mlflow_io import writer

CODE_JUDGE = "tj_once_length"
#: What the lock-stealing code judge overwrites (set by the test; see test_a_lost_lock_...).
STEAL: dict[str, object] = {}


def cfg(*, threshold: float = 0.7, model: str | None = None, rubric: str = "Rate how tidy {output} is.", **judges) -> dict:
    coherence: dict = {"name": "coherence", "threshold": threshold}
    if model:
        coherence["model"] = model
    judges.setdefault("workflow_defaults", [coherence, "tidiness", CODE_JUDGE])
    judges.setdefault("custom", [{"name": "tidiness", "grading_prompt": rubric}])
    return {"observability": {"mlflow": {"judges": judges}}}


def code_judge(version: str) -> None:
    """(Re-)register the code judge in this process (the worker runs in a thread of it)."""
    register_judge(CodeJudge(name=CODE_JUDGE, fn=lambda x: 1.0 if len(x.output_text) < 10_000 else 0.0, version=version))


def ours_by_place(trace_id: str) -> tuple[Counter, list]:
    """Our valid assessments per (span, judge name), and all assessments of the trace."""
    import mlflow

    assessments = mlflow.get_trace(trace_id).info.assessments
    valid = Counter((a.span_id, a.name) for a in assessments if writer.is_ours(a))
    return valid, assessments


def judge(trace_id: str, config: dict):
    verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=90, raise_on_block=False)
    assert verdict.status in ("passed", "failed"), verdict.summary()
    return verdict


@pytest.fixture()
def article(worker, mlflow_store) -> str:
    from tracejudge.testing.workflows import record_article_trace

    code_judge("v1")
    return record_article_trace(run_name="judged-once")


def test_rejudging_after_any_change_leaves_one_valid_assessment_per_span_and_judge(article):
    import mlflow
    from mlflow.entities import AssessmentSource

    first = judge(article, cfg())
    valid, assessments = ours_by_place(article)
    places = set(valid)
    assert len(places) == len(first.results()) >= 6 and set(valid.values()) == {1}  # 2 nodes x 3 judges
    # people's feedback on the same span and judge: one beside ours, one correcting ours (override_feedback)
    span = next(span for span, name in places if name == "coherence")
    human = mlflow.log_feedback(trace_id=article, name="coherence", value=0.1, span_id=span,
                                source=AssessmentSource(source_type="HUMAN", source_id="ana"), rationale="too vague")
    corrected = next(a for a in assessments if writer.is_ours(a) and a.name == "tidiness" and a.span_id == span)
    correction = mlflow.override_feedback(trace_id=article, assessment_id=corrected.assessment_id, value=0.3,
                                          source=AssessmentSource(source_type="HUMAN", source_id="ben"))

    for change in (cfg(threshold=0.55), cfg(threshold=0.55, model="gpt-4o"), cfg(threshold=0.55, model="gpt-4o", rubric="Rate {output}: is it tidy?")):
        judge(article, change)
        valid, _ = ours_by_place(article)
        assert set(valid) == places and set(valid.values()) == {1}, valid
    code_judge("v2")  # a new version of the code judge
    try:
        judge(article, cfg(threshold=0.55, model="gpt-4o", rubric="Rate {output}: is it tidy?"))
    finally:
        code_judge("v1")
    valid, assessments = ours_by_place(article)
    assert set(valid) == places and set(valid.values()) == {1}, valid
    # each of ours now valid is the latest: judge version, model and threshold of the last run
    latest = {(a.span_id, a.name): a for a in assessments if writer.is_ours(a)}
    assert {latest[p].metadata["judge_version"] for p in places if p[1] == CODE_JUDGE} == {"v2"}
    assert {latest[p].source.source_id for p in places if p[1] == "coherence"} == {"gpt-4o"}
    assert {latest[p].metadata["threshold"] for p in places if p[1] == "coherence"} == {"0.55"}
    # every older one of ours is invalid, and superseded by a newer one of ours at its place
    by_id = {a.assessment_id: a for a in assessments}
    for a in assessments:
        if (a.metadata or {}).get(writer.KEY) and a.source.source_type != "HUMAN" and a.valid is False:
            newer = [b for b in assessments if b.overrides == a.assessment_id]
            assert newer and all((b.span_id, b.name) == (a.span_id, a.name) for b in newer)
    # the people's assessments are untouched: valid, same values, never named in an override of ours
    for mine in (human, correction):
        now = by_id[mine.assessment_id]
        assert now.valid is not False and now.value == mine.value and now.source.source_type == "HUMAN"
        assert not [b for b in assessments if b.overrides == mine.assessment_id]


def test_the_defer_branch_supersedes_too(article, pipeline_env, redis_url):
    """A spent budget with ``on_exceed: defer`` writes the results it has (here the free code judge's, at a
    new version) before deferring: they supersede ours as on the normal path."""
    import redis

    from tracejudge.controls.deferred import DEFERRED_KEY

    judge(article, cfg())
    code_judge("v3")
    try:
        # a new threshold too, so coherence needs a judge call the spent budget refuses
        handle = tracejudge.enqueue(article, config=cfg(threshold=0.6, budget={"daily_usd": 0, "on_exceed": "defer"}))
        r, key = redis.Redis.from_url(redis_url), f"{pipeline_env['TRACEJUDGE_KEY_PREFIX']}{DEFERRED_KEY}"
        give_up = time.monotonic() + 60
        while _member(r, key, handle.id) is None and time.monotonic() < give_up:
            time.sleep(0.1)
        assert _member(r, key, handle.id), "the evaluation was not deferred"
    finally:
        code_judge("v1")
    valid, assessments = ours_by_place(article)
    assert set(valid.values()) == {1}, valid
    versions = {a.metadata["judge_version"] for a in assessments if writer.is_ours(a) and a.name == CODE_JUDGE}
    assert versions == {"v3"}
    r.zrem(key, _member(r, key, handle.id))


def _member(r, key: str, evaluation_id: str):
    import json

    for member in r.zrange(key, 0, -1):
        if json.loads(member).get("evaluation_id") == evaluation_id:
            return member
    return None


def steal_lock(x) -> float:
    """A code judge that, once, makes the trace's lock another delivery's (as if ours expired while we judged)."""
    key = STEAL.pop("key", None)
    if key is not None:
        import redis

        redis.Redis.from_url(str(STEAL["url"])).set(str(key), "another-delivery")
    return 1.0


def test_a_lost_lock_noticed_late_writes_nothing_and_the_retry_writes_once(worker, pipeline_env, redis_url, mlflow_store, fake_llm):
    """The lock is lost between judging and the write-back, before the renewer (every 5 s) could see it: the
    write-back asks Redis, writes nothing and retries; once the other holder is gone, the retry writes each
    result once, from the Redis cache (no LLM call again)."""
    import redis

    from tracejudge.tasks.runtime import get_runtime
    from tracejudge.testing.workflows import record_plain_trace

    register_judge(CodeJudge(name="tj_once_steal", fn=steal_lock, version="s1"))
    trace_id = record_plain_trace("who holds the lock?", "someone else")
    lock_key = get_runtime().state.key(f"lock:{trace_id}")
    STEAL.update(key=lock_key, url=redis_url)
    before = fake_llm.stats()["requests"]
    handle = tracejudge.enqueue(trace_id, config={"observability": {"mlflow": {"judges": {"workflow_defaults": ["tj_once_steal", "coherence"]}}}})
    give_up = time.monotonic() + 60
    while not put_off(handle.id) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert put_off(handle.id), f"the evaluation was not put off: {handle.status}"
    valid, assessments = ours_by_place(trace_id)
    assert not [a for a in assessments if (a.metadata or {}).get(writer.KEY)], "written while another delivery held the lock"
    assert redis.Redis.from_url(redis_url).delete(lock_key) == 1  # the other delivery is done
    verdict = handle.verdict(timeout=90, raise_on_block=False)
    assert verdict.status in ("passed", "failed") and verdict.reused == 2
    valid, _ = ours_by_place(trace_id)
    assert sorted(name for _, name in valid) == ["coherence", "tj_once_steal"] and set(valid.values()) == {1}
    assert fake_llm.stats()["requests"] == before + 1  # coherence judged once, its result kept in Redis for the retry


def put_off(evaluation_id: str) -> bool:
    """The first delivery gave up (RETRY), or its retry already runs (waiting for the lock we hold)."""
    from celery.result import AsyncResult

    from tracejudge.worker import get_app

    meta = AsyncResult(evaluation_id, app=get_app())._get_task_meta()
    return meta.get("status") == "RETRY" or (meta.get("status") == "STARTED" and (meta.get("retries") or 0) >= 1)
