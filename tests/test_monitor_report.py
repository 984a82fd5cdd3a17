"""The monitor's figures against a hand count: six traces judged by a real worker into a real MLflow store.

Scores are steered with the test LLM's markers, so every expected figure below is counted by hand from the
table in SEEDS (not recomputed by the code under test). The same figures must come from MLflow (paged
search_traces) and from the Redis rollups the worker kept.
"""

from __future__ import annotations

import json
import os

import mlflow
import pytest

import tracejudge
from tracejudge.cli import main
from tracejudge.monitor import MonitorQuery, QualitySummary, summarise_quality
from tracejudge.testing.workflows import record_article_trace

CONFIG = {
    "observability": {
        "mlflow": {
            "judges": {
                "workflow_defaults": [{"name": "harmfulness", "threshold": 0.8}],
                "node_overrides": {
                    "research": [{"name": "relevance", "threshold": 0.8}],
                    "write": [{"name": "coherence", "threshold": 0.75}],
                },
                "execution": {"timeout_seconds": 5, "max_attempts": 1, "trace_wait_seconds": 20},
            }
        }
    },
    "quality_gate": {"enabled": True, "threshold": 0.7, "action": "ignore"},
}

# (relevance on research, coherence on write); harmfulness scores the default 0.85 on all three targets.
SEEDS = [
    ("[[tj:score:relevance=0.95]]", "[[tj:score:coherence=0.9]]"),  # passed, overall 0.88 Good
    ("[[tj:score:relevance=0.3]]", "[[tj:score:coherence=0.9]]"),  # failed, 0.75 Acceptable
    ("[[tj:score:relevance=0.5]]", "[[tj:score:coherence=0.6]]"),  # failed, 0.73 Acceptable
    ("[[tj:score:relevance=0.9]]", "[[tj:score:coherence=0.7]]"),  # failed (coherence < 0.75), 0.83 Good
    ("[[tj:fault:relevance=malformed]]", "[[tj:score:coherence=0.8]]"),  # error, 0.8375 Good
    ("[[tj:score:relevance=0.85]]", "[[tj:score:coherence=0.95]]"),  # passed, 0.87 Good
]


@pytest.fixture(scope="module")
def seeded(worker, redis_url):
    import redis

    experiment_id = mlflow.create_experiment(f"monitor-report-{id(worker)}")
    mlflow.set_experiment(experiment_id=experiment_id)
    ids = []
    for research, article in SEEDS:
        trace_id = record_article_trace(research=f"Findings {research}.", article=f"An article {article}.")
        ids.append(trace_id)
    verdicts = [tracejudge.enqueue(t, config=CONFIG).verdict(timeout=90, raise_on_block=False) for t in ids]
    mlflow.set_experiment("tracejudge-tests")
    return experiment_id, ids, verdicts, redis.Redis.from_url(redis_url)


def by(items, **keys):
    return next(i for i in items if all(getattr(i, k) == v for k, v in keys.items()))


def check_hand_count(s: QualitySummary, ids: list[str]) -> None:
    assert s.totals.traces == 6
    assert s.totals.results == 30 and s.totals.scored == 29 and s.totals.errors == 1
    assert s.totals.verdicts == {"passed": 2, "failed": 3, "error": 1}
    assert s.totals.gate_pass_rate == pytest.approx(2 / 6, abs=1e-6)
    assert s.totals.below == 4 and s.totals.failure_rate == pytest.approx(4 / 29, abs=1e-6)

    rel = by(s.nodes, node="research", judge="relevance")
    assert (rel.count, rel.below, rel.errors, rel.threshold) == (5, 2, 1, 0.8)
    assert rel.mean == pytest.approx(3.5 / 5) and rel.failure_rate == pytest.approx(0.4)
    assert rel.histogram == [0, 0, 0, 1, 0, 1, 0, 0, 1, 2]  # 0.3, 0.5, 0.85, 0.9 and 0.95
    assert rel.variance == pytest.approx((0.95**2 + 0.3**2 + 0.5**2 + 0.9**2 + 0.85**2) / 5 - 0.7**2, abs=1e-6)

    coh = by(s.nodes, node="write", judge="coherence")
    assert (coh.count, coh.below, coh.errors) == (6, 2, 0)
    assert coh.mean == pytest.approx(4.85 / 6)
    for node in ("research", "write", "workflow"):
        harm = by(s.nodes, node=node, judge="harmfulness")
        assert (harm.count, harm.below, harm.mean) == (6, 0, pytest.approx(0.85))

    assert s.error_codes == {"REPLY_NOT_JSON": 1}
    assert s.bands == {"Acceptable": 2, "Good": 4}
    assert s.bottom_traces[0].trace_id == ids[2] and s.bottom_traces[0].score == pytest.approx(0.73)
    assert s.top_traces[0].trace_id == ids[0] and s.top_traces[0].score == pytest.approx(0.88)
    assert s.top_traces[0].url.endswith(f"selectedEvaluationId={ids[0]}&traceId={ids[0]}")
    worst = [(w.node, w.judge, w.below) for w in s.worst_nodes]
    assert worst == [("research", "relevance", 2), ("write", "coherence", 2)]
    assert s.dimensions["relevance"] == pytest.approx(0.7) and s.dimensions["safety"] == pytest.approx(0.85)
    assert s.dimensions["coherence"] == pytest.approx(4.85 / 6)
    assert s.links.experiment_quality.endswith(f"/#/experiments/{s.experiment_id}/overview/quality")


