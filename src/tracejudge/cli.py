"""The ``tracejudge`` command: a thin layer over the public API.

    tracejudge worker [CELERY OPTIONS...]    run a worker (our defaults; Celery options pass through)
    tracejudge enqueue TRACE_ID [--wait S]   queue a trace for judging
    tracejudge gate TRACE_ID --timeout 60    judge on the gate queue, wait, exit 0 passed / 1 failed / 2 error or timeout
    tracejudge demo                          the end-to-end demo on this machine
    tracejudge fake-llm --port 8089          the local OpenAI-compatible test server
    tracejudge validate-config FILE          check a config file
    tracejudge config-schema > schema.json   the config's JSON Schema, for editors
    tracejudge beat [CELERY BEAT OPTIONS...] run the scheduler (online pick-up, deferred evaluations)
    tracejudge backfill --experiment-id 1    judge traces already in MLflow (--since 7d --dry-run --wait ...)
    tracejudge budget                        today's judge spend, by model and by judge
    tracejudge status [--format json]        workers, queues, recent verdicts, pick-up; exit 0 healthy, 1 problem, 2 unknown
    tracejudge report --experiment-id 1      judged quality over a window (table, json, html, md)
    tracejudge dashboard [--port 8050]       the quality dashboard (loopback by default)
    tracejudge alerts check --once           check the quality alert rules; exit 1 when one fires
    tracejudge calibrate --judge relevance   run a judge over a labelled set; agreement figures
    tracejudge agreement --experiment-id 1   judge-vs-human agreement from people's feedback in MLflow
    tracejudge dataset --experiment-id 1 --name regressions   production failures into an MLflow evaluation dataset
    tracejudge evaluate --dataset regressions --predict app:answer   the offline release gate (exit 0/1/2)
    tracejudge optimize --prompt prompts:/qa/1 --dataset regressions --predict app:answer   improve a prompt
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from tracejudge.display import format_verdict

__all__ = ["exit_code", "format_verdict", "main", "run_worker"]

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2



def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and argv[0] in ("worker", "fake-llm", "beat"):
        # These pass their remaining options straight through.
        command, rest = argv[0], argv[1:]
        if command == "worker":
            return run_worker(rest)
        if command == "beat":
            return run_beat(rest)
        from tracejudge.testing.fake_llm import main as fake_llm_main

        return fake_llm_main(rest)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    from tracejudge.tasks.runtime import JudgeModuleError

    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `tracejudge report | head`: the reader left; stop quietly, as cat does
        _silence_stdout()
        return EXIT_PASSED
    except JudgeModuleError as exc:  # backfill, calibrate, offline scoring...: one line, as validate-config says it
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's flush at exit does not fail on the closed pipe again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracejudge",
        description="LLM judges for finished MLflow traces, run in the background by Celery workers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(__doc__ or "").split("\n", 2)[-1],
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    p = sub.add_parser("worker", help="run a worker (Celery options pass through)", add_help=False)
    p.set_defaults(func=lambda a: run_worker([]))

    p = sub.add_parser("enqueue", help="queue a finished trace for judging")
    _common(p)
    p.add_argument("--gate", action="store_true", help="use the gate queue (someone is waiting)")
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait this long for the verdict and print it")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser(
        "gate",
        help="judge a trace on the gate queue and wait: exit 0 passed, 1 failed, 2 error or timeout",
        description="Judge a trace on the gate queue and wait for the verdict. Exit status: 0 passed, "
        "1 failed (below threshold), 2 error (a judge failed, unknown trace, timeout, broker down).",
    )
    _common(p)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the verdict (default 60)")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("demo", help="record a sample workflow trace, judge it with a worker, print the verdict")
    p.add_argument("--dir", default=".tracejudge/demo", help="where the demo's MLflow store lives (default .tracejudge/demo)")
    p.add_argument("--latency-ms", type=float, default=200.0, help="latency of the bundled test LLM server")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the verdict")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fake-llm", help="run the local OpenAI-compatible test server (options: see --help)", add_help=False)
    p.set_defaults(func=lambda a: 0)

    p = sub.add_parser("beat", help="run Celery beat: online pick-up and deferred evaluations (Celery options pass through)", add_help=False)
    p.set_defaults(func=lambda a: run_beat([]))

    p = sub.add_parser(
        "backfill",
        help="judge traces already in MLflow (paged, resumable, with progress)",
        description="Page through an experiment's traces and enqueue each one on the background queue. "
        "Skips traces already judged with the current judges unless --force; applies sampling and filters; "
        "holds back while the queue is deeper than --max-queue; keeps a checkpoint in Redis (--resume).",
    )
    p.add_argument("--experiment-id", required=True, help="experiment id (or name)")
    p.add_argument("--since", help="only traces started since: a duration (7d, 12h, 30m) or a date (2026-11-01)")
    p.add_argument("--until", help="only traces started until: a duration ago or a date")
    p.add_argument("--filter", dest="filter_string", help="an MLflow search_traces filter, e.g. \"tags.env = 'prod'\"")
    p.add_argument("--judges", help="comma-separated judge names replacing the plan's judges")
    p.add_argument("--sample", type=float, help="share of traces to judge (0..1), replacing judges.sampling.rate")
    p.add_argument("--force", action="store_true", help="re-judge traces that already have results (the new ones supersede them)")
    p.add_argument("--dry-run", action="store_true", help="only count, and show a sample of trace ids")
    p.add_argument("--max", type=int, dest="max_traces", help="look at no more than this many traces")
    p.add_argument("--wait", nargs="?", type=float, const=3600.0, metavar="SECONDS",
                   help="wait for the verdicts (default up to 3600 s), then print the pass rate and error counts")
    p.add_argument("--resume", action="store_true", help="continue the same backfill after an interruption (Ctrl-C)")
    p.add_argument("--max-queue", type=int, default=1000, help="hold back while the queue has more messages than this (default 1000)")
    p.add_argument("--sessions", action="store_true",
                   help="judge past conversations (traces sharing mlflow.trace.session) with judges.sessions' judges instead of traces")
    p.add_argument("--config", help="YAML config file (default: $TRACEJUDGE_CONFIG)")
    p.set_defaults(func=cmd_backfill)

    p = sub.add_parser("budget", help="today's judge spend (UTC), by model and by judge")
    p.add_argument("--day", help="another UTC day, YYYY-MM-DD")
    p.add_argument("--config", help="YAML config file (for the limit; default: $TRACEJUDGE_CONFIG)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_budget)

    from tracejudge.status import add_parser as add_status_parser

    add_status_parser(sub)

    p = sub.add_parser("validate-config", help="check a config file and print the judge plan")
    p.add_argument("file", help="YAML config file")
    p.set_defaults(func=cmd_validate_config)

    from tracejudge.cli_offline import add_commands as add_offline_commands

    add_offline_commands(sub)  # dataset, evaluate, optimize

    p = sub.add_parser(
        "config-schema",
        help="print the config's JSON Schema (for editors: yaml-language-server)",
        description="Print the JSON Schema of a tracejudge YAML config (the design's layout). Save it and put "
        "'# yaml-language-server: $schema=PATH' on the first line of the YAML so editors complete and check it.",
    )
    p.set_defaults(func=cmd_config_schema)

    p = sub.add_parser("report", help="judged quality over a time window: table, json, html or md")
    _monitor_options(p)
    p.add_argument("--format", default="table", help="table (default), json, html (one self-contained file) or md")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--schema", action="store_true", help="print the JSON schema of --format json and exit")
    p.add_argument("--llm-summary", action="store_true",
                   help="add a plain-language summary of the failure themes from the judges' LLM (TRACEJUDGE_LLM_BASE_URL); off by default")
    p.add_argument("--rebuild-rollups", action="store_true",
                   help="first rebuild the window's Redis rollups from MLflow (a cache of it; clears gaps --source auto reports)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dashboard", help="serve the quality dashboard (a web page and its JSON API)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    p.add_argument("--experiment-id", "--experiment", dest="experiment", help="the experiment shown by default (id or name)")
    p.add_argument("--token", help="require this bearer token on every request (default: $TRACEJUDGE_DASHBOARD_TOKEN)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("alerts", help="quality alerts: check the rules of quality_alerts")
    alerts = p.add_subparsers(metavar="ACTION")
    c = alerts.add_parser("check", help="check every rule now; exit 1 when any rule fires (for cron)")
    c.add_argument("--once", action="store_true", help="check once and exit (the default; for cron)")
    c.add_argument("--config", help="YAML config with quality_alerts (default: $TRACEJUDGE_CONFIG)")
    c.add_argument("--experiment-id", "--experiment", dest="experiment", help="experiment id or name (default: quality_alerts.experiment)")
    c.add_argument("--json", action="store_true", help="print the outcome as JSON")
    c.set_defaults(func=cmd_alerts_check)
    p.set_defaults(func=lambda a: (p.print_help(), EXIT_ERROR)[1])

    # (q, not p: the alerts parser's default above reads p when it runs)
    q = sub.add_parser(
        "calibrate",
        help="run one judge over a labelled set and print its agreement with the labels",
        description="Run one judge over a labelled JSONL set (default: the set shipped for a built-in judge) "
        "with the workers' client, timeouts and rate limit; print Spearman, Kendall, MAE, pass/fail accuracy, "
        "Cohen's kappa, the confusion matrix and the largest disagreements.",
    )
    q.add_argument("--judge", required=True, help="the judge's name (built-in, custom in the config, or registered)")
    q.add_argument("--dataset", help="JSONL file: one item a line, the judge's variables and a label (0..1 or pass/fail)")
    q.add_argument("--model", help="judge model (default: the judge's, else $TRACEJUDGE_JUDGE_MODEL or gpt-4o-mini)")
    q.add_argument("--threshold", type=float, help="pass/fail threshold (default: the judge's, else the environment's)")
    q.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    q.add_argument("--config", help="YAML config file (default: $TRACEJUDGE_CONFIG)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=lambda a: _judge_quality("cmd_calibrate", a))

    q = sub.add_parser(
        "agreement",
        help="judge-vs-human agreement from people's feedback (HUMAN assessments) in MLflow",
        description="Pair our judges' scores with people's feedback on the same span and judge name (MLflow "
        "assessments with source HUMAN) and print the calibrate figures per judge and judge version.",
    )
    q.add_argument("--experiment-id", "--experiment", dest="experiment", required=True, help="experiment id or name")
    q.add_argument("--since", default="30d", help="window start: 90m, 24h, 30d, 2w or an ISO date/time (default 30d)")
    q.add_argument("--until", help="window end (default now), same forms as --since")
    q.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    q.set_defaults(func=lambda a: _judge_quality("cmd_agreement", a))
    return parser


def _judge_quality(command: str, args: argparse.Namespace) -> int:
    from tracejudge import judge_quality

    return int(getattr(judge_quality, command)(args))


def _monitor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment-id", "--experiment", dest="experiment", help="experiment id or name (required)")
    p.add_argument("--workflow", help="only traces of this workflow (the trace name)")
    p.add_argument("--environment", help="only this environment (production, development, experimental)")
    p.add_argument("--since", default="7d", help="window start: 90m, 24h, 7d, 2w or an ISO date/time (default 7d)")
    p.add_argument("--until", help="window end (default now), same forms as --since")
    p.add_argument("--bucket", default="day", help="hour or day (default day)")
    p.add_argument("--source", default="auto", help="auto (default), mlflow or redis: where the figures come from")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace_id", help="the MLflow trace id (tr-...)")
    p.add_argument("--config", help="YAML config file (default: $TRACEJUDGE_CONFIG, else the workers' own)")
    p.add_argument("--judges", help="comma-separated judge names replacing the plan's judges for this call")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")


def run_worker(extra: list[str]) -> int:
    """``celery worker`` with tracejudge's defaults: threads pool, both queues, one process per core; extra options win."""
    from tracejudge.worker.start import DEFAULT_CONCURRENCY, DEFAULT_POOL, run_supervisor, run_worker_process, take_processes

    if any(a in ("-h", "--help") for a in extra):
        print(
            "usage: tracejudge worker [--processes N] [CELERY WORKER OPTIONS...]\n\n"
            "Runs N worker processes (default: one per core; 1 with another --pool), each "
            f"`celery -A tracejudge.worker worker --pool {DEFAULT_POOL} --concurrency {DEFAULT_CONCURRENCY} "
            "-Q tracejudge.gate,tracejudge.online --loglevel INFO` (options you give replace these), supervised: a process "
            "that dies is started again, SIGTERM stops all (running evaluations finish).\n"
            "Environment: TRACEJUDGE_REDIS_URL, MLFLOW_TRACKING_URI, TRACEJUDGE_LLM_BASE_URL, TRACEJUDGE_LLM_API_KEY,\n"
            "TRACEJUDGE_CONFIG, TRACEJUDGE_JUDGE_MODULES, TRACEJUDGE_METRICS_PORT (docs/operating.md). Celery's own options follow.\n"
        )
    from tracejudge.worker import get_app

    try:
        processes, extra = take_processes(extra)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    app = _app_or_error(get_app)
    if app is None:
        return EXIT_ERROR
    from tracejudge.config import Settings
    from tracejudge.tasks.runtime import JudgeModuleError, import_judge_modules

    try:  # before any process starts: a worker without its configured judges must not report ready
        import_judge_modules(Settings.from_env().judge_modules)
    except JudgeModuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if processes > 1 and not any(a in ("-h", "--help") for a in extra):
        return run_supervisor(processes, extra)
    return run_worker_process(app, extra)


