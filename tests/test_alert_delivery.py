"""Alerts reach their sinks or keep trying (issue 18 point 4; issue 21's alert rough edges).

A real local webhook that fails and then recovers, real Redis rollups and a real MLflow experiment: a firing
alert a sink refused is sent again at every check until the sink accepts it, with the attempts and the last
error shown by ``tracejudge alerts check``; "sent" is printed only for sinks that accepted; a resolution goes to
the sinks that got the firing; two checkers at once send once; a rule warned as unable to fire is not
evaluated. No sleeps: the receiver's state changes between checks, and a held request waits on an event.
"""

from __future__ import annotations

import os
import threading
import time

import mlflow
import pytest
import yaml

from tracejudge.cli import main
from tracejudge.config import load_config
from tracejudge.monitor.alerts import STATE_KEY, check_alerts, known_names, rule_id
from tracejudge.testing.monitor_data import judged, record, seed_rollups
from tracejudge.testing.webhook import WebhookReceiver

MIN = 60_000


@pytest.fixture()
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture()
def redis(pipeline_env):
    import redis as redis_lib

    return redis_lib.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])


def traces(start_ms: int, end_ms: int, n: int, relevance: float, *, tag: str) -> list:
    step = (end_ms - start_ms) // n
    return [record(f"tr-{tag}-{i:03d}", start_ms + i * step,
                   judged({("research", "relevance"): relevance, ("workflow", "harmfulness"): 0.95}))
            for i in range(n)]


def seeded(redis, *, t0: int, window_relevance: float, tag: str) -> tuple[str, str]:
    """An experiment with a good baseline and the last 50 minutes at ``window_relevance``."""
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    name = f"alert-delivery-{tag}-{time.time_ns()}"
    experiment_id = mlflow.create_experiment(name)
    seed_rollups(redis, experiment_id, traces(t0 - 2 * 1440 * MIN, t0 - 120 * MIN, 40, 0.9, tag=f"{tag}-base"), prefix=prefix)
    seed_rollups(redis, experiment_id, traces(t0 - 50 * MIN, t0, 10, window_relevance, tag=f"{tag}-win"), prefix=prefix)
    return name, experiment_id


PLAN = {"observability": {"mlflow": {"judges": {"node_overrides": {"research": [{"name": "relevance"}]}}}}}


def config_doc(name: str, sinks: list[dict], rules: list[dict] | None = None) -> dict:
    return {**PLAN, "quality_alerts": {"experiment": name, "window_minutes": 60, "baseline_days": 1,
                                       "rules": rules or [{"kind": "quality_drop", "judge": "relevance", "below": 0.75}],
                                       "sinks": sinks}}


def check(doc: dict, redis, *, now_ms: int):
    config = load_config(doc)
    judges, nodes = known_names(config)
    return check_alerts(config.quality_alerts, experiment=doc["quality_alerts"]["experiment"], redis=redis,
                        prefix=os.environ["TRACEJUDGE_KEY_PREFIX"], now_ms=now_ms, known_judges=judges, known_nodes=nodes)


def run_cli(doc: dict, tmp_path, capsys) -> tuple[int, str]:
    path = tmp_path / f"alerts-{time.time_ns()}.yaml"
    path.write_text(yaml.safe_dump(doc))
    code = main(["alerts", "check", "--once", "--config", str(path)])
    return code, capsys.readouterr().out


