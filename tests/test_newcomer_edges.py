"""Rough edges a new user hit (issue 21), each with the behaviour it has now."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tracejudge.config import config_warnings, load_config, log_unused_keys_once

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracejudge", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, cwd=ROOT,
    )


def test_a_misspelt_top_level_section_is_warned_about_with_a_did_you_mean(tmp_path, caplog):
    path = tmp_path / "workflow.yaml"
    path.write_text(
        "my_workflow: {steps: 3}\n"  # the workflow's own keys stay allowed, silently
        "quality_gates: {enabled: true, threshold: 0.9}\n"
        "quality_alert: {rules: [{kind: failure_rate, above: 0.2}]}\n"
        "observability: {mlfow: {enabled: true}}\n"
    )
    config = load_config(path)
    assert not config.gate_enabled  # ignored, as before; but now said
    warnings = config_warnings(config)
    assert "quality_gates: not a tracejudge section, so it is ignored; did you mean quality_gate?" in warnings
    assert any(w.startswith("quality_alert:") and "did you mean quality_alerts?" in w for w in warnings)
    assert any(w.startswith("observability.mlfow:") and "observability.mlflow?" in w for w in warnings)
    assert not any("my_workflow" in w for w in warnings)

    out = run_cli("validate-config", str(path))
    assert out.returncode == 0, out.stderr
    assert "warning: quality_gates: not a tracejudge section" in out.stdout

    # workers log it (once per process) when a task carries such a config
    logger = logging.getLogger("tracejudge.test.misspelt")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        log_unused_keys_once(config, logger)
        log_unused_keys_once(config, logger)
    said = [r.getMessage() for r in caplog.records if "quality_gates" in r.getMessage()]
    assert len(said) == 1 and "did you mean quality_gate?" in said[0]


def test_validate_config_shows_sampling_budget_cache_pickup_and_alert_rules(tmp_path):
    path = tmp_path / "controls.yaml"
    path.write_text(
        "observability:\n  mlflow:\n    judges:\n"
        "      workflow_defaults: [relevance]\n"
        "      sampling: {rate: 0.25, judges: {relevance: 0.5}}\n"
        "      filters: {workflows: [article_writer]}\n"
        "      budget: {daily_usd: 20, on_exceed: defer}\n"
        "      cache: {enabled: true, ttl_hours: 12}\n"
        "      online: {experiments: ['7'], interval_seconds: 60}\n"
        "quality_alerts:\n  rules:\n    - {kind: failure_rate, above: 0.2}\n  sinks: [{type: log}]\n"
    )
    out = run_cli("validate-config", str(path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "sampling: 25% of traces; within them relevance 50%" in text
    assert "filters: only workflows article_writer" in text
    assert "budget: $20 a day (UTC), then defer" in text
    assert "result cache: on, 12 h" in text
    assert "online pick-up: experiments 7 every 60 s" in text
    assert "alerts: every 15 min over 60 min, to log:" in text and "failure_rate" in text


def test_output_to_a_closed_pipe_ends_quietly():
    """`tracejudge report ... | head`: the reader is gone before we write; no BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracejudge", "config-schema"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
    )
    proc.stdout.close()  # the reader leaves at once: every write is to a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"BrokenPipeError" not in err and b"Traceback" not in err, err.decode()
    assert proc.returncode == 0


def test_an_error_verdict_without_results_prints_no_empty_table():
    from tracejudge.display import format_verdict
    from tracejudge.verdict import QualityVerdict

    verdict = QualityVerdict.model_validate(
        {"trace_id": "bad id!", "status": "error", "threshold": 0.8,
         "error": {"type": "INVALID_TRACE_ID", "message": "malformed trace id 'bad id!'"}}
    )
    text = format_verdict(verdict)
    assert "node  judge" not in text and "----" not in text
    assert text.startswith("verdict: ERROR") and "INVALID_TRACE_ID" in text


def test_dashboard_on_a_port_in_use_says_so_before_printing_a_url():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = run_cli("dashboard", "--port", str(port))
    assert out.returncode == 2
    assert "http://" not in out.stdout
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in out.stderr and "choose another --port" in out.stderr
    assert "Traceback" not in out.stderr