def run_beat(extra: list[str]) -> int:
    """``celery beat`` for tracejudge's schedule (``celery -A tracejudge.worker beat`` works too)."""
    from pathlib import Path

    from tracejudge.worker import get_app
    from tracejudge.worker.start import has_option as _has

    argv = ["beat"]
    if not _has(extra, "-s", "--schedule"):
        Path(".tracejudge").mkdir(exist_ok=True)
        argv += ["--schedule", str(Path(".tracejudge") / "celerybeat-schedule")]
    if not _has(extra, "-l", "--loglevel"):
        argv += ["--loglevel", "INFO"]
    app = _app_or_error(get_app)
    if app is None:
        return EXIT_ERROR
    app.start(argv + extra)
    return 0


def _app_or_error(get_app: Any) -> Any:
    """The Celery app, or None after a one-line ``error:`` when the environment's settings are malformed
    (e.g. ``TRACEJUDGE_WRITE_CONCURRENCY=abc``), as the other commands report them, not a traceback."""
    from tracejudge.config import ConfigError

    try:
        return get_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_enqueue(args: argparse.Namespace) -> int:
    handle = _enqueue(args, gate=args.gate)
    if not hasattr(handle, "verdict"):
        return handle  # an exit code: error, or judging is off
    print(f"enqueued trace {args.trace_id} as evaluation {handle.id}")
    if args.wait:
        from tracejudge.worker import QUEUE_GATE, QUEUE_ONLINE

        return _wait_and_print(handle, args.wait, as_json=args.json, queue=QUEUE_GATE if args.gate else QUEUE_ONLINE,
                               option="--wait")
    return EXIT_PASSED