def test_an_alert_a_sink_refused_is_retried_at_each_check_until_it_recovers(pipeline_env, redis, receiver, tmp_path, capsys):
    t0 = int(time.time() * 1000)
    name, experiment_id = seeded(redis, t0=t0, window_relevance=0.3, tag="retry")
    doc = config_doc(name, [{"type": "webhook", "url": receiver.url + "/hook"},
                            {"type": "webhook", "url": receiver.url + "/down", "max_attempts": 2, "timeout_seconds": 5}])
    receiver.down.add("/down")

    # 1: fires; /hook accepts, /down refuses both tries: "sent" names only /hook
    code, out = run_cli(doc, tmp_path, capsys)
    assert code == 1
    assert "FIRING  quality_drop relevance below 0.75" in out
    assert "sent firing to webhook#0 (127.0.0.1)" in out
    assert "firing NOT delivered to webhook#1 (127.0.0.1): 2 attempt(s), last error: HTTP 503" in out
    assert receiver.url not in out  # the URL (a secret) is never printed
    assert len(receiver.on("/hook")) == 1 and receiver.on("/down") == [] and receiver.rejected.count("/down") == 2

    # 2: still down: tried again (attempts add up), /hook is not sent it again
    second = check(doc, redis, now_ms=int(time.time() * 1000)).outcomes[0]
    hook, down = second.deliveries
    assert second.holds and second.sent is None
    assert hook.delivered and not hook.sent_now
    assert not down.delivered and down.attempts == 4 and down.last_error.startswith("HTTP 503")
    assert len(receiver.on("/hook")) == 1 and receiver.rejected.count("/down") == 4

    # 3: the webhook recovers: it gets the firing alert, once
    receiver.down.discard("/down")
    third = check(doc, redis, now_ms=int(time.time() * 1000)).outcomes[0]
    assert third.sent == "firing" and [d.sink for d in third.deliveries if d.sent_now] == ["webhook#1 (127.0.0.1)"]
    assert third.deliveries[1].attempts == 5 and third.deliveries[1].last_error is None
    assert [a["status"] for a in receiver.on("/down")] == ["firing"] and receiver.on("/down")[0]["experiment_id"] == experiment_id
    code, out = run_cli(doc, tmp_path, capsys)
    assert code == 1 and "sent" not in out and "NOT delivered" not in out
    assert len(receiver.on("/hook")) == 1 and len(receiver.on("/down")) == 1

    # 4: quality recovers while /down is down again: the resolution reaches /hook now and /down once it is back
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    seed_rollups(redis, experiment_id, traces(t0 + 5 * MIN, t0 + 64 * MIN, 10, 0.9, tag="retry-back"), prefix=prefix)
    receiver.down.add("/down")
    later = t0 + 66 * MIN
    resolved = check(doc, redis, now_ms=later).outcomes[0]
    assert not resolved.holds and resolved.sent == "resolved"
    assert [a["status"] for a in receiver.on("/hook")] == ["firing", "resolved"]
    assert not resolved.deliveries[1].delivered and resolved.deliveries[1].status == "resolved"
    receiver.down.discard("/down")
    check(doc, redis, now_ms=later + MIN)
    assert [a["status"] for a in receiver.on("/down")] == ["firing", "resolved"]
    key = f"{prefix}{STATE_KEY}{experiment_id}:{rule_id(load_config(doc).quality_alerts.rules[0], experiment_id)}"
    assert not redis.exists(key)  # nothing owed any more: the state is gone
    check(doc, redis, now_ms=later + 2 * MIN)
    assert len(receiver.on("/hook")) == 2 and len(receiver.on("/down")) == 2


def test_when_every_sink_fails_nothing_says_sent_and_url_env_is_read_when_sending(pipeline_env, redis, receiver, tmp_path, capsys, monkeypatch):
    t0 = int(time.time() * 1000)
    name, experiment_id = seeded(redis, t0=t0, window_relevance=0.3, tag="allfail")
    monkeypatch.delenv("TJ_TEST_ALERT_HOOK", raising=False)
    doc = config_doc(name, [{"type": "webhook", "url": receiver.url + "/down", "max_attempts": 1},
                            {"type": "slack", "url_env": "TJ_TEST_ALERT_HOOK"}])
    receiver.down.add("/down")
    code, out = run_cli(doc, tmp_path, capsys)
    assert code == 1 and "FIRING" in out
    assert "sent" not in out
    assert "firing NOT delivered to webhook#0 (127.0.0.1): 1 attempt(s), last error: HTTP 503" in out
    assert "firing NOT delivered to slack#1 ($TJ_TEST_ALERT_HOOK): 1 attempt(s), last error: environment variable TJ_TEST_ALERT_HOOK is not set" in out

    # the variable is set: the Slack sink gets the alert at the next check (its URL never was in the YAML)
    monkeypatch.setenv("TJ_TEST_ALERT_HOOK", receiver.url + "/slack")
    result = check(doc, redis, now_ms=int(time.time() * 1000)).outcomes[0]
    assert result.sent == "firing" and len(receiver.on("/slack")) == 1 and "FIRING" in receiver.on("/slack")[0]["text"]
    assert receiver.url not in yaml.safe_dump(doc["quality_alerts"]["sinks"][1])

    # the rule resolves before /down ever accepted the firing: /down is not told it resolved, slack is
    prefix = os.environ["TRACEJUDGE_KEY_PREFIX"]
    seed_rollups(redis, experiment_id, traces(t0 + 5 * MIN, t0 + 64 * MIN, 10, 0.9, tag="allfail-back"), prefix=prefix)
    receiver.down.discard("/down")
    check(doc, redis, now_ms=t0 + 66 * MIN)
    assert receiver.on("/down") == [] and [a["text"].split("*")[1] for a in receiver.on("/slack")] == ["FIRING", "RESOLVED"]


