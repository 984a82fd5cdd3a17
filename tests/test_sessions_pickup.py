"""Pick-up of conversations with real processes: a ``tracejudge worker`` and a ``tracejudge beat``
subprocess, a real Redis, the sqlite MLflow store and the fake LLM over HTTP.

A three-turn session is judged once it has been idle for ``idle_seconds`` (never on a
shorter conversation), once: later scans find the record (the assessment on its first trace)
and enqueue nothing. A fourth turn makes pick-up judge it again; the new result supersedes the
old (``overrides``), leaving one valid result per (session, judge).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import yaml

from tests.test_controls_online import BeatProcess
from tracejudge.mlflow_io.sessions import LAST_TRACE, SESSION, TURNS
from tracejudge.testing.processes import WorkerProcess

JUDGE = "conversation_completeness"
TURNS_TEXT = [
    ("I'm Bo. Book me a table for two on Friday.", "Done, Bo: a table for two on Friday at 7 pm."),
    ("Make it 8 pm instead.", "Changed to 8 pm on Friday."),
    ("Thanks, that's all.", "You're welcome, Bo!"),
]


def _feedbacks(client, trace_id: str, session_id: str) -> list:
    info = client.get_trace(trace_id).info
    return [a for a in info.assessments if (a.metadata or {}).get(SESSION) == session_id and a.name == JUDGE]


def _poll(what: str, check, *, timeout: float = 120.0, every: float = 0.3):
    """Poll ``check()`` until it returns something truthy, or fail after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def _turns_in(messages: list[dict]) -> int:
    text = messages[-1]["content"]
    return sum(1 for n in range(1, 20) if f"[turn {n}]" in text)


def test_pickup_judges_an_idle_session_once_and_again_when_it_grows(pipeline_env, fake_llm, mlflow_store, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from tracejudge.testing.conversations import record_conversation, record_turn

    experiment_id = mlflow.create_experiment(f"session-pickup-{uuid.uuid4().hex[:8]}", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_experiment(experiment_id=experiment_id)
    config_path = tmp_path / "tracejudge.yaml"
    config_path.write_text(yaml.safe_dump({"observability": {"mlflow": {"judges": {
        "sessions": {"judges": [JUDGE], "idle_seconds": 3},
        "online": {"experiments": [experiment_id], "interval_seconds": 1, "delay_seconds": 0},
        "sampling": {"rate": 0.0},  # trace-level pick-up samples every turn out: only the session judge runs
    }}}}))
    env = {**pipeline_env, "TRACEJUDGE_KEY_PREFIX": f"tjsess-{uuid.uuid4().hex[:8]}:", "TRACEJUDGE_CONFIG": str(config_path)}
    client = MlflowClient()
    session_id = f"booking-{uuid.uuid4().hex[:8]}"
    fake_llm.reset()

    worker = WorkerProcess(env, name="sessions", concurrency=2, log=tmp_path / "worker.log").start()
    beat = BeatProcess(env, tmp_path, "beat").start()
    try:
        trace_ids = record_conversation(session_id, TURNS_TEXT)

        first = _poll("the session's result", lambda: [f for f in _feedbacks(client, trace_ids[0], session_id) if f.valid])
        assert len(first) == 1 and first[0].span_id is None
        assert (first[0].metadata[TURNS], first[0].metadata[LAST_TRACE]) == ("3", trace_ids[-1])
        for later in trace_ids[1:]:
            assert _feedbacks(client, later, session_id) == []
        prompts = fake_llm.prompts_for(JUDGE)
        assert [_turns_in(p) for p in prompts] == [3], "judged before it was idle, or more than once"
        text = prompts[0][-1]["content"]
        positions = [text.index(t) for pair in TURNS_TEXT for t in pair]
        assert positions == sorted(positions)

        # later scans read the record and enqueue nothing more
        log = tmp_path / "worker.log"
        _poll("a scan that finds the session judged", lambda: "1 already judged" in log.read_text(errors="replace"))
        assert [_turns_in(p) for p in fake_llm.prompts_for(JUDGE)] == [3]

        # a fourth turn: judged again once idle, and the new result supersedes the old
        fourth = record_turn(session_id, "Oh, and we need a high chair.", "Noted: a high chair for Friday at 8 pm.")
        mlflow.flush_trace_async_logging()
        valid = _poll(
            "the four-turn result",
            lambda: [f for f in _feedbacks(client, trace_ids[0], session_id) if f.valid and f.metadata[TURNS] == "4"],
        )
        everything = _feedbacks(client, trace_ids[0], session_id)
        assert len(valid) == 1 and len(everything) == 2
        assert valid[0].metadata[LAST_TRACE] == fourth
        assert valid[0].overrides == first[0].assessment_id
        assert [f.valid for f in everything if f.assessment_id == first[0].assessment_id] == [False]
        assert [_turns_in(p) for p in fake_llm.prompts_for(JUDGE)] == [3, 4]
    finally:
        beat.stop()
        worker.stop()
