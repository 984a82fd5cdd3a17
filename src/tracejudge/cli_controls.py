"""The ``backfill`` and ``budget`` commands: progress bars and tables over the public API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 2


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def backfill_command(args: argparse.Namespace) -> int:
    """``tracejudge backfill``: see :mod:`tracejudge.backfill`."""
    # A CLI must say "unreachable" in a second or two, not after MLflow's 7 HTTP retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from tracejudge.backfill import (
        BackfillError,
        check_mlflow,
        checkpoint_id,
        parse_time,
        probe_tracking_server,
        run_backfill,
        wait_for_verdicts,
    )
    from tracejudge.config import ConfigError, Settings
    from tracejudge.config.settings import redact_url

    if args.sample is not None and not 0.0 <= args.sample <= 1.0:
        return _error(f"--sample: must be a number from 0 to 1, the share of traces judged (got {args.sample:g})")
    try:
        settings = Settings.from_env()
        from tracejudge.enqueue import resolve_config

        config = resolve_config(args.config)
        since_ms = parse_time(args.since, what="--since")
        until_ms = parse_time(args.until, what="--until")
        probe_tracking_server(settings.mlflow_tracking_uri)
    except (ConfigError, BackfillError) as exc:
        return _error(str(exc))

    from tracejudge.judges.registry import UnknownJudgeError, default_registry
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.mlflow_io.store import BadFilter, TraceStore, UnknownExperiment
    from tracejudge.controls.judged import plan_fingerprint
    from tracejudge.tasks.runtime import import_judge_modules
    from tracejudge.tasks.state import RedisState

    store = TraceStore(settings.mlflow_tracking_uri)
    try:
        check_mlflow(store, settings.mlflow_tracking_uri)
        experiment_id = store.experiment_id(args.experiment_id, where="--experiment-id")
        if args.filter_string:  # MLflow's own verdict on the filter, now rather than mid-run
            store.search_traces([experiment_id], filter_string=args.filter_string, max_results=1)
    except (BackfillError, UnknownExperiment, BadFilter) as exc:
        return _error(str(exc))
    except MlflowUnavailable as exc:
        return _error(redact_url(str(exc)))

    import redis

    state = RedisState.from_url(settings.redis_url, prefix=settings.key_prefix)
    if not args.dry_run:
        try:
            redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5).ping()
        except redis.exceptions.RedisError as exc:
            return _error(f"Redis at {redact_url(settings.redis_url)} is unreachable ({exc})")
    import_judge_modules(settings.judge_modules)
    judges = [j.strip() for j in args.judges.split(",") if j.strip()] if args.judges else None
    from tracejudge.config import JudgeRef

    refs = [JudgeRef(name=n) for n in judges] if judges else None
    if getattr(args, "sessions", False):
        return sessions_backfill(args, store=store, state=state, config=config, experiment_id=experiment_id, refs=refs,
                                 since_ms=since_ms, until_ms=until_ms, default_model=settings.default_model)
    try:
        fingerprint = plan_fingerprint(config, default_registry().with_config(config), judges=refs, default_model=settings.default_model, environment=settings.environment)
    except UnknownJudgeError as exc:
        return _error(f"--judges: {exc}")
    checkpoint = checkpoint_id(
        experiment=experiment_id, since=args.since, until=args.until, filter=args.filter_string, judges=judges,
        sample=args.sample, force=args.force, max=args.max_traces, config=config.source,
    )

    import tracejudge

    def enqueue(trace_id: str) -> Any:
        return tracejudge.enqueue(trace_id, config=args.config, judges=judges, force=args.force, sample=args.sample)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    verb = "would enqueue" if args.dry_run else "enqueued"
    try:
        # not a terminal (a log, a pipe): no bar, whose redraws leave fragments there; the summary lines follow
        with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
            task = progress.add_task("backfill", total=args.max_traces)

            def show(counts: Any, note: str) -> None:
                text = (
                    f"{verb} {counts.enqueued} | already judged {counts.skipped_judged} | "
                    f"filtered {counts.skipped_filter} | sampled out {counts.skipped_sampling}"
                )
                progress.update(task, completed=counts.seen, description=text + (f" | {note}" if note else ""))

            result = run_backfill(
                store=store, state=state, config=config, experiment_id=experiment_id,
                fingerprint=fingerprint, enqueue=enqueue, since_ms=since_ms, until_ms=until_ms,
                filter_string=args.filter_string, sample=args.sample, force=args.force, dry_run=args.dry_run,
                max_traces=args.max_traces, resume=args.resume, checkpoint=checkpoint, max_queue=args.max_queue,
                progress=show,
            )
            show(result.counts, "done")
    except KeyboardInterrupt:
        print("\ninterrupted: the checkpoint is saved; run the same command with --resume to continue", file=sys.stderr)
        return 130
    except MlflowUnavailable as exc:
        return _error(f"{redact_url(str(exc))}; the checkpoint is saved, run the same command with --resume")
    except tracejudge.EnqueueError as exc:
        return _error(f"{exc}; the checkpoint is saved, run the same command with --resume")
    c = result.counts
    summary = (
        f"{'dry run: ' if args.dry_run else ''}looked at {c.seen} traces: {verb} {c.enqueued}, "
        f"skipped as already judged {c.skipped_judged}, by filter {c.skipped_filter}, by sampling {c.skipped_sampling}"
        + (f", unfinished {c.unfinished}" if c.unfinished else "")
    )
    print(summary)
    if c.transient:
        print(
            f"{c.transient} of them have transient failures (timeouts, provider errors...): only those results are judged "
            f"again; {c.retries_exhausted} had used up their automatic retries"
        )
    if result.resumed:
        print("(resumed from the checkpoint)")
    if not args.dry_run and result.seconds > 0:
        print(f"rate: {result.rate:.0f} traces enqueued/s")
    if result.sample_ids:
        print(("sample of trace ids: " if args.dry_run else "first trace ids: ") + ", ".join(result.sample_ids))
    if args.wait is not None and result.handles:
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task("verdicts", total=len(result.handles))

            def tick(done: int, tally: dict[str, int]) -> None:
                progress.update(task, completed=done, description="verdicts " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))

            tally = wait_for_verdicts(result.handles, timeout=args.wait, progress=tick)
        judged = sum(tally.get(s, 0) for s in ("passed", "failed", "error"))
        rate = tally.get("passed", 0) / judged if judged else 0.0
        print(f"pass rate: {rate:.1%} ({tally.get('passed', 0)} of {judged} judged)")
        errors = {k[6:]: v for k, v in tally.items() if k.startswith("error:")}
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()) if not k.startswith("error:")))
        print("errors: " + (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"))
    return EXIT_OK


def sessions_backfill(
    args: argparse.Namespace, *, store: Any, state: Any, config: Any, experiment_id: str, refs: Any,
    since_ms: int | None, until_ms: int | None, default_model: str,
) -> int:
    """``tracejudge backfill --sessions``: past conversations (see :mod:`tracejudge.session_backfill`)."""
    import tracejudge
    from tracejudge.backfill import wait_for_verdicts
    from tracejudge.config.settings import redact_url
    from tracejudge.controls.session_judged import plan_session
    from tracejudge.judges.registry import UnknownJudgeError, default_registry
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.session_backfill import run_session_backfill

    if args.sample is not None or args.resume:
        return _error("--sessions judges every conversation the record does not show judged: --sample and --resume do not apply")
    try:
        planned = plan_session(config, default_registry().with_config(config), judges=refs)
    except UnknownJudgeError as exc:
        return _error(f"--judges: {exc}")
    if not planned:
        return _error("no session judges: list some under judges.sessions.judges in the config, or pass --judges")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    verb = "would enqueue" if args.dry_run else "enqueued"
    names = [p.judge.name for p in planned] if refs else None
    try:
        with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
            task = progress.add_task("sessions", total=None)

            def show(counts: Any, note: str) -> None:
                text = f"sessions: {verb} {counts.enqueued} | already judged {counts.skipped_judged} | still active {counts.active}"
                progress.update(task, total=counts.sessions, completed=counts.seen, description=text + (f" | {note}" if note else ""))

            result = run_session_backfill(
                store=store, state=state, config=config, experiment_id=experiment_id, planned=planned,
                default_model=default_model, since_ms=since_ms, until_ms=until_ms, filter_string=args.filter_string,
                force=args.force, dry_run=args.dry_run, max_sessions=args.max_traces, max_queue=args.max_queue, progress=show,
                enqueue=lambda sid: tracejudge.enqueue_session(
                    sid, experiment_id=experiment_id, config=args.config, judges=names, force=args.force
                ),
            )
            show(result.counts, "done")
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again; sessions judged meanwhile are skipped", file=sys.stderr)
        return 130
    except MlflowUnavailable as exc:
        return _error(redact_url(str(exc)))
    except tracejudge.EnqueueError as exc:
        return _error(str(exc))
    c = result.counts
    print(
        f"{'dry run: ' if args.dry_run else ''}looked at {c.sessions} sessions: {verb} {c.enqueued}, "
        f"skipped as already judged {c.skipped_judged}, still active {c.active}"
    )
    if result.sample_ids:
        print(("sample of session ids: " if args.dry_run else "first session ids: ") + ", ".join(result.sample_ids))
    if args.wait is not None and result.handles:
        tally = wait_for_verdicts(result.handles, timeout=args.wait)
        judged = sum(tally.get(s, 0) for s in ("passed", "failed", "error"))
        print(f"pass rate: {tally.get('passed', 0) / judged if judged else 0.0:.1%} ({tally.get('passed', 0)} of {judged} sessions judged)")
        print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    return EXIT_OK


def budget_command(args: argparse.Namespace) -> int:
    """``tracejudge budget``: the day's spend (all workers), by model and by judge."""
    import redis

    from tracejudge.config import ConfigError, Settings
    from tracejudge.config.settings import redact_url
    from tracejudge.enqueue import resolve_config
    from tracejudge.tasks.state import RedisState

    try:
        settings = Settings.from_env()
        config = resolve_config(args.config)
    except ConfigError as exc:
        return _error(str(exc))
    if args.day is not None:
        import datetime

        try:
            datetime.date.fromisoformat(args.day)
        except ValueError:
            return _error(f"--day: cannot read {args.day!r}; give a UTC day as YYYY-MM-DD (2026-11-28)")
    state = RedisState(redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5), prefix=settings.key_prefix)
    try:
        report = state.spend(day=args.day, limit_usd=config.judges.budget.daily_usd)
    except redis.exceptions.RedisError as exc:
        return _error(f"Redis at {redact_url(settings.redis_url)} is unreachable ({exc})")
    if args.json:
        print(json.dumps(report.model_dump(), indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    limit = (
        f" of ${report.limit_usd:g}"
        if report.limit_usd is not None
        else " (no daily budget set: workers count spend here only while judges.budget.daily_usd is set;"
        " each assessment's cost_usd and `tracejudge report` show the cost)"
    )
    console.print(f"judge spend on {report.day} (UTC): ${report.spent_usd:.6f} spent, ${report.reserved_usd:.6f} reserved by {report.in_flight} call(s) in flight{limit}")
    if not report.by_model and not report.by_judge:
        console.print("no judge calls counted on this day")  # not two empty tables
        return EXIT_OK
    for title, usd, calls in (("model", report.by_model, report.calls_by_model), ("judge", report.by_judge, report.calls_by_judge)):
        table = Table(title=f"by {title}")
        table.add_column(title)
        table.add_column("USD", justify="right")
        table.add_column("calls", justify="right")
        for name, amount in sorted(usd.items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{amount:.6f}", str(calls.get(name, 0)))
        console.print(table)
    return EXIT_OK
