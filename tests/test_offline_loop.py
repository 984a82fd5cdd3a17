"""The loop around production judging (issue 22): our judges as MLflow scorers, judged traces into an evaluation
dataset, and the offline gate over it, against a real sqlite MLflow store, a real worker and the fake LLM over HTTP."""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time

import mlflow
import pytest
from mlflow.entities import AssessmentSource, AssessmentSourceType

import tracejudge
from tracejudge.cli import main
from tracejudge.testing.workflows import record_plain_trace

CONFIG = {"observability": {"mlflow": {"judges": {"workflow_defaults": [{"name": "relevance", "threshold": 0.7}]}}}}
NONCE = re.compile(r"data-[0-9a-f]+")


def _our_feedback(trace_id: str, name: str):
    trace = mlflow.get_trace(trace_id)
    found = [a for a in trace.info.assessments if a.name == name and (a.metadata or {}).get("tracejudge.key") and a.valid]
    assert len(found) == 1, found
    return found[0]


def test_the_scorer_gives_the_workers_score_on_the_same_trace_from_the_same_prompt(worker, pipeline_env, fake_llm):
    trace_id = record_plain_trace("What is MLflow tracing?", "It records each step of an LLM app. [[tj:score:relevance=0.64]]")
    fake_llm.reset()
    verdict = tracejudge.enqueue(trace_id, config=CONFIG, gate=True).verdict(timeout=60)
    assert verdict.status == "failed", verdict
    online = _our_feedback(trace_id, "relevance")
    online_prompt = fake_llm.prompts_for("relevance")

    fake_llm.reset()
    scorer = tracejudge.as_scorer("relevance", config=CONFIG)
    offline = scorer.run(trace=mlflow.get_trace(trace_id))
    offline_prompt = fake_llm.prompts_for("relevance")

    assert offline.value == online.feedback.value == 0.64
    assert offline.metadata["judge_version"] == online.metadata["judge_version"]
    assert offline.metadata["threshold"] == "0.7" and offline.metadata["passed"] == "false"
    assert offline.source.source_type == "LLM_JUDGE"
    # the same text: the prompts are the same but for the per-call nonce of the data markers
    same = lambda messages: NONCE.sub("data-N", json.dumps(messages))  # noqa: E731
    assert len(online_prompt) == len(offline_prompt) == 1 and same(online_prompt[0]) == same(offline_prompt[0])


def test_an_unknown_judge_is_a_clear_error():
    with pytest.raises(Exception, match="relevnce"):
        tracejudge.as_scorer("relevnce", config=CONFIG)


@pytest.fixture()
def judged_experiment(worker, pipeline_env):
    """Three judged traces: one passed, one failed with a person's feedback, one failed."""
    experiment_id = mlflow.create_experiment(f"offline-loop-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        ids = {
            "good": record_plain_trace("What is Redis?", "An in-memory data store. [[tj:score=0.95]]"),
            "bad": record_plain_trace("What is Celery?", "A vegetable. [[tj:score=0.2]]"),
            "worse": record_plain_trace("What is MLflow?", "No idea. [[tj:score=0.1]]"),
        }
    finally:
        mlflow.set_experiment("tracejudge-tests")
    for trace_id in ids.values():
        tracejudge.enqueue(trace_id, config=CONFIG, gate=True).verdict(timeout=60)
    mlflow.log_feedback(trace_id=ids["bad"], name="relevance", value=0.0, rationale="Celery is a task queue",
                        source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="reviewer@example.com"))
    return experiment_id, ids


