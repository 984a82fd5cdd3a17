"""The pipeline rule kinds of quality_alerts (pipeline_lag, backlog, no_verdicts, judge_error_rate): evaluated by
the alert engine with the same sinks and delivery, over what real workers recorded and a real Redis broker."""

from __future__ import annotations

import time

import pytest

from tracejudge.config import ConfigError, load_config
from tracejudge.monitor.alerts import check_alerts, rule_id
from tracejudge.testing.webhook import WebhookReceiver
from tracejudge.worker import QUEUES

MIN = 60_000
EXPERIMENT = "tracejudge-tests"


@pytest.fixture()
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


def _alerts(receiver, *rules):
    return load_config({"quality_alerts": {"rules": list(rules), "sinks": [{"type": "webhook", "url": receiver.url + "/hook"}]}}).quality_alerts


def _redis(pipeline_env):
    import redis

    return redis.Redis.from_url(pipeline_env["TRACEJUDGE_REDIS_URL"])


def _check(pipeline_env, alerts, *, now_ms=None):
    return check_alerts(alerts, experiment=EXPERIMENT, redis=_redis(pipeline_env), prefix=pipeline_env["TRACEJUDGE_KEY_PREFIX"],
                        queues=QUEUES, now_ms=now_ms)


def _worker():
    from celery.contrib.testing.worker import start_worker

    from tracejudge.worker import get_app

    return start_worker(get_app(), pool="threads", concurrency=2, perform_ping_check=False, queues=list(QUEUES),
                        shutdown_timeout=30, loglevel="WARNING")


@pytest.mark.parametrize(("rule", "message"), [
    ({"kind": "backlog"}, "a backlog rule needs depth or seconds"),
    ({"kind": "pipeline_lag"}, "a pipeline_lag rule needs seconds"),
    ({"kind": "no_verdicts", "minutes": 0}, "minutes"),
    ({"kind": "judge_error_rate", "above": 0.2, "judge": "relevance"}, "takes no judge or node"),
    ({"kind": "pipeline_lags", "seconds": 5}, "did you mean 'pipeline_lag'"),
])
def test_bad_pipeline_rules_are_named(rule, message):
    with pytest.raises(ConfigError) as err:
        load_config({"quality_alerts": {"rules": [rule]}})
    assert "quality_alerts.rules[0]" in str(err.value) and message in str(err.value)


def test_rule_ids_of_the_older_kinds_do_not_change():
    """The dedup key of a rule written before the pipeline fields existed stays the same (else a firing alert
    would be sent again after an upgrade): the id the code computed then."""
    import hashlib
    import json

    from tracejudge.config.alerts import AlertRule

    before = {"kind": "failure_rate", "name": None, "judge": None, "node": None, "below": None, "above": 0.2,
              "drop_by": None, "factor": None, "min_count": 5}
    expected = hashlib.sha256(json.dumps(["1", before], sort_keys=True).encode()).hexdigest()[:16]
    assert rule_id(AlertRule(kind="failure_rate", above=0.2), "1") == expected