def cmd_gate(args: argparse.Namespace) -> int:
    handle = _enqueue(args, gate=True)
    if not hasattr(handle, "verdict"):
        return handle
    from tracejudge.worker import QUEUE_GATE

    return _wait_and_print(handle, args.timeout, as_json=args.json, queue=QUEUE_GATE)


def _enqueue(args: argparse.Namespace, *, gate: bool) -> Any:
    """The handle, or an exit code after printing why there is none."""
    import tracejudge

    try:
        handle = tracejudge.enqueue(args.trace_id, config=args.config, judges=_judges(args), gate=gate)
    except (tracejudge.EnqueueError, tracejudge.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(handle, tracejudge.DisabledHandle):
        print(f"not evaluated: {handle.reason}")
        return EXIT_PASSED
    return handle


#: A gate whose verdict is not there after this long asks whether any worker reads its queue.
CONSUMER_CHECK_AFTER_SECONDS = 2.0


def _wait_and_print(handle: Any, timeout: float, *, as_json: bool, queue: str | None = None, option: str = "--timeout") -> int:
    """Wait for the verdict and print it; with ``queue``, say early when no worker reads that queue. A wait
    shorter than the worker's wait for a whole trace says so when it ends (``option`` names the flag)."""
    import time

    import tracejudge

    deadline = time.monotonic() + timeout
    hint = None
    try:
        if queue is not None and timeout > CONSUMER_CHECK_AFTER_SECONDS:
            try:
                verdict = handle.verdict(timeout=CONSUMER_CHECK_AFTER_SECONDS, raise_on_block=False)
            except tracejudge.EvaluationTimeout as early:  # the handle asked whether a worker reads its queue
                hint = early.hint
                if hint:
                    print(f"warning: {hint}; waiting up to {timeout:g} s", file=sys.stderr, flush=True)
                verdict = handle.verdict(timeout=max(0.0, deadline - time.monotonic()), raise_on_block=False,
                                         check_workers=hint is None)  # a reader found missing is not asked for again
        else:
            verdict = handle.verdict(timeout=timeout, raise_on_block=False)
    except tracejudge.EvaluationTimeout as exc:
        if queue is None:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        hint = hint or exc.hint or trace_wait_hint(handle, timeout, option=option)
        # (the whole wait, not what was left of it after the early check)
        print(f"error: no verdict for trace {handle.trace_id} (evaluation {handle.id}) within {timeout:g} s; state {handle.status}"
              + (f": {hint}" if hint else ""), file=sys.stderr)
        return EXIT_ERROR
    except tracejudge.EvaluationFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(verdict.model_dump_json(indent=2) if as_json else format_verdict(verdict))
    return exit_code(verdict)


def trace_wait_hint(handle: Any, timeout: float, *, option: str = "--timeout") -> str | None:
    """When a wait ended sooner than a worker may wait for the trace's spans (``trace_wait_seconds`` of the config
    sent with the task, else this process's), say so with both numbers; else None.

    >>> from types import SimpleNamespace as NS
    >>> from tracejudge.config import load_config
    >>> print(trace_wait_hint(NS(config=load_config({})), 5))
    the worker may still be waiting for the trace to be whole: it waits up to 30 s for a trace's spans (judges.execution.trace_wait_seconds), longer than this wait of 5 s (--timeout); wait longer than 30 s
    >>> trace_wait_hint(NS(config=load_config({})), 60) is None
    True
    """
    config = getattr(handle, "config", None)
    wait = getattr(getattr(getattr(config, "judges", None), "execution", None), "trace_wait_seconds", None)
    if wait is None or timeout >= wait:
        return None
    return (f"the worker may still be waiting for the trace to be whole: it waits up to {wait:g} s for a trace's spans "
            f"(judges.execution.trace_wait_seconds), longer than this wait of {timeout:g} s ({option}); "
            f"wait longer than {wait:g} s")


def exit_code(verdict: Any) -> int:
    return {"passed": EXIT_PASSED, "failed": EXIT_FAILED}.get(verdict.status, EXIT_ERROR)


def cmd_config_schema(args: argparse.Namespace) -> int:
    from tracejudge.config.schema import config_schema

    print(json.dumps(config_schema(), indent=2, sort_keys=True))
    return 0


def cmd_validate_config(args: argparse.Namespace) -> int:
    from tracejudge.config import ConfigError, config_warnings, load_config, validate_judge_names
    from tracejudge.judges.plan import WORKFLOW_TARGET, plan_for_target
    from tracejudge.config import Settings
    from tracejudge.judges.registry import default_registry
    from tracejudge.tasks.runtime import JudgeModuleError, import_judge_modules

    try:  # the judges the workers register from Python (TRACEJUDGE_JUDGE_MODULES), as a worker imports them
        import_judge_modules(Settings.from_env().judge_modules)
    except JudgeModuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    registry = default_registry()
    try:
        config = load_config(args.file)
        registry = registry.with_config(config)
        validate_judge_names(config, registry.names())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    execution = config.judges.execution
    print(f"{args.file}: OK")
    print(f"  judging: {'on' if config.judging_enabled else 'off'} (mode {execution.mode}, timeout {execution.timeout_seconds:g} s, attempts {execution.attempts})")
    if not config.has_plan:
        print("  no judges named: the default plan runs on the workflow root")
    for line in _sessions_lines(config, registry):
        print(f"  {line}")
    for target in [WORKFLOW_TARGET, *config.judges.node_overrides]:
        plan = plan_for_target(target, config, registry)
        names = ", ".join(f"{p.judge.name} >= {p.threshold:g}" for p in plan) or "(none)"
        label = ("every target" if config.has_plan else "workflow root") if target == WORKFLOW_TARGET else f"node {target}"
        print(f"  {label}: {names}")
    gate = config.quality_gate
    if config.gate_enabled:
        print(f"  quality gate: {gate.action} below {gate.threshold:g} ({', '.join(gate.judges) or 'all judges'})")
    elif gate.enabled:
        print("  quality gate: off (quality_based_workflows: false)")
    for line in gate_sampling_notes(config):
        print(f"  {line}")
    retry = config.quality_retry
    if config.retry_enabled:
        print(f"  quality retry: below {retry.threshold:g}, up to {retry.max_retries} retries ({', '.join(retry.judges) or 'all judges'})")
    elif retry.enabled:
        print("  quality retry: off (quality_based_workflows: false)")
    print(f"  quality_assessment.json and run metrics: {'written' if config.write_report else 'not written (artifact settings)'}")
    for line in _controls_lines(config):
        print(f"  {line}")
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    return EXIT_PASSED


def _sessions_lines(config: Any, registry: Any) -> list[str]:
    """The session judges (``judges.sessions``) with their thresholds and idle time, for ``validate-config``."""
    sessions = config.judges.sessions
    if not sessions.enabled:
        return []
    from tracejudge.controls.session_judged import plan_session

    names = ", ".join(f"{p.judge.name} >= {p.threshold:g}" for p in plan_session(config, registry))
    return [f"sessions: {names}; judged once idle {sessions.idle_seconds:g} s (at most {sessions.max_per_scan} per scan)"]


def gate_sampling_notes(config: Any) -> list[str]:
    """What per-judge sampling (``judges.sampling.judges``) of a gating judge does to background verdicts."""
    rates = config.judges.sampling.judges
    if not config.gate_enabled or not rates:
        return []
    gating = set(config.quality_gate.judges) or set(rates)
    sampled = sorted(name for name in rates if name in gating)
    if not sampled:
        return []
    share = ", ".join(f"{name} on {rates[name]:.0%} of traces" for name in sampled)
    return [
        f"sampled gating judges: {share} in the background (gate requests always run them); on the other traces "
        "the status is decided on the gating judges that ran, and the verdict names the sampled-out ones "
        "(gate_judges_sampled_out); a trace whose gating judges were all sampled out is 'skipped', never 'error'"
    ]


def _controls_lines(config: Any) -> list[str]:
    """The production controls and alert rules in effect, one line each, for ``validate-config``."""
    judges = config.judges
    sampling = judges.sampling
    lines = []
    if sampling.rate < 1 or sampling.judges:
        per_judge = ", ".join(f"{name} {rate:.0%}" for name, rate in sampling.judges.items())
        lines.append(
            f"sampling: {sampling.rate:.0%} of traces" + (f"; within them {per_judge}" if per_judge else "")
            + ("; gate traces always judged" if sampling.gates_always else "")
        )
    else:
        lines.append("sampling: every trace")
    filters = judges.filters
    kept = [f"workflows {', '.join(filters.workflows)}" if filters.workflows else "",
            f"tags {', '.join(f'{k}={v}' for k, v in filters.tags.items())}" if filters.tags else "",
            f"states {', '.join(filters.status)}" if filters.status else ""]
    lines.append("filters: only " + "; ".join(k for k in kept if k) if any(kept) else "filters: none")
    budget = judges.budget
    lines.append(
        f"budget: ${budget.daily_usd:g} a day (UTC), then {budget.on_exceed}" if budget.daily_usd is not None else "budget: none"
    )
    cache = judges.cache
    lines.append(f"result cache: on, {cache.ttl_hours:g} h" if cache.enabled else "result cache: off")
    online = judges.online
    lines.append(
        f"online pick-up: experiments {', '.join(online.experiments)} every {online.interval_seconds:g} s, "
        f"{online.delay_seconds:g} s after a trace ends (run `tracejudge beat`)"
        if online.experiments else "online pick-up: off"
    )
    review = judges.review
    if review.queue:
        when = review.when
        rules = [f"status {', '.join(when.status)}" if when.status else "",
                 f"a score within {when.near_threshold:g} of its threshold" if when.near_threshold is not None else "",
                 f"replies spread over {when.score_stdev_above:g}" if when.score_stdev_above is not None else ""]
        lines.append(f"human review: to MLflow review queue {review.queue!r} on {' or '.join(r for r in rules if r) or 'nothing'}; "
                     f"{review.rate:.0%} of them, at most {review.daily_max} a day")
    alerts = config.quality_alerts
    if alerts.active:
        sinks = ", ".join(sink.type + (f" (url from ${sink.url_env})" if sink.url_env else "") for sink in alerts.sinks) or "none"
        lines.append(f"alerts: every {alerts.check_every_seconds / 60:g} min over {alerts.window_minutes} min, to {sinks}:")
        lines += [f"  - {rule.label}" for rule in alerts.rules]
    else:
        lines.append("alerts: " + ("off" if not alerts.enabled else "no rules"))
    return lines


def cmd_backfill(args: argparse.Namespace) -> int:
    from tracejudge.cli_controls import backfill_command

    return backfill_command(args)


def cmd_budget(args: argparse.Namespace) -> int:
    from tracejudge.cli_controls import budget_command

    return budget_command(args)


def cmd_report(args: argparse.Namespace) -> int:
    from tracejudge.monitor import render

    if args.schema:
        print(render.schema())
        return EXIT_PASSED
    if args.format not in render.FORMATS:
        print(f"error: --format: unknown format {args.format!r}; use one of {', '.join(render.FORMATS)}", file=sys.stderr)
        return EXIT_ERROR
    summary = _summary(args)
    if isinstance(summary, int):
        return summary
    if args.llm_summary:
        from tracejudge.config import ConfigError
        from tracejudge.judges.errors import JudgeError
        from tracejudge.monitor.llm_summary import add_llm_summary

        try:
            add_llm_summary(summary)
        except (ConfigError, JudgeError) as exc:
            print(f"error: --llm-summary: {exc}", file=sys.stderr)
            return EXIT_ERROR
    text = render.render(summary, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        print(f"wrote {args.output} ({args.format})", file=sys.stderr)
    else:
        print(text)
    return EXIT_PASSED


def _summary(args: argparse.Namespace) -> Any:
    """The summary for the monitor options, or an exit code after printing what is wrong."""
    from pydantic import ValidationError

    from tracejudge.mlflow_io.query import ExperimentNotFound
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.monitor import BadQuery, MonitorQuery, summarise_quality
    from tracejudge.monitor.dashboard import _redis, _validation_message

    if not args.experiment:
        print("error: --experiment-id: give an experiment id or name", file=sys.stderr)
        return EXIT_ERROR
    try:
        query = MonitorQuery(
            experiment=args.experiment,
            workflow=args.workflow,
            environment=args.environment,
            since=args.since,
            until=args.until,
            bucket=args.bucket,
            source=args.source,
        )
        rebuild = getattr(args, "rebuild_rollups", False)
        redis = _redis() if query.source != "mlflow" or rebuild else None
        if rebuild:
            from tracejudge.monitor.rebuild import rebuild_window

            if redis is None:
                print("error: --rebuild-rollups: no Redis answers (set TRACEJUDGE_REDIS_URL)", file=sys.stderr)
                return EXIT_ERROR
            print(rebuild_window(query, redis=redis).text(), file=sys.stderr)
        return summarise_quality(query, redis=redis)
    except ValidationError as exc:
        message = _validation_message(exc)
        for name in ("bucket", "source", "since", "until", "experiment"):
            message = message.replace(f"{name}: ", f"--{name}: ", 1) if message.startswith(name) else message
        print(f"error: {message}", file=sys.stderr)
    except (BadQuery, ExperimentNotFound, MlflowUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return EXIT_ERROR


def cmd_dashboard(args: argparse.Namespace) -> int:
    from tracejudge.config import Settings
    from tracejudge.monitor.dashboard import serve

    env_token = Settings.from_env().dashboard_token
    token = args.token or (env_token.get_secret_value() if env_token is not None else None)
    problem = _cannot_listen(args.host, args.port)
    if problem:
        print(f"error: --port {args.port}: cannot listen on {args.host}:{args.port} ({problem}); choose another --port", file=sys.stderr)
        return EXIT_ERROR
    where = f"http://{args.host}:{args.port}/"
    print(f"tracejudge dashboard on {where}" + (" (bearer token required; open /?token=... once)" if token else ""), flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print("warning: listening beyond this machine without --token; the page shows trace outputs", file=sys.stderr)
    serve(host=args.host, port=args.port, token=token, default_experiment=args.experiment)
    return EXIT_PASSED


def _cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not an address of this machine), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def cmd_alerts_check(args: argparse.Namespace) -> int:
    from tracejudge.monitor.alerts import run_check_cli

    from tracejudge.worker import QUEUES

    return run_check_cli(config=args.config, experiment=args.experiment, as_json=args.json, queues=QUEUES)


def cmd_demo(args: argparse.Namespace) -> int:
    from tracejudge.demo import run_demo

    return run_demo(directory=args.dir, latency_ms=args.latency_ms, timeout=args.timeout)


def _judges(args: argparse.Namespace) -> list[str] | None:
    return [j.strip() for j in args.judges.split(",") if j.strip()] if args.judges else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