def test_backfill_draws_no_progress_bar_into_a_log(pipeline_env, mlflow_store):
    from tracejudge.testing.workflows import record_plain_trace

    experiment_id = mlflow.create_experiment(f"newcomer-backfill-{os.getpid()}-{id(pipeline_env)}")
    with mlflow.start_run(experiment_id=experiment_id):
        pass
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        record_plain_trace("What is MLflow?", "A platform for the ML lifecycle.")
    finally:
        mlflow.set_experiment("tracejudge-tests")
    out = run_cli("backfill", "--experiment-id", experiment_id, "--dry-run", env=pipeline_env)
    assert out.returncode == 0, out.stderr
    assert "dry run: looked at 1 traces" in out.stdout
    assert "\r" not in out.stderr and "━" not in out.stderr and "⠋" not in out.stderr, out.stderr


def test_budget_with_nothing_counted_prints_no_empty_tables(pipeline_env):
    out = run_cli("budget", "--day", "2001-01-01", env=pipeline_env)
    assert out.returncode == 0, out.stderr
    assert "no judge calls counted on this day" in out.stdout and "┏" not in out.stdout


def test_a_missing_trace_is_named_once_in_its_error(worker, pipeline_env):
    import tracejudge

    short = {"observability": {"mlflow": {"judges": {"execution": {"trace_wait_seconds": 0.5}}}}}
    missing = "tr-" + "0" * 31 + "7"
    verdict = tracejudge.enqueue(missing, config=short, gate=True).verdict(timeout=60)
    assert verdict.error.type == "TRACE_NOT_FOUND"
    message = verdict.error.message
    assert message.count(missing) == 1 and "not found" not in message.lower(), message
    assert message.startswith(f"trace {missing} is not in the tracking store; waited 0.5 s"), message


def test_a_partial_run_of_no_gating_judge_is_judged_on_what_it_ran():
    from tracejudge.config import TraceJudgeConfig
    from tracejudge.judges.model import JudgeResult
    from tracejudge.verdict import build_verdict

    config = TraceJudgeConfig.model_validate({"quality_gate": {"enabled": True, "threshold": 0.8, "judges": ["coherence"]}})
    ran = [JudgeResult(name="relevance", score=0.9, threshold=0.8, passed=True)]
    verdict = build_verdict("tr-1", ran, config, partial=True)
    assert verdict.status == "passed" and verdict.overall_score == 0.9, verdict  # was error NO_SCORES
    low = build_verdict("tr-1", [JudgeResult(name="relevance", score=0.3, threshold=0.8, passed=False)], config, partial=True)
    assert low.status == "failed"
    # a full run still holds a gating judge that did not run against the verdict
    assert build_verdict("tr-1", ran, config).status == "error"


def test_technical_accuracy_says_what_it_judges_and_what_it_needs_where_the_example_uses_it():
    from tracejudge.judges import JudgeInput
    from tracejudge.judges.builtin import BUILTIN_JUDGES
    from tracejudge.judges.errors import JudgeInputError
    from tracejudge.judges.prompt import render

    judge = BUILTIN_JUDGES["technical_accuracy"]
    assert "AI/ML" in judge.description and "topic" in judge.variables
    example = (ROOT / "examples/tracejudge.yaml").read_text()
    before = example[: example.index("- name: technical_accuracy")]
    assert "AI/ML" in before[-400:] and "`topic`" in before[-400:]  # the comment right above its use
    with pytest.raises(JudgeInputError, match="topic"):  # a node without it: an error naming the variable
        render(judge, JudgeInput(target="write", output="Transformers use attention.", inputs={}))


def test_a_judge_error_cut_in_the_table_is_printed_whole_below_it():
    from tracejudge.display import format_verdict
    from tracejudge.verdict import QualityVerdict

    message = ("judge 'politeness' needs template variable 'tone', which the target does not have "
               "(it has: input, output); add it to the span's inputs or change the prompt")
    verdict = QualityVerdict.model_validate({
        "trace_id": "tr-1", "status": "error", "threshold": 0.8,
        "targets": [{"node_id": "workflow", "aggregate": {"mean_score": None, "min_score": None, "all_passed": False, "count": 1, "errors": 1},
                     "judges": [{"name": "politeness", "target": "workflow", "threshold": 0.7,
                                 "error": {"type": "MISSING_VARIABLE", "message": message}}]}],
    })
    lines = format_verdict(verdict).splitlines()
    row = next(line for line in lines if line.startswith("workflow  politeness"))
    assert message not in row and row.endswith("...")  # the table cuts it
    assert f"error: workflow politeness: MISSING_VARIABLE: {message}" in lines
    assert lines.index(f"error: workflow politeness: MISSING_VARIABLE: {message}") < next(
        i for i, line in enumerate(lines) if line.startswith("verdict: "))
