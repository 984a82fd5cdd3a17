"""Quality alerts through a real local webhook receiver, real Redis rollups and a real MLflow experiment.

A seeded drop in quality: none while quality holds, one alert (per sink) when it drops, none again while it stays
down, one "resolved" when it recovers.
"""

from __future__ import annotations

import time

import mlflow
import pytest
import yaml

from tracejudge.cli import main
from tracejudge.config import ConfigError, load_config
from tracejudge.monitor.alerts import check_alerts, rule_warnings
from tracejudge.testing.monitor_data import judged, record, seed_rollups
from tracejudge.testing.webhook import WebhookReceiver

MIN = 60_000


@pytest.fixture()
def receiver():
    r = WebhookReceiver(fail_first=("/flaky",))
    yield r
    r.close()


def traces(start_ms: int, end_ms: int, n: int, relevance: float, *, tag: str, coherence: float = 0.9) -> list:
    step = (end_ms - start_ms) // n
    out = []
    for i in range(n):
        scores = {("research", "relevance"): relevance + (i % 3) * 0.01, ("write", "coherence"): coherence, ("workflow", "harmfulness"): 0.95}
        out.append(record(f"tr-{tag}-{i:03d}", start_ms + i * step, judged(scores)))
    return out


def test_one_alert_on_a_drop_none_while_it_holds_one_resolved(pipeline_env, receiver, tmp_path, capsys):
    import os

    import redis as redis_lib

    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    redis = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    name = f"monitor-alerts-{time.time_ns()}"
    experiment_id = mlflow.create_experiment(name)
    t0 = int(time.time() * 1000)
    # baseline: good quality over the two days before; the window before the drop: good too
    seed_rollups(redis, experiment_id, traces(t0 - 2 * 1440 * MIN, t0 - 120 * MIN, 60, 0.9, tag="base"), prefix=prefix)
    seed_rollups(redis, experiment_id, traces(t0 - 120 * MIN, t0 - 65 * MIN, 12, 0.9, tag="good"), prefix=prefix)
    config_doc = {
        # the nodes and judges the rules name are in the plan (a rule naming an unknown one is not evaluated)
        "observability": {"mlflow": {"judges": {"node_overrides": {"research": [{"name": "relevance"}]}}}},
        "quality_alerts": {
            "experiment": name,
            "window_minutes": 60,
            "baseline_days": 1,
            "rules": [
                {"kind": "quality_drop", "judge": "relevance", "below": 0.75},
                {"kind": "failure_rate", "node": "research", "above": 0.5, "name": "research failing"},
            ],
            "sinks": [
                {"type": "webhook", "url": receiver.url + "/hook"},
                {"type": "slack", "url": receiver.url + "/slack"},
                {"type": "webhook", "url": receiver.url + "/flaky"},
                {"type": "log"},
            ],
        }
    }
    alerts = load_config(config_doc).quality_alerts

    quiet = check_alerts(alerts, experiment=name, redis=redis, prefix=prefix, now_ms=t0 - 61 * MIN)
    assert not quiet.firing and receiver.received == []

    # the drop: relevance 0.3 through the last 50 minutes (real time, so the CLI sees it)
    seed_rollups(redis, experiment_id, traces(t0 - 50 * MIN, t0, 12, 0.3, tag="drop"), prefix=prefix)
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(config_doc))
    assert main(["alerts", "check", "--once", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FIRING  quality_drop relevance below 0.75" in out and "FIRING  research failing" in out

    hook = receiver.on("/hook")
    assert [(a["status"], a["rule"]) for a in hook] == [("firing", "quality_drop relevance below 0.75"), ("firing", "research failing")]
    drop = hook[0]
    assert drop["observed"] == pytest.approx(0.31, abs=0.01) and drop["baseline"] == pytest.approx(0.9, abs=0.02)
    assert drop["window"]["since"] < drop["window"]["until"] and drop["experiment_id"] == experiment_id
    assert 1 <= len(drop["examples"]) <= 5
    assert all(e["trace_id"].startswith("tr-drop-") and f"traceId={e['trace_id']}" in e["url"] for e in drop["examples"])
    assert drop["links"]["quality"].endswith(f"/experiments/{experiment_id}/overview/quality")
    slack = receiver.on("/slack")
    # a sqlite store has no UI address: Slack gets the UI's paths as text, never a link to a guessed host
    assert len(slack) == 2 and "FIRING" in slack[0]["text"] and "<http" not in slack[0]["text"]
    assert f"MLflow Quality tab (/#/experiments/{experiment_id}/overview/quality in the MLflow UI)" in slack[0]["text"]
    assert len(receiver.on("/flaky")) == 2  # the first POST got a 500 and was retried

    # still down: the rule holds (exit 1), but nothing is sent again
    assert main(["alerts", "check", "--once", "--config", str(path)]) == 1
    assert len(receiver.on("/hook")) == 2

    # recovery: good quality for the next hour; one "resolved" per rule, then quiet
    seed_rollups(redis, experiment_id, traces(t0 + 5 * MIN, t0 + 64 * MIN, 12, 0.9, tag="back"), prefix=prefix)
    back = check_alerts(alerts, experiment=name, redis=redis, prefix=prefix, now_ms=t0 + 66 * MIN)
    assert not back.firing
    assert [(a["status"], a["rule"]) for a in receiver.on("/hook")[2:]] == [
        ("resolved", "quality_drop relevance below 0.75"), ("resolved", "research failing")]
    again = check_alerts(alerts, experiment=name, redis=redis, prefix=prefix, now_ms=t0 + 67 * MIN)
    assert not again.firing and len(receiver.on("/hook")) == 4 and len(receiver.on("/slack")) == 4


def test_new_failure_type_and_variance(pipeline_env, receiver):
    import os

    import redis as redis_lib

    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    redis = redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])
    name = f"monitor-alerts-new-{time.time_ns()}"
    experiment_id = mlflow.create_experiment(name)
    t0 = int(time.time() * 1000)
    seed_rollups(redis, experiment_id, traces(t0 - 1500 * MIN, t0 - 70 * MIN, 30, 0.9, tag="base"), prefix=prefix)
    window = []
    for i in range(10):
        scores = {("research", "relevance"): 0.2 if i % 2 else 1.0, ("write", "coherence"): "TIMEOUT", ("workflow", "harmfulness"): 0.95}
        window.append(record(f"tr-new-{i}", t0 - 50 * MIN + i * MIN, judged(scores)))
    seed_rollups(redis, experiment_id, window, prefix=prefix)
    alerts = load_config({"quality_alerts": {"baseline_days": 1, "rules": [
        {"kind": "new_failure_type"}, {"kind": "variance_increase", "judge": "relevance", "factor": 2.0}],
        "sinks": [{"type": "webhook", "url": receiver.url + "/hook"}]}}).quality_alerts
    result = check_alerts(alerts, experiment=experiment_id, redis=redis, prefix=prefix, now_ms=t0)
    new, var = result.outcomes
    assert new.holds and "TIMEOUT" in new.observed and "research/relevance" in new.observed
    assert var.holds and var.observed == pytest.approx(0.16, abs=0.01)
    assert [a["kind"] for a in receiver.on("/hook")] == ["new_failure_type", "variance_increase"]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"rules": [{"kind": "qualty_drop", "below": 0.5}]}, "quality_alerts.rules[0].kind: unknown rule kind 'qualty_drop'; did you mean 'quality_drop'?"),
        ({"sinks": [{"type": "webhook", "url": "ftp://hooks.example/x"}]}, "quality_alerts.sinks[0]: url must be an http:// or https:// address"),
        ({"rules": [{"kind": "failure_rate"}]}, "quality_alerts.rules[0]: a failure_rate rule needs above"),
    ],
)
def test_bad_alert_config_is_named(doc, message):
    with pytest.raises(ConfigError) as err:
        load_config({"quality_alerts": doc})
    assert message in str(err.value)