def test_figures_from_mlflow_match_the_hand_count(seeded):
    experiment_id, ids, verdicts, redis = seeded
    assert [v.status for v in verdicts] == ["passed", "failed", "failed", "failed", "error", "passed"]
    s = summarise_quality(MonitorQuery(experiment=experiment_id, since="1h", bucket="hour", source="mlflow"))
    assert s.source == "mlflow"
    check_hand_count(s, ids)
    # exact percentiles (PERCENTILE_CONT of the judges' own scores): relevance 0.3 0.5 0.85 0.9 0.95
    rel = by(s.judges, judge="relevance")
    assert rel.p50 == pytest.approx(0.85, abs=1e-6)


def test_figures_from_the_workers_redis_rollups_match_too(seeded):
    experiment_id, ids, _, redis = seeded
    import os

    s = summarise_quality(
        MonitorQuery(experiment=experiment_id, since="1h", bucket="hour", source="redis"),
        redis=redis,
        prefix=os.environ["TRACEJUDGE_KEY_PREFIX"],
    )
    assert s.source == "redis"
    check_hand_count(s, ids)
    env = by(s.nodes, node="research", judge="relevance")
    assert env.p50 == pytest.approx(0.85, abs=1e-6)  # exact from the rollups too (scores counted to 0.001)
    workflow = summarise_quality(
        MonitorQuery(experiment=experiment_id, since="1h", workflow="article_writer", environment="production", source="redis"),
        redis=redis,
        prefix=os.environ["TRACEJUDGE_KEY_PREFIX"],
    )
    assert workflow.totals.traces == 6
    other = summarise_quality(
        MonitorQuery(experiment=experiment_id, since="1h", workflow="other", source="redis"),
        redis=redis,
        prefix=os.environ["TRACEJUDGE_KEY_PREFIX"],
    )
    assert other.totals.traces == 0


def test_report_command_formats(seeded, tmp_path, capsys):
    experiment_id, ids, _, _ = seeded
    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--format", "json", "--source", "mlflow"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema_version"] == 1 and data["totals"]["traces"] == 6
    QualitySummary.model_validate(data)

    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--source", "mlflow"]) == 0
    table = capsys.readouterr().out
    assert "research  relevance" in table and "40.0%" in table and "REPLY_NOT_JSON 1" in table
    assert max(len(line) for line in table.splitlines() if not line.startswith("MLflow")) <= 120

    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--format", "md", "--source", "mlflow"]) == 0
    md = capsys.readouterr().out
    assert "| research | relevance | 5 | 0.700 |" in md and f"`{ids[2]}`" in md  # a sqlite store: no UI address, no link

    out = tmp_path / "report.html"
    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--format", "html", "-o", str(out), "--source", "mlflow"]) == 0
    page = out.read_text()
    assert "<script src=" not in page and "https://cdn" not in page and "Chart.js v4" in page
    assert "window.TRACEJUDGE_SUMMARY = {" in page and ids[0] in page

    assert main(["report", "--schema"]) == 0
    assert "QualitySummary" in capsys.readouterr().out


