"""`tracejudge gate` says when no worker reads the gate queue, instead of timing out silently as PENDING
(issue 21: the README's plain-Celery command started a worker that read only tracejudge.online)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracejudge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def _started(app, queues):
    from celery.contrib.testing.worker import start_worker

    return start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, queues=queues,
                        shutdown_timeout=30, loglevel="WARNING")


def test_a_gate_with_only_an_online_worker_says_no_worker_reads_its_queue(pipeline_env, article_trace, capsys):
    from tracejudge.worker import QUEUE_ONLINE, get_app
    from tracejudge.worker.consumers import inspect_workers

    app = get_app()
    with _started(app, [QUEUE_ONLINE]):
        workers = inspect_workers(app)
        assert [w.queues for w in workers] == [[QUEUE_ONLINE]] and workers[0].processes == 1
        assert cli_main(["gate", article_trace, "--timeout", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warning: no worker reads the queue tracejudge.gate (")
    assert "reads tracejudge.online" in err and "-Q tracejudge.gate,tracejudge.online" in err
    assert "within 4 s; state PENDING: no worker reads the queue tracejudge.gate" in err  # the timeout error repeats why (and the whole wait)


def test_a_gate_with_no_worker_at_all_says_none_answers(pipeline_env, article_trace, capsys):
    # a short timeout (below the early check): the timeout's error says it
    assert cli_main(["gate", article_trace, "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert "no worker answers on this broker, so nothing reads the queue tracejudge.gate" in err


def test_a_gate_with_a_worker_on_both_queues_is_judged_without_warning(pipeline_env, article_trace, capsys):
    from tracejudge.worker import QUEUES, QUEUE_GATE, get_app
    from tracejudge.worker.consumers import no_consumer_message

    app = get_app()
    with _started(app, list(QUEUES)):
        assert no_consumer_message(app, QUEUE_GATE) is None
        code = cli_main(["gate", article_trace, "--timeout", "60"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    assert "warning" not in captured.err and "trace" in captured.out


@pytest.mark.parametrize("path", [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if p.exists()])
def test_documented_plain_celery_workers_read_the_gate_queue(path):
    """Every plain `celery ... worker` command in the docs' code blocks names the gate queue (-Q)."""
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code and line.lstrip().startswith("celery -A tracejudge.worker worker"):
            command = line.split("#", 1)[0]
            assert re.search(r"(-Q|--queues)[ =]\S*tracejudge\.gate", command), f"{path.name}: {line.strip()}"


def test_a_worker_that_misses_the_first_ping_is_not_reported_missing():
    """The CI failure of stop 23: a live worker on a loaded machine missed the one-second ping and the gate
    warned that none answers. A second, longer look is taken before saying so."""
    from tracejudge.worker.consumers import no_consumer_message

    class _Inspect:
        def __init__(self, app, timeout):
            self.app, self.timeout = app, timeout

        def ping(self):
            self.app.waits.append(self.timeout)
            return {"w1@h": {"ok": "pong"}} if self.timeout >= 5 else {}

        def active_queues(self):
            return {"w1@h": [{"name": "tracejudge.gate"}]}

        def stats(self):
            return {}

        def active(self):
            return {}

    class _App:
        waits: list = []

        class control:  # noqa: N801 - Celery's attribute name
            pass

    app = _App()
    app.control = type("C", (), {"inspect": lambda self, timeout, **kw: _Inspect(app, timeout)})()
    assert no_consumer_message(app, "tracejudge.gate", timeout=1.0, confirm_timeout=5.0) is None
    assert app.waits == [1.0, 5.0]  # the first look's ping, then the confirming look's


def test_a_gate_shorter_than_the_workers_trace_wait_says_the_worker_may_still_wait(pipeline_env, tmp_path, capsys):
    """A trace the worker is still waiting for (not in the store): the gate's wait ends first and says why it may,
    naming --timeout and trace_wait_seconds."""
    import uuid

    from tracejudge.worker import QUEUES, get_app

    config = tmp_path / "tracejudge.yaml"
    config.write_text("observability:\n  mlflow:\n    judges:\n      execution:\n        trace_wait_seconds: 6\n")
    with _started(get_app(), list(QUEUES)):
        code = cli_main(["gate", f"tr-{uuid.uuid4().hex}", "--config", str(config), "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "within 1 s; state " in err and "no worker" not in err
    assert ("the worker may still be waiting for the trace to be whole: it waits up to 6 s for a trace's spans "
            "(judges.execution.trace_wait_seconds), longer than this wait of 1 s (--timeout); wait longer than 6 s") in err


def test_the_python_timeout_says_when_no_worker_reads_the_queue(pipeline_env, article_trace, monkeypatch):
    """handle.verdict(timeout=...) gives the hint the CLI gives, from the same check, only on a timeout."""
    import tracejudge
    from tracejudge.worker import QUEUE_ONLINE, get_app

    with pytest.raises(tracejudge.EvaluationTimeout) as none:
        tracejudge.enqueue(article_trace, gate=True).verdict(timeout=0.5)
    assert str(none.value).endswith("; state PENDING: " + none.value.hint)
    assert none.value.hint.startswith("no worker answers on this broker, so nothing reads the queue tracejudge.gate; start one:")

    with _started(get_app(), [QUEUE_ONLINE]):
        handle = tracejudge.enqueue(article_trace, gate=True)
        with pytest.raises(tracejudge.EvaluationTimeout) as online_only:
            handle.verdict(timeout=0.5)
        assert online_only.value.hint.startswith("no worker reads the queue tracejudge.gate (")
        assert "reads tracejudge.online" in online_only.value.hint
        with pytest.raises(tracejudge.EvaluationTimeout) as unasked:  # a caller waiting on many handles opts out
            handle.verdict(timeout=0.2, check_workers=False)
        assert unasked.value.hint is None and str(unasked.value).endswith("state PENDING")

    def broken(*args, **kwargs):
        raise RuntimeError("the check itself failed")

    monkeypatch.setattr("tracejudge.worker.consumers.no_consumer_message", broken)
    with pytest.raises(tracejudge.EvaluationTimeout) as failed_check:  # the timeout, never the check's error
        handle.verdict(timeout=0.2)
    assert failed_check.value.hint is None
