"""Conversations (MLflow sessions) judged as a whole: on request, through a real Celery worker,
a real Redis, the sqlite MLflow store and the fake LLM over HTTP.

The session's results land on its chronologically first trace, trace-level, with
``mlflow.trace.session`` in their metadata (MLflow's convention), and the prompt the LLM sees
carries the turns in order. Asking again without new turns reuses the results; a new turn
makes a new result that supersedes the old one (``overrides``): one valid result per (session, judge).
"""

from __future__ import annotations

import uuid

import pytest

import tracejudge
from tracejudge.mlflow_io.sessions import LAST_TRACE, SESSION, TURNS

TURNS_TEXT = [
    ("My name is Ada and I am vegetarian. Plan me a dinner.", "Hi Ada! A vegetarian dinner: lentil soup, then mushroom risotto."),
    ("Add a dessert, please.", "For dessert: poached pears with vanilla."),
    ("What was my name again?", "Your name is Ada."),
]


@pytest.fixture()
def experiment(mlflow_store, tmp_path):
    import mlflow

    experiment_id = mlflow.create_experiment(f"sessions-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _session_feedbacks(trace_id: str, session_id: str, *, valid_only: bool = True) -> list:
    from mlflow import MlflowClient

    info = MlflowClient().get_trace(trace_id).info
    return [
        a for a in info.assessments
        if (a.metadata or {}).get(SESSION) == session_id and (a.valid is not False or not valid_only)
    ]


def test_a_conversation_is_judged_on_request_on_its_first_trace(worker, fake_llm, experiment):
    from tracejudge.testing.conversations import record_conversation, record_turn

    session_id = f"chat-{uuid.uuid4().hex[:8]}"
    trace_ids = record_conversation(session_id, TURNS_TEXT)
    config = {"observability": {"mlflow": {"judges": {"sessions": {"judges": ["conversation_completeness", "knowledge_retention"]}}}}}
    fake_llm.reset()

    verdict = tracejudge.enqueue_session(session_id, experiment_id=experiment, config=config, gate=True).verdict(timeout=60)

    assert isinstance(verdict, tracejudge.SessionVerdict)
    assert verdict.status == "passed", verdict.summary()
    assert (verdict.session_id, verdict.turns, verdict.trace_id, verdict.last_trace_id) == (session_id, 3, trace_ids[0], trace_ids[-1])
    assert sorted(r.name for r in verdict.results()) == ["conversation_completeness", "knowledge_retention"]
    # the prompt the LLM saw holds the three turns, in order
    prompts = fake_llm.prompts_for()
    assert len(prompts) == 2
    for messages in prompts:
        text = messages[-1]["content"]
        positions = [text.index(t) for pair in TURNS_TEXT for t in pair]
        assert positions == sorted(positions), text
        assert "[turn 3]" in text and "[turn 4]" not in text
    # on the first trace, trace-level, with the session and the turns judged in the metadata
    feedbacks = _session_feedbacks(trace_ids[0], session_id)
    assert sorted(f.name for f in feedbacks) == ["conversation_completeness", "knowledge_retention"]
    for f in feedbacks:
        assert f.span_id is None and f.value == pytest.approx(0.85)
        assert f.metadata[TURNS] == "3" and f.metadata[LAST_TRACE] == trace_ids[-1]
    for later in trace_ids[1:]:
        assert _session_feedbacks(later, session_id) == []

    # asked again with no new turn: the record says it is judged, no LLM call, no second assessment
    fake_llm.reset()
    again = tracejudge.enqueue_session(session_id, experiment_id=experiment, config=config).verdict(timeout=60)
    assert again.status == "passed" and again.reused == 2 and fake_llm.prompts_for() == []
    assert len(_session_feedbacks(trace_ids[0], session_id, valid_only=False)) == 2

    # a fourth turn: judged again over four turns, and the new results supersede the old
    record_turn(session_id, "And a wine? [[tj:score=0.4]]", "A dry white goes well with risotto.")
    fourth = tracejudge.enqueue_session(session_id, experiment_id=experiment, config=config, gate=True).verdict(timeout=60, raise_on_block=False)
    assert fourth.turns == 4 and fourth.judged == 2
    assert fourth.status == "failed"
    valid = _session_feedbacks(trace_ids[0], session_id)
    everything = _session_feedbacks(trace_ids[0], session_id, valid_only=False)
    assert len(valid) == 2 and len(everything) == 4
    old_ids = {f.assessment_id for f in everything if f.valid is False}
    assert {f.overrides for f in valid} == old_ids
    assert {f.metadata[TURNS] for f in valid} == {"4"}
    assert all(f.value == pytest.approx(0.4) for f in valid)


def test_bad_session_requests_get_clear_error_verdicts(worker, experiment):
    config = {"observability": {"mlflow": {"judges": {"sessions": {"judges": ["user_frustration"]}}}}}
    missing = tracejudge.enqueue_session("no-such-session", experiment_id=experiment, config={
        **config, "observability": {"mlflow": {"judges": {"sessions": {"judges": ["user_frustration"]}, "execution": {"trace_wait_seconds": 0.2}}}}
    }).verdict(timeout=60, raise_on_block=False)
    assert missing.status == "error" and missing.error.type == "SESSION_NOT_FOUND"
    assert "no-such-session" in missing.error.message
    quoted = tracejudge.enqueue_session("it's", experiment_id=experiment, config=config).verdict(timeout=60, raise_on_block=False)
    assert quoted.error.type == "INVALID_SESSION_ID"
    none = tracejudge.enqueue_session("x", experiment_id=experiment, config={}).verdict(timeout=60, raise_on_block=False)
    assert none.error.type == "NO_SESSION_JUDGES"


def test_a_custom_session_judge_reads_each_turns_tool_calls(worker, fake_llm, experiment):
    import mlflow

    from tracejudge.testing.conversations import record_turn

    session_id = f"travel-{uuid.uuid4().hex[:8]}"
    first = record_turn(session_id, "Find me a flight to Oslo on May 3.", "Two flights: 08:10 and 17:45.",
                        tool_calls=[("search_flights", {"to": "OSL", "date": "2026-05-03"}, {"flights": ["08:10", "17:45"]})])
    record_turn(session_id, "Book the evening one.", "Booked the 17:45 flight; confirmation K7Q2.",
                tool_calls=[("book_flight", {"flight": "17:45"}, {"confirmation": "K7Q2"}),
                            ("send_email", {"subject": "Your booking K7Q2"}, {"sent": True})])
    record_turn(session_id, "Thanks!", "Have a good trip.")
    mlflow.flush_trace_async_logging()
    config = {"observability": {"mlflow": {"judges": {
        "custom": [{
            "name": "tool_use_over_conversation",
            "definition": "Were the right tools used, in each turn, for what the user asked?",
            "grading_prompt": "Conversation:\n{conversation}\n\nTool calls per turn:\n{conversation_tool_calls}",
        }],
        "sessions": {"judges": ["tool_use_over_conversation"]},
    }}}}
    fake_llm.reset()
    verdict = tracejudge.enqueue_session(session_id, experiment_id=experiment, config=config).verdict(timeout=60)
    assert verdict.status == "passed" and verdict.trace_id == first
    (messages,) = fake_llm.prompts_for("tool_use_over_conversation")
    text = messages[-1]["content"]
    calls = text[text.index('name="conversation_tool_calls"'):]
    order = [calls.index(s) for s in ("[turn 1]", '"search_flights"', '"OSL"', "[turn 2]", '"book_flight"', '"K7Q2"', '"send_email"', "[turn 3]", "(no tool calls)")]
    assert order == sorted(order), calls


def test_backfill_sessions_judges_past_conversations_the_record_does_not_show_judged(worker, fake_llm, experiment, tmp_path):
    import subprocess
    import sys

    import yaml

    from tracejudge.testing.conversations import record_conversation

    judged_before = f"past-a-{uuid.uuid4().hex[:6]}"
    never_judged = f"past-b-{uuid.uuid4().hex[:6]}"
    a = record_conversation(judged_before, TURNS_TEXT[:2])
    b = record_conversation(never_judged, TURNS_TEXT)
    config_path = tmp_path / "tracejudge.yaml"
    config_path.write_text(yaml.safe_dump({"observability": {"mlflow": {"judges": {
        "sessions": {"judges": ["user_frustration"], "idle_seconds": 0.001},
    }}}}))
    assert tracejudge.enqueue_session(judged_before, experiment_id=experiment, config=str(config_path)).verdict(timeout=60).status == "passed"
    fake_llm.reset()

    dry = subprocess.run(
        [sys.executable, "-m", "tracejudge", "backfill", "--experiment-id", experiment, "--sessions", "--dry-run", "--config", str(config_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    assert "dry run: looked at 2 sessions: would enqueue 1, skipped as already judged 1" in dry.stdout
    assert never_judged in dry.stdout and fake_llm.prompts_for() == []

    run = subprocess.run(
        [sys.executable, "-m", "tracejudge", "backfill", "--experiment-id", experiment, "--sessions", "--wait", "60", "--config", str(config_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert "looked at 2 sessions: enqueued 1, skipped as already judged 1" in run.stdout
    assert "(1 of 1 sessions judged)" in run.stdout
    (messages,) = fake_llm.prompts_for("user_frustration")
    assert "[turn 3]" in messages[-1]["content"]
    assert [f.name for f in _session_feedbacks(b[0], never_judged)] == ["user_frustration"]
    assert len(_session_feedbacks(a[0], judged_before, valid_only=False)) == 1  # not judged twice


def test_the_report_and_alerts_count_sessions_apart_from_traces(worker, fake_llm, experiment):
    """Session results show as session figures (sessions judged, per-judge means, failure rate), read from
    MLflow, and not as results of the first trace; a session_failure_rate rule fires on them."""
    from mlflow import MlflowClient

    from tracejudge.config.alerts import AlertRule
    from tracejudge.monitor.alert_rules import RuleContext, evaluate
    from tracejudge.monitor.collect import summarise_quality
    from tracejudge.monitor.render import render
    from tracejudge.monitor.window import MonitorQuery
    from tracejudge.testing.conversations import record_conversation

    good, bad = f"good-{uuid.uuid4().hex[:6]}", f"bad-{uuid.uuid4().hex[:6]}"
    first_good = record_conversation(good, TURNS_TEXT)[0]
    record_conversation(bad, [("Help me? [[tj:score=0.2]]", "No.")])
    config = {"observability": {"mlflow": {"judges": {
        "workflow_defaults": ["coherence"], "sessions": {"judges": ["conversation_completeness", "user_frustration"]},
    }}}}
    tracejudge.enqueue(first_good, config=config).verdict(timeout=60)  # the first trace is judged as a trace too
    for sid in (good, bad):
        tracejudge.enqueue_session(sid, experiment_id=experiment, config=config).verdict(timeout=60, raise_on_block=False)

    summary = summarise_quality(MonitorQuery(experiment=experiment, since="1d", source="mlflow"), client=MlflowClient())
    assert summary.sessions is not None
    assert (summary.sessions.sessions, summary.sessions.failed, summary.sessions.failure_rate) == (2, 1, 0.5)
    by_judge = {j.judge: j for j in summary.sessions.judges}
    assert set(by_judge) == {"conversation_completeness", "user_frustration"}
    assert by_judge["user_frustration"].mean == pytest.approx((0.85 + 0.2) / 2)
    assert by_judge["user_frustration"].failure_rate == 0.5
    assert {j.judge for j in summary.judges} == {"coherence"}  # the trace figures hold no session result
    assert summary.totals.traces == 1
    text = render(summary, "table")
    assert "sessions judged: 2, failed 1 (50.0%)" in text and "user_frustration: 2 scored" in text

    rule = AlertRule(kind="session_failure_rate", above=0.3, min_count=2)
    context = RuleContext(summarise_window=lambda: summary, summarise_baseline=lambda: summary, now_ms=0)
    result = evaluate(rule, context)
    assert result.holds and result.observed == 0.5
    quiet = evaluate(AlertRule(kind="session_failure_rate", above=0.6, min_count=2), context)
    assert not quiet.holds


def test_session_figures_honour_the_reports_workflow_and_environment_filters(worker, fake_llm, experiment, redis_url):
    """``--workflow`` and ``--environment`` select sessions as they select traces, on each session's first turn
    (the trace its results sit on), and the figures say so; ``--source redis`` says they were read from MLflow."""
    import subprocess
    import sys

    import redis
    from mlflow import MlflowClient

    from tracejudge.monitor.collect import summarise_quality
    from tracejudge.monitor.render import render
    from tracejudge.monitor.window import MonitorQuery
    from tracejudge.testing.conversations import record_conversation

    support, sales, staging = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("support", "sales", "staging"))
    support_ids = record_conversation(support, TURNS_TEXT, workflow="support_bot")
    record_conversation(sales, [("Buy now? [[tj:score=0.2]]", "No.")], workflow="sales_bot")
    staging_first = record_conversation(staging, TURNS_TEXT[:2], workflow="support_bot")[0]
    MlflowClient().set_trace_tag(staging_first, "tracejudge.environment", "staging")  # the record names its environment
    config = {"observability": {"mlflow": {"judges": {
        "workflow_defaults": ["coherence"], "sessions": {"judges": ["user_frustration"]},
    }}}}
    tracejudge.enqueue(support_ids[0], config=config).verdict(timeout=60)  # a support_bot trace judged as a trace too
    for sid in (support, sales, staging):
        tracejudge.enqueue_session(sid, experiment_id=experiment, config=config).verdict(timeout=60, raise_on_block=False)

    def figures(**filters):
        query = MonitorQuery(experiment=experiment, since="1d", source="mlflow", **filters)
        return summarise_quality(query, client=MlflowClient())

    everything = figures()
    assert everything.sessions.sessions == 3 and everything.sessions.failed == 1
    assert everything.sessions.note is None  # no filter: nothing to say

    support_only = figures(workflow="support_bot")
    assert (support_only.sessions.sessions, support_only.sessions.failed) == (2, 0)  # the sales session is left out
    assert support_only.totals.traces == 1
    assert support_only.sessions.note == "only sessions whose first turn is a support_bot trace"
    table = render(support_only, "table")
    assert "sessions judged: 2, failed 0 (0.0%)" in table and "(only sessions whose first turn is a support_bot trace)" in table
    assert "whose first turn is a support_bot trace" in render(support_only, "md")
    assert figures(workflow="sales_bot").sessions.failed == 1
    assert figures(workflow="no_such_workflow").sessions is None  # none, not everyone's

    production = figures(workflow="support_bot", environment="production")
    assert production.sessions.sessions == 1 and production.sessions.mean_turns == 3.0  # the untagged one
    assert "only environment production as the first turn's record names it" in production.sessions.note
    tagged = figures(environment="staging")
    assert (tagged.sessions.sessions, tagged.sessions.mean_turns) == (1, 2.0)

    # the trace figures from Redis: the session figures still come from MLflow, and say so
    from_redis = summarise_quality(
        MonitorQuery(experiment=experiment, since="1d", source="redis", workflow="support_bot"),
        client=MlflowClient(), redis=redis.Redis.from_url(redis_url),
    )
    assert from_redis.sessions.sessions == 2
    assert from_redis.sessions.note.endswith("read from MLflow (sessions have no Redis rollups)")

    # the command a user runs, end to end
    done = subprocess.run(
        [sys.executable, "-m", "tracejudge", "report", "--experiment-id", experiment, "--since", "1d",
         "--workflow", "sales_bot", "--source", "mlflow"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "sessions judged: 1, failed 1 (100.0%)" in done.stdout, done.stdout
    assert "(only sessions whose first turn is a sales_bot trace)" in done.stdout, done.stdout


def test_a_session_message_without_evaluation_id_is_its_task_ids_evaluation(worker, experiment):
    """A hand-sent session message (no evaluation_id) is one evaluation however often it is delivered: the
    task id, not a fresh uuid per delivery (as for traces, tasks.entry.with_evaluation_id)."""
    from tracejudge.sessions.entry import run_session_task

    payload = {"session_id": "no-such-session", "experiment_id": experiment, "config": {
        "judges": {"sessions": {"judges": ["user_frustration"]}, "execution": {"trace_wait_seconds": 0.2}}}}
    first = run_session_task(dict(payload), task_id="task-77").verdict
    again = run_session_task(dict(payload), task_id="task-77").verdict
    assert first["error"]["type"] == again["error"]["type"] == "SESSION_NOT_FOUND"
    assert first["evaluation_id"] == again["evaluation_id"] == "task-77"


def test_a_sessions_wait_on_the_event_loop_is_bounded_like_a_traces(worker, fake_llm, experiment, monkeypatch):
    """Issue 17 item 7 for conversations: the session's judging waits on the loop at most the overall deadline plus
    the margin (then LoopStalled, retried), as a trace's does; it had no bound."""
    from tracejudge.sessions import evaluate as session_evaluate
    from tracejudge.sessions.entry import run_session_task
    from tracejudge.tasks.evaluate import LOOP_WAIT_MARGIN_SECONDS
    from tracejudge.testing.conversations import record_conversation

    waits = []
    real = session_evaluate.judge_jobs

    def judge_jobs(*args, **kwargs):
        waits.append(kwargs.get("loop_timeout"))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_evaluate, "judge_jobs", judge_jobs)
    session_id = f"s-{uuid.uuid4().hex[:8]}"
    record_conversation(session_id, TURNS_TEXT)
    config = {"judges": {"sessions": {"judges": ["user_frustration"]}, "execution": {"overall_timeout_seconds": 40}}}
    verdict = run_session_task({"session_id": session_id, "experiment_id": experiment, "config": config}, task_id="t-1").verdict
    assert verdict["status"] in ("passed", "failed"), verdict
    assert waits == [40 + LOOP_WAIT_MARGIN_SECONDS]
