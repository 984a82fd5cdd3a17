"""Judges registered from Python (``TRACEJUDGE_JUDGE_MODULES``): ``validate-config`` checks them as a worker
imports them, and a worker that cannot import one refuses to start with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tracejudge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]

JUDGES_MODULE = '''
import tracejudge

tracejudge.register_judge(tracejudge.Judge(
    name="politeness", description="Is the reply polite?",
    prompt="Rate the politeness of this reply.\\n{output}", threshold=0.7))
'''

CONFIG = "observability:\n  mlflow:\n    judges:\n      workflow_defaults: [politeness, relevance]\n"


def run(args: list[str], tmp_path: Path, modules: str | None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRACEJUDGE_JUDGE_MODULES"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    if modules is not None:
        env["TRACEJUDGE_JUDGE_MODULES"] = modules
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def tracejudge(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracejudge", *args]


def test_validate_config_imports_the_judge_modules_a_worker_imports(tmp_path):
    (tmp_path / "my_judges_mod.py").write_text(JUDGES_MODULE)
    (tmp_path / "x.yaml").write_text(CONFIG)

    out = run(tracejudge("validate-config", "x.yaml"), tmp_path, "my_judges_mod")
    assert out.returncode == 0, out.stderr
    assert "every target: politeness >= 0.7, relevance >= 0.8" in out.stdout

    without = run(tracejudge("validate-config", "x.yaml"), tmp_path, None)
    assert without.returncode == 2
    assert "unknown judge 'politeness'" in without.stderr


def test_validate_config_names_a_judge_module_it_cannot_import(tmp_path):
    (tmp_path / "x.yaml").write_text(CONFIG)
    (tmp_path / "broken_judges.py").write_text("import tracejudge\nraise RuntimeError('no API key for the judge model')\n")

    out = run(tracejudge("validate-config", "x.yaml"), tmp_path, "my_judges_mdo")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: cannot import judge module 'my_judges_mdo' (TRACEJUDGE_JUDGE_MODULES): "
        "ModuleNotFoundError: No module named 'my_judges_mdo' (is its directory on PYTHONPATH?)"
    )
    out = run(tracejudge("validate-config", "x.yaml"), tmp_path, "broken_judges")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: cannot import judge module 'broken_judges' (TRACEJUDGE_JUDGE_MODULES): RuntimeError: no API key for the judge model"
    )


def test_a_worker_that_cannot_import_a_judge_module_refuses_to_start(tmp_path):
    redis_url = os.environ.get("TRACEJUDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")  # (as conftest; the worker stops before it connects)
    args = tracejudge("worker", "--processes", "1", "--pool", "solo")
    env = {k: v for k, v in os.environ.items() if k != "TRACEJUDGE_JUDGE_MODULES"}
    env.update(TRACEJUDGE_REDIS_URL=redis_url, TRACEJUDGE_JUDGE_MODULES="my_judges_mdo", PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == (
        "error: cannot import judge module 'my_judges_mdo' (TRACEJUDGE_JUDGE_MODULES): "
        "ModuleNotFoundError: No module named 'my_judges_mdo' (is its directory on PYTHONPATH?)"
    )
    assert "ready" not in out.stdout + out.stderr

    # started by Celery's own command, the worker stops at its start-up signal too, never reporting ready
    celery = [sys.executable, "-m", "celery", "-A", "tracejudge.worker", "worker", "--pool", "solo", "--loglevel", "INFO"]
    out = subprocess.run(celery, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode != 0
    log = out.stdout + out.stderr
    assert "cannot import judge module 'my_judges_mdo' (TRACEJUDGE_JUDGE_MODULES)" in log
    assert "ready" not in log and "Signal handler" not in log


def test_validate_config_shows_the_session_judges(capsys, tmp_path):
    path = tmp_path / "sessions.yaml"
    path.write_text(
        "observability:\n  mlflow:\n    judges:\n      sessions:\n"
        "        judges: [user_frustration, {name: knowledge_retention, threshold: 0.7}]\n"
        "        idle_seconds: 120\n"
    )
    assert cli_main(["validate-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "  sessions: user_frustration >= 0.8, knowledge_retention >= 0.7; judged once idle 120 s (at most 200 per scan)\n" in out


def test_other_commands_name_a_judge_module_they_cannot_import_in_one_line(tmp_path, monkeypatch, capsys):
    """calibrate (like backfill and offline scoring) imports the judge modules too: one error line, exit 2, no traceback."""
    monkeypatch.setenv("TRACEJUDGE_JUDGE_MODULES", "my_judges_mdo")
    monkeypatch.delenv("TRACEJUDGE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["calibrate", "--judge", "relevance"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot import judge module 'my_judges_mdo' (TRACEJUDGE_JUDGE_MODULES)"), err
    assert "Traceback" not in err