def test_two_checkers_at_once_send_once(pipeline_env, redis, receiver):
    """The second checker finds the delivery claimed while the first waits for the webhook's reply."""
    t0 = int(time.time() * 1000)
    name, _ = seeded(redis, t0=t0, window_relevance=0.3, tag="twice")
    doc = config_doc(name, [{"type": "webhook", "url": receiver.url + "/slow"}])
    receiver.hold.add("/slow")
    first: list = []
    thread = threading.Thread(target=lambda: first.append(check(doc, redis, now_ms=t0)))
    thread.start()
    assert receiver.holding.wait(60)
    second = check(doc, redis, now_ms=t0).outcomes[0]
    assert second.holds and second.sent is None and second.deliveries[0].in_flight
    receiver.release.set()
    thread.join(60)
    assert first[0].outcomes[0].sent == "firing"
    assert len(receiver.on("/slow")) == 1
    check(doc, redis, now_ms=t0 + MIN)
    assert len(receiver.on("/slow")) == 1


def test_a_key_left_by_the_old_dedup_counts_as_sent(pipeline_env, redis, receiver):
    """Before delivery was tracked, a firing rule's key was a string set before sending: no resend after upgrading."""
    t0 = int(time.time() * 1000)
    name, experiment_id = seeded(redis, t0=t0, window_relevance=0.3, tag="legacy")
    doc = config_doc(name, [{"type": "webhook", "url": receiver.url + "/hook"}])
    rule = load_config(doc).quality_alerts.rules[0]
    key = f"{os.environ['TRACEJUDGE_KEY_PREFIX']}{STATE_KEY}{experiment_id}:{rule_id(rule, experiment_id)}"
    redis.set(key, '{"since": "2026-12-05T00:00:00Z", "rule": "x"}')
    outcome = check(doc, redis, now_ms=t0).outcomes[0]
    assert outcome.holds and outcome.sent is None and receiver.received == []


def test_a_rule_warned_as_unable_to_fire_is_not_evaluated(pipeline_env, redis, receiver, tmp_path, capsys):
    """``gate_pass_rate`` ignores ``judge``, so a misspelt judge used to fire on the gate alone."""
    t0 = int(time.time() * 1000)
    name, _ = seeded(redis, t0=t0, window_relevance=0.3, tag="unable")
    doc = config_doc(name, [{"type": "webhook", "url": receiver.url + "/hook"}],
                     rules=[{"kind": "gate_pass_rate", "judge": "relevanse", "below": 0.9}])
    result = check(doc, redis, now_ms=t0)
    outcome = result.outcomes[0]
    assert not outcome.holds and not outcome.checked and outcome.deliveries == []
    assert outcome.message.startswith("not checked: no config has a judge 'relevanse'")
    assert result.warnings and receiver.received == []
    code, out = run_cli(doc, tmp_path, capsys)
    assert code == 0 and "skipped gate_pass_rate relevanse below 0.9: not checked" in out
    # the same rule on a judge the plan has does fire (the window's gate pass rate is 0)
    doc["quality_alerts"]["rules"][0]["judge"] = "relevance"
    assert check(doc, redis, now_ms=t0).outcomes[0].holds


def test_every_rule_kind_has_an_evaluator_and_its_config_fields():
    from tracejudge.config.alerts import RULE_NEEDS
    from tracejudge.monitor.alert_rules import RULES

    assert sorted(RULES) == sorted(RULE_NEEDS)


def test_a_sink_takes_url_or_url_env_and_names_a_missing_one():
    from tracejudge.config import ConfigError

    with pytest.raises(ConfigError, match=r"quality_alerts.sinks\[0\]: a slack sink takes url or url_env, not both"):
        load_config({"quality_alerts": {"sinks": [{"type": "slack", "url": "https://h.example/x", "url_env": "X"}]}})
    with pytest.raises(ConfigError, match=r"quality_alerts.sinks\[0\]: url_env must name an environment variable"):
        load_config({"quality_alerts": {"sinks": [{"type": "slack", "url_env": "https://h.example/x"}]}})


def test_validate_config_names_the_variable_of_a_sink_url_and_never_a_url(tmp_path, capsys):
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"quality_alerts": {"rules": [{"kind": "new_failure_type"}], "sinks": [
        {"type": "slack", "url_env": "SLACK_WEBHOOK_URL"}, {"type": "webhook", "url": "https://hooks.example/T0/SECRET-77"}]}}))
    assert main(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "to slack (url from $SLACK_WEBHOOK_URL), webhook:" in out and "SECRET-77" not in out