def test_backlog_and_no_verdicts_fire_while_messages_wait_and_resolve_when_judged(pipeline_env, article_trace, receiver):
    import tracejudge

    alerts = _alerts(receiver, {"kind": "backlog", "depth": 0, "queue": "tracejudge.online"},
                     {"kind": "no_verdicts", "minutes": 10}, {"kind": "backlog", "seconds": 900})
    tracejudge.enqueue(article_trace)  # no worker yet: it waits on tracejudge.online
    first = _check(pipeline_env, alerts)
    backlog, stalled, old = first.outcomes
    assert backlog.holds and "tracejudge.online holds 1 message (bound 0)" in backlog.message
    assert backlog.observed["tracejudge.online"]["depth"] == 1
    assert not stalled.holds and not old.holds  # the message is seconds old
    # 20 minutes on, nothing judged: no verdicts while a message has waited 20 minutes; and it is old
    later = _check(pipeline_env, alerts, now_ms=int(time.time() * 1000) + 20 * MIN)
    backlog, stalled, old = later.outcomes
    assert stalled.holds and stalled.message.startswith("no verdict for 10 min") and "a message has waited" in stalled.message
    assert old.holds and "the oldest message on tracejudge.online has waited" in old.message
    fired = [(a["status"], a["kind"]) for a in receiver.on("/hook")]
    assert fired == [("firing", "backlog"), ("firing", "no_verdicts"), ("firing", "backlog")]
    with _worker():  # a worker judges it: the queue empties, a verdict is written
        deadline = time.monotonic() + 120
        done = _check(pipeline_env, alerts)
        while any(o.holds for o in done.outcomes):
            assert time.monotonic() < deadline, [o.message for o in done.outcomes]
            done = _check(pipeline_env, alerts)
    assert [(a["status"], a["kind"]) for a in receiver.on("/hook")[3:]] == [
        ("resolved", "backlog"), ("resolved", "no_verdicts"), ("resolved", "backlog")]


def test_pipeline_lag_and_judge_error_rate_from_real_verdicts(pipeline_env, fake_llm, receiver):
    import tracejudge
    from tracejudge.testing.workflows import record_article_trace

    broken = record_article_trace(article="Text [[tj:fault:coherence=malformed]]")
    fine = record_article_trace()
    with _worker():
        for trace in (broken, fine):
            tracejudge.enqueue(trace, gate=True).verdict(timeout=120, raise_on_block=False)
    # (other tests' verdicts of this session are in the window too: the bounds are chosen to hold whatever they add)
    alerts = _alerts(receiver, {"kind": "pipeline_lag", "seconds": 0.001, "min_count": 2},
                     {"kind": "judge_error_rate", "above": 0.0, "code": "REPLY_NOT_JSON", "min_count": 2},
                     {"kind": "pipeline_lag", "seconds": 3600, "min_count": 2})
    lag, errors, relaxed = _check(pipeline_env, alerts).outcomes
    assert lag.holds and lag.observed > 0.001 and "p95 trace lag" in lag.message
    assert not relaxed.holds  # the same lag under a one-hour bound
    assert errors.holds and list(errors.observed) == ["REPLY_NOT_JSON"], errors.message
    assert 0 < errors.observed["REPLY_NOT_JSON"] < 1 and "REPLY_NOT_JSON" in errors.message
    kinds = [a["kind"] for a in receiver.on("/hook")]
    assert kinds == ["pipeline_lag", "judge_error_rate"]
    # a rule on another code stays quiet
    other = _check(pipeline_env, _alerts(receiver, {"kind": "judge_error_rate", "above": 0.05, "code": "NOT_A_CODE", "min_count": 1}))
    assert not other.outcomes[0].holds


def test_judge_error_rate_is_a_share_per_code_over_enough_results():
    from tracejudge.config.alerts import AlertRule
    from tracejudge.ops.pipeline import PipelineState, WindowCounts, evaluate_pipeline_rule

    state = PipelineState(now=0.0, window=WindowCounts(minutes=60, judge_results=10, judge_errors={"JUDGE_TIMEOUT": 3, "REPLY_NOT_JSON": 1}))
    holds, observed, message = evaluate_pipeline_rule(AlertRule(kind="judge_error_rate", above=0.2), state)
    assert holds and observed == {"JUDGE_TIMEOUT": 0.3, "REPLY_NOT_JSON": 0.1} and "JUDGE_TIMEOUT 30.0%" in message
    assert not evaluate_pipeline_rule(AlertRule(kind="judge_error_rate", above=0.3), state)[0]  # above, not at
    assert not evaluate_pipeline_rule(AlertRule(kind="judge_error_rate", above=0.2, code="REPLY_NOT_JSON"), state)[0]
    assert not evaluate_pipeline_rule(AlertRule(kind="judge_error_rate", above=0.2, min_count=11), state)[0]
