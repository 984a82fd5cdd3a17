"""Execution modes, enqueue failures, and the CLI (gate exit codes, validate-config)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

import tracejudge
from tracejudge.cli import main as cli_main
from tracejudge.testing.workflows import record_article_trace

FIXTURES = Path(__file__).parent / "fixtures"


def _config(mode: str = "async", **gate) -> dict:
    return {
        "observability": {
            "mlflow": {
                "judges": {
                    "workflow_defaults": [{"name": "coherence", "threshold": 0.7}],
                    "execution": {"mode": mode, "trace_wait_seconds": 20, "timeout_seconds": 5},
                }
            }
        },
        "quality_gate": {"enabled": True, "threshold": 0.7, "action": "block", **gate},
    }


def _feedback_count(trace_id: str) -> int:
    import mlflow

    mlflow.flush_trace_async_logging()
    trace = MlflowClient().get_trace(trace_id)
    return sum(1 for a in trace.info.assessments if getattr(a, "feedback", None) is not None)


def test_sync_mode_evaluates_in_process_without_redis(pipeline_env, monkeypatch):
    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    trace_id = record_article_trace()
    handle = tracejudge.enqueue(trace_id, config=_config("sync"))
    assert isinstance(handle, tracejudge.CompletedHandle)
    verdict = handle.verdict()
    assert verdict.status == "passed" and len(verdict.results()) == 3
    assert _feedback_count(trace_id) == 3


def test_disabled_mode_and_enable_judges_false_do_nothing(pipeline_env, caplog):
    trace_id = record_article_trace()
    with caplog.at_level("INFO", logger="tracejudge"):
        handle = tracejudge.enqueue(trace_id, config=_config("disabled"))
    assert isinstance(handle, tracejudge.DisabledHandle) and handle.verdict() is None
    assert "mode: disabled" in handle.reason and any("not evaluating" in r.getMessage() for r in caplog.records)
    off = _config()
    off["observability"]["mlflow"]["enable_judges"] = False
    assert tracejudge.enqueue(trace_id, config=off).status == "DISABLED"
    assert _feedback_count(trace_id) == 0


def test_enqueue_with_redis_down_raises_a_clear_error_without_the_password(pipeline_env, monkeypatch):
    from tracejudge.worker import reset_app

    monkeypatch.setenv("TRACEJUDGE_REDIS_URL", "redis://:hunter2secret@127.0.0.1:1/0")
    reset_app()
    try:
        with pytest.raises(tracejudge.EnqueueError) as err:
            tracejudge.enqueue("tr-" + "1" * 32, config=_config())
        message = str(err.value)
        assert "tr-" + "1" * 32 in message and "127.0.0.1:1" in message and "unreachable" in message
        assert "hunter2secret" not in message
    finally:
        monkeypatch.undo()
        reset_app()


def test_gate_queue_is_served_before_a_background_backlog(pipeline_env, fake_llm):
    """With one worker slot busy and a backlog on the background queue, a gate request goes next."""
    from celery.contrib.testing.worker import start_worker

    from tracejudge.worker import QUEUES, get_app

    slow = [record_article_trace(article=f"Backlog article {i} [[tj:latency=300]]") for i in range(8)]
    gate_trace = record_article_trace()
    config = _config()
    config["observability"]["mlflow"]["judges"]["node_overrides"] = {}
    with start_worker(get_app(), pool="threads", concurrency=1, perform_ping_check=False, queues=list(QUEUES), shutdown_timeout=60, loglevel="WARNING"):
        backlog = [tracejudge.enqueue(t, config=config) for t in slow]
        gate = tracejudge.enqueue(gate_trace, config=config, gate=True)
        verdict = gate.verdict(timeout=60)
        still_waiting = sum(1 for h in backlog if not h.ready())
        for h in backlog:
            h.verdict(timeout=60)
    assert verdict.status == "passed"
    # at most the evaluation already running (and one being fetched) went before the gate
    assert still_waiting >= len(backlog) - 2


def test_cli_gate_exit_codes(worker, capsys):
    config_file = Path(os.environ.get("TMPDIR", "/tmp")) / "tracejudge-cli-gate.yaml"
    import yaml

    config_file.write_text(yaml.safe_dump(_config()))
    passing = record_article_trace()
    failing = record_article_trace(article="Jumbled [[tj:score:coherence=0.2]]")
    erroring = record_article_trace(article="Text [[tj:fault:coherence=malformed]]")
    assert cli_main(["gate", passing, "--config", str(config_file), "--timeout", "60"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert cli_main(["gate", failing, "--config", str(config_file), "--timeout", "60"]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert cli_main(["gate", erroring, "--config", str(config_file), "--timeout", "60"]) == 2
    out = capsys.readouterr().out
    assert "ERROR" in out and "REPLY_NOT_JSON" in out


def test_cli_validate_config(capsys, tmp_path):
    assert cli_main(["validate-config", str(FIXTURES / "design" / "judges_config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "node research: harmfulness >= 0.8, coherence >= 0.75, relevance >= 0.8, groundedness >= 0.85, citation_quality >= 0.75" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("observability:\n  mlflow:\n    judges:\n      workflow_defaults:\n        - name: coherense\n")
    assert cli_main(["validate-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "workflow_defaults[0]" in err and "did you mean 'coherence'" in err


def test_cli_help_for_every_command(capsys):
    for command in (["--help"], ["enqueue", "--help"], ["gate", "--help"], ["demo", "--help"], ["validate-config", "--help"]):
        with pytest.raises(SystemExit) as done:
            cli_main(command)
        assert done.value.code == 0
    assert "exit" in capsys.readouterr().out


def test_cli_fake_llm_and_worker_help(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fake-llm", "--help"])
    assert "--latency-ms" in capsys.readouterr().out


def test_cli_worker_help_names_our_defaults():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tracejudge", "worker", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--pool threads" in done.stdout and "tracejudge.gate,tracejudge.online" in done.stdout


def test_judged_decorator_traces_and_enqueues(pipeline_env):
    @tracejudge.judged(config=_config("sync"))
    def answer(question: str) -> str:
        return f"The answer to {question!r} is 42."

    assert answer("life") == "The answer to 'life' is 42."  # return value unchanged
    handle = tracejudge.last_handle()
    assert isinstance(handle, tracejudge.CompletedHandle)
    verdict = handle.verdict()
    assert verdict.status == "passed" and [r.target for r in verdict.results()] == ["workflow"]


def test_plain_celery_finds_the_app():
    """`celery -A tracejudge.worker worker` works too: Celery finds the app and our task."""
    import subprocess
    import sys
    from pathlib import Path

    celery = Path(sys.executable).with_name("celery")
    done = subprocess.run([str(celery), "-A", "tracejudge.worker", "report"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "accept_content: ['json']" in done.stdout
    import tracejudge.worker

    assert "tracejudge.evaluate_trace" in tracejudge.worker.app.tasks


def test_cli_validate_config_reports_what_will_not_run_or_is_not_used(capsys, tmp_path):
    """A custom judge no target uses, gate/retry judges on no target, keys accepted but not used (issue 8, 9/13)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(
        """
observability:
  mlflow:
    async_logging: true
    artifacts: {quality: false, inputs: true}
    judges:
      workflow_defaults: [coherence]
      node_overrides:
        write: [{name: technical_accuracy, threshold: 0.8}]
      custom:
        - name: brand_voice
          grading_prompt: "Rate the brand voice of {output}"
quality_gate: {enabled: true, judges: [coherence, harmfulness]}
quality_retry: {enabled: true, judges: [completeness, technical_accuracy]}
optimization: {enabled: true, strategy: BootstrapFewShot}
"""
    )
    assert cli_main(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any("custom[0] (brand_voice): no target uses this judge" in w for w in warnings)
    assert any("quality_gate.judges[1] (harmfulness): this judge runs on no target" in w and "GATE_JUDGE_NOT_RUN" in w for w in warnings)
    assert any("quality_retry.judges[0] (completeness): this judge runs on no target" in w for w in warnings)
    assert not any("(coherence)" in w or "(technical_accuracy)" in w for w in warnings)
    for key in ("observability.mlflow.async_logging", "observability.mlflow.artifacts.inputs"):
        assert f"warning: {key}: accepted, not used by tracejudge" in warnings
    assert not any("optimization" in w for w in warnings)  # read by tracejudge optimize
    assert "quality_assessment.json and run metrics: not written" in out
    assert len(warnings) == 5


def test_cli_validate_config_shows_the_default_plan(capsys, tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("observability: {mlflow: {enabled: true}}\n")
    assert cli_main(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "workflow root: relevance >= 0.8, coherence >= 0.8, harmfulness >= 0.8" in out
    assert "warning" not in out


def test_cli_worker_with_a_malformed_setting_says_so_in_one_line():
    """A bad environment value stops `tracejudge worker` (and `beat`) with the one-line `error:` the other
    commands print, naming the variable, not a traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRACEJUDGE_WRITE_CONCURRENCY": "abc"}
    for command in ("worker", "beat"):
        done = subprocess.run([sys.executable, "-m", "tracejudge", command], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 2, (command, done.stderr[-500:])
        assert done.stderr.startswith("error: ") and "TRACEJUDGE_WRITE_CONCURRENCY" in done.stderr, done.stderr[-500:]
        assert "Traceback" not in done.stderr