def test_production_failures_become_a_dataset_and_a_rerun_adds_only_new_traces(judged_experiment, capsys):
    experiment_id, ids = judged_experiment
    name = f"regressions-{time.time_ns()}"
    assert main(["dataset", "--experiment-id", experiment_id, "--name", name, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["created"] is True and sorted(first["added"]) == sorted([ids["bad"], ids["worse"]])

    records = mlflow.genai.datasets.get_dataset(name=name).to_df()
    by_source = {row["tags"]["tracejudge.source_trace"]: row for _, row in records.iterrows()}
    assert set(by_source) == {ids["bad"], ids["worse"]}
    assert by_source[ids["bad"]]["inputs"] == {"question": "What is Celery?"}
    assert by_source[ids["bad"]]["expectations"] == {"relevance": 0.0}  # the person's feedback

    assert main(["dataset", "--experiment-id", experiment_id, "--name", name, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["created"] is False and again["added"] == [] and again["already_in"] == 2

    # --judge/--below picks by score, whatever the status
    low = f"low-{time.time_ns()}"
    assert main(["dataset", "--experiment-id", experiment_id, "--name", low, "--judge", "relevance", "--below", "0.15", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == [ids["worse"]]
    assert main(["dataset", "--experiment-id", experiment_id, "--name", low, "--below", "0.5"]) == 2
    assert "--below goes with --judge" in capsys.readouterr().err


def test_the_offline_gate_exits_by_the_online_rule(judged_experiment, tmp_path, monkeypatch, capsys, pipeline_env):
    experiment_id, ids = judged_experiment
    name = f"gate-{time.time_ns()}"
    assert main(["dataset", "--experiment-id", experiment_id, "--name", name]) == 0
    config = tmp_path / "tracejudge.yaml"
    config.write_text(json.dumps(CONFIG))
    app = tmp_path / "candidate_app.py"
    app.write_text(textwrap.dedent('''
        ANSWERS = {"What is Celery?": "A distributed task queue for Python.", "What is MLflow?": "An ML lifecycle platform."}

        def fixed(question):
            return ANSWERS[question] + " [[tj:score=0.9]]"

        def still_broken(question):
            return "Not sure. [[tj:score=0.3]]"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", "--dataset", name, "--predict", "candidate_app:fixed", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "offline gate: PASSED: passed 2; pass rate 100%" in out and "relevance" in out
    assert main(["evaluate", "--dataset", name, "--predict", "candidate_app:still_broken", "--config", str(config)]) == 1
    assert "offline gate: FAILED: failed 2" in capsys.readouterr().out
    assert main(["evaluate", "--dataset", name, "--predict", "candidate_app:nothing", "--config", str(config)]) == 2
    assert "candidate_app has no function 'nothing'" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "no-such-dataset", "--config", str(config)]) == 2
    assert "no evaluation dataset named 'no-such-dataset'" in capsys.readouterr().err
    sys.modules.pop("candidate_app", None)


def _queue_items(experiment_id: str, queue: str) -> list[str]:
    from mlflow.genai.review_queues import get_review_queue, list_review_queue_items

    queue_id = get_review_queue(name=queue, experiment_id=experiment_id).queue_id
    return sorted(item.item_id for item in list_review_queue_items(queue_id))


def test_workers_route_matching_traces_to_an_mlflow_review_queue(worker, pipeline_env, redis_url):
    import redis

    from tracejudge.controls import review

    queue = f"judge-review-{time.time_ns()}"
    config = {"observability": {"mlflow": {"judges": {
        "workflow_defaults": [{"name": "relevance", "threshold": 0.7}],
        "review": {"queue": queue, "when": {"status": ["failed"], "near_threshold": 0.05}, "daily_max": 2},
    }}}}
    experiment_id = mlflow.create_experiment(f"review-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        ids = {
            "far": record_plain_trace("q1", "fine [[tj:score=0.95]]"),      # passed, far from the threshold: not sent
            "near": record_plain_trace("q2", "close [[tj:score=0.73]]"),    # passed, within 0.05: sent
            "failed": record_plain_trace("q3", "bad [[tj:score=0.2]]"),     # failed: sent
            "capped": record_plain_trace("q4", "bad too [[tj:score=0.1]]"),  # failed, but today's 2 slots are taken
        }
    finally:
        mlflow.set_experiment("tracejudge-tests")
    for key in ("far", "near", "failed", "capped"):
        tracejudge.enqueue(ids[key], config=config, gate=True).verdict(timeout=60)
    assert _queue_items(experiment_id, queue) == sorted([ids["near"], ids["failed"]])
    # the queue's label schemas are the judges', numeric 0..1: a reviewer's answer is HUMAN feedback under that name
    from mlflow.genai.label_schemas import get_label_schema

    schema = get_label_schema("relevance", experiment_id=experiment_id)
    assert schema.input.min_value == 0.0 and schema.input.max_value == 1.0
    client = redis.Redis.from_url(redis_url)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert int(client.get(f"{pipeline_env['TRACEJUDGE_KEY_PREFIX']}tracejudge:review:{day}")) == 2
    assert review.review_reason  # the module the worker used


def test_a_store_without_review_queues_is_said_once_and_left_alone(monkeypatch, caplog, redis_url):
    import fakeredis
    from mlflow.exceptions import MlflowException

    from tracejudge.config.review import ReviewConfig
    from tracejudge.controls.review import ReviewRouter
    from tracejudge.verdict import QualityVerdict

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise MlflowException("review queues are not supported by this server", error_code="ENDPOINT_NOT_FOUND")

    monkeypatch.setattr("mlflow.genai.review_queues.get_review_queue", refuse)
    monkeypatch.setattr("mlflow.genai.label_schemas.get_label_schema", refuse)
    router = ReviewRouter()
    failed = QualityVerdict(trace_id="tr-1", status="failed", threshold=0.8)
    with caplog.at_level("WARNING", logger="tracejudge.controls.review"):
        for n in range(3):
            assert router.route(trace_id=f"tr-{n}", experiment_id="1", verdict=failed, review=ReviewConfig(queue="q"),
                                redis=fakeredis.FakeRedis(), key_prefix="") is None
    assert len(calls) == 1  # asked once, then left alone
    said = [r.getMessage() for r in caplog.records if "review routing is off" in r.getMessage()]
    assert len(said) == 1 and "no review queues" in said[0]


def test_optimize_registers_an_improved_prompt_with_our_judges_as_the_objective(pipeline_env, tmp_path, monkeypatch, capsys):
    """The fake LLM shows plumbing, not better prompts: it appends a sentence, and the app scores higher with it."""
    from tracejudge.testing.fake_llm import REWRITE_SUFFIX

    name = f"qa_{time.time_ns()}"
    prompt = mlflow.genai.register_prompt(name=name, template="Answer the question: {{question}}")
    rows = f"opt-rows-{time.time_ns()}"
    mlflow.genai.datasets.create_dataset(name=rows).merge_records(
        [{"inputs": {"question": q}} for q in ("What is MLflow?", "What is Redis?", "What is Celery?")]
    )
    app = tmp_path / "prompted_app.py"
    app.write_text(textwrap.dedent(f'''
        import mlflow

        PROMPT = "prompts:/{name}/1"
        CURRENT = {{"uri": PROMPT}}

        def answer(question):
            template = mlflow.genai.load_prompt(CURRENT["uri"]).template
            good = {REWRITE_SUFFIX!r} in template  # the test server's rewrite: its marker says how good
            return f"An answer to {{question}}. " + ("[[tj:score=0.9]]" if good else "[[tj:score=0.4]]")
    '''))
    config = tmp_path / "tracejudge.yaml"
    config.write_text(json.dumps({**CONFIG, "optimization": {"enabled": True, "metric": "quality_score",
                                                             "target": "maximize", "strategy": "BootstrapFewShot"}}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["optimize", "--prompt", prompt.uri, "--dataset", rows, "--predict", "prompted_app:answer", "--config", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err
    improved = mlflow.genai.load_prompt(f"prompts:/{name}/2")
    assert improved.template == "Answer the question: {{question}}" + REWRITE_SUFFIX
    assert f"registered prompts:/{name}/2" in out and "MetaPrompt" in out

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"optimization": {"strategy": "simulated_annealing"}}))
    assert main(["optimize", "--prompt", prompt.uri, "--dataset", rows, "--predict", "prompted_app:answer", "--config", str(bad)]) == 2
    assert "unknown strategy 'simulated_annealing'" in capsys.readouterr().err
    sys.modules.pop("prompted_app", None)


def test_judge_agreement_rule_fires_when_people_disagree_with_a_judge(worker, pipeline_env):
    from tracejudge.config.alerts import AlertRule
    from tracejudge.monitor.alert_rules import RuleContext, evaluate
    from tracejudge.monitor.alerts import _human_pairs

    experiment_id = mlflow.create_experiment(f"agreement-{time.time_ns()}")
    start = int(time.time() * 1000) - 1000
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        judged = [(record_plain_trace(f"q{i}", f"a{i} [[tj:score={s}]]"), s) for i, s in enumerate([0.9, 0.95, 0.9, 0.2, 0.1, 0.15])]
    finally:
        mlflow.set_experiment("tracejudge-tests")
    for trace_id, _ in judged:
        tracejudge.enqueue(trace_id, config=CONFIG, gate=True).verdict(timeout=60)
    for trace_id, score in judged:  # people say the opposite of the judge
        span_id = _our_feedback(trace_id, "relevance").span_id
        mlflow.log_feedback(trace_id=trace_id, name="relevance", value=0.0 if score > 0.5 else 1.0, span_id=span_id,
                            source=AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="reviewer"))
    now = int(time.time() * 1000) + 1000
    ctx = RuleContext(summarise_window=lambda: None, summarise_baseline=lambda: None, now_ms=now,
                      extra={"human_pairs": lambda: _human_pairs(experiment_id, start, now)})
    fired = evaluate(AlertRule(kind="judge_agreement", judge="relevance", below=0.4), ctx)
    assert fired.holds and fired.observed < 0, fired
    assert "relevance" in fired.message and "kappa" in fired.message and "6 pairs" in fired.message
    spearman = evaluate(AlertRule(kind="judge_agreement", below=0.4, statistic="spearman"), ctx)
    assert spearman.holds and spearman.observed < 0
    quiet = evaluate(AlertRule(kind="judge_agreement", judge="relevance", below=0.4, min_count=50), ctx)
    assert not quiet.holds and "too few" in quiet.message