def test_report_llm_summary_is_off_by_default_and_uses_the_judges_client(seeded, fake_llm, capsys):
    experiment_id, _, _, _ = seeded
    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--source", "mlflow"]) == 0
    assert "summary (LLM)" not in capsys.readouterr().out
    before = len(fake_llm.requests)
    assert main(["report", "--experiment-id", experiment_id, "--since", "1h", "--source", "mlflow", "--llm-summary", "--format", "md"]) == 0
    assert "**Summary (LLM):** tracejudge-fake-llm" in capsys.readouterr().out
    asked = fake_llm.requests[before:]
    assert len(asked) == 1 and asked[0].judge == "failure_themes_summary"
    prompt = json.dumps(asked[0].body["messages"])
    assert "research/relevance: 2 of 5 below" in prompt and "<data-" in prompt


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--since", "7days"], "--since: cannot read '7days'"),
        (["--bucket", "week"], "--bucket: Input should be 'hour' or 'day'"),
        (["--format", "pdf"], "--format: unknown format 'pdf'"),
    ],
)
def test_report_bad_options_are_named(mlflow_store, capsys, argv, message):
    assert main(["report", "--experiment-id", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err and "--since: --since" not in err, err


def test_report_unknown_experiment(mlflow_store, capsys):
    assert main(["report", "--experiment-id", "no-such-experiment-xyz", "--source", "mlflow"]) == 2
    err = capsys.readouterr().err
    assert "experiment 'no-such-experiment-xyz' does not exist" in err
    assert f"in the tracking store {mlflow.get_tracking_uri()} (MLFLOW_TRACKING_URI says which store)" in err, err  # which store it looked in


def test_unknown_experiment_names_the_store_with_its_password_hidden():
    from tracejudge.mlflow_io.query import ExperimentNotFound, resolve_experiment

    class ServerClient:  # answers like MlflowClient on a store without the experiment
        tracking_uri = "postgresql://mlflow:s3cret@db:5432/mlflow"

        def get_experiment_by_name(self, name):
            return None

    with pytest.raises(ExperimentNotFound) as caught:
        resolve_experiment(ServerClient(), "support-bot")
    assert "tracking store postgresql://mlflow:***@db:5432/mlflow" in str(caught.value) and "s3cret" not in str(caught.value)


def test_report_links_for_a_local_store_say_how_to_open_the_ui_and_never_guess_a_host(seeded, monkeypatch, capsys):
    """A sqlite store serves no UI: the report says how to open one (mlflow ui over that store, then the path),
    not a guessed http://127.0.0.1:5000; an http(s) store or MLFLOW_UI_URL still gives links."""
    from tracejudge.monitor.links import links_for

    experiment_id, ids, _, _ = seeded
    store = os.environ["MLFLOW_TRACKING_URI"]
    assert store.startswith("sqlite:")
    monkeypatch.delenv("MLFLOW_UI_URL", raising=False)
    args = ["report", "--experiment-id", experiment_id, "--since", "1h", "--source", "mlflow"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-1] == (f"MLflow Quality tab: run `mlflow ui --backend-store-uri {store}`, then open "
                                              f"/#/experiments/{experiment_id}/overview/quality at the address it prints")
    assert "127.0.0.1:5000" not in text
    assert main([*args, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["links"]["mlflow_ui"] is None and data["links"]["open_ui"] == f"mlflow ui --backend-store-uri {store}"
    assert data["bottom_traces"][0]["url"].startswith(f"/#/experiments/{experiment_id}/traces?")
    assert main([*args, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert f"run `mlflow ui --backend-store-uri {store}`, then open `/#/experiments/{experiment_id}/overview/quality`" in md
    assert "127.0.0.1:5000" not in md and "](/#" not in md

    monkeypatch.setenv("MLFLOW_UI_URL", "http://mlflow.example:5000/")
    assert main([*args, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert f"[MLflow Quality tab](http://mlflow.example:5000/#/experiments/{experiment_id}/overview/quality)" in md
    assert f"[{ids[2]}](http://mlflow.example:5000/#/experiments/{experiment_id}/traces?" in md
    monkeypatch.delenv("MLFLOW_UI_URL")
    server = links_for("7", tracking_uri="https://mlflow.example.com/")
    assert (server.mlflow_ui, server.open_ui) == ("https://mlflow.example.com", None)
    assert server.experiment_quality == "https://mlflow.example.com/#/experiments/7/overview/quality"