def test_rule_naming_an_unknown_judge_or_node_warns():
    alerts = load_config({"quality_alerts": {"rules": [{"kind": "quality_drop", "judge": "relevanse", "below": 0.5},
                                                        {"kind": "failure_rate", "node": "wrte", "above": 0.2}]}}).quality_alerts
    warnings = rule_warnings(alerts, known_judges={"relevance", "coherence"}, known_nodes={"write", "workflow"})
    assert warnings[0].startswith("quality_alerts.rules[0].judge: no config has a judge 'relevanse'")
    assert warnings[1].startswith("quality_alerts.rules[1].node: no config has a node 'wrte'")


def test_a_config_naming_no_judges_knows_the_default_plan_judges():
    """Without judges in the config the default plan runs relevance, coherence, harmfulness: no false warning."""
    from tracejudge.monitor.alerts import known_names

    config = load_config({"quality_alerts": {"rules": [{"kind": "quality_drop", "judge": "relevance", "below": 0.9},
                                                       {"kind": "quality_drop", "judge": "groundedness", "below": 0.9}]}})
    judges, nodes = known_names(config)
    warnings = rule_warnings(config.quality_alerts, known_judges=judges, known_nodes=nodes)
    assert len(warnings) == 1 and "'groundedness'" in warnings[0], warnings
    assert "known: coherence, harmfulness, relevance" in warnings[0]


def test_beat_schedule_checks_every_quarter_window(tmp_path, monkeypatch):
    from tracejudge.worker import make_app
    from tracejudge.worker.alerts_task import BEAT_ENTRY, TASK_ALERTS

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"quality_alerts": {"window_minutes": 20, "rules": [{"kind": "new_failure_type"}]}}))
    monkeypatch.setenv("TRACEJUDGE_CONFIG", str(path))
    app = make_app()
    entry = app.conf.beat_schedule[BEAT_ENTRY]
    assert entry["task"] == TASK_ALERTS and entry["schedule"].total_seconds() == 300
    assert TASK_ALERTS in app.tasks
