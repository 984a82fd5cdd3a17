"""``tracejudge status``: is the judging keeping up? Workers, queues, recent verdicts, pick-up, spend.

Gathers a :class:`~tracejudge.ops.pipeline.PipelineState` (live workers from Celery's ping/inspect, each
queue's depth and oldest message from the broker, the last 15 minutes of verdicts and trace lag from the
workers' Redis counts, the pick-up watermark per experiment, today's spend) and asks
:func:`~tracejudge.ops.pipeline.pipeline_problems` what is wrong. Exit status, for cron or a probe:
0 healthy, 1 a problem holds, 2 cannot tell (Redis or the broker does not answer, a bad setting).

    $ tracejudge status --format json | jq .healthy
    true
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_HEALTHY, EXIT_PROBLEM, EXIT_UNKNOWN = 0, 1, 2
WINDOW_MINUTES = 15


def add_parser(sub: Any) -> None:
    """The ``status`` subcommand's options (called by ``cli._parser``)."""
    p = sub.add_parser(
        "status",
        help="workers, queues, recent verdicts, pick-up and spend; exit 0 healthy, 1 a problem, 2 cannot tell",
        description="Show whether the judging keeps up: live workers (name, processes, running tasks, queues), each "
        "queue's depth and oldest message, verdicts and judge errors by code in the last 15 minutes with the p95 "
        "trace lag, the pick-up watermark and lag per experiment, today's spend and budget. Exit status: 0 healthy, "
        "1 a problem holds (messages wait with no worker reading their queue, a queue older than --max-age, pick-up "
        "lagging, no verdicts while work waits), 2 cannot tell (Redis or the broker does not answer).",
    )
    p.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or json")
    p.add_argument("--config", help="YAML config (pick-up settings and budget; default: $TRACEJUDGE_CONFIG)")
    p.add_argument("--max-age", type=float, default=300.0, metavar="SECONDS",
                   help="a queue whose oldest message waited longer is a problem (default 300)")
    p.add_argument("--max-depth", type=int, metavar="N", help="a queue deeper than this is a problem (default: no bound)")
    p.add_argument("--max-pickup-lag", type=float, metavar="SECONDS",
                   help="pick-up further behind is a problem (default: judges.online delay + 4 intervals, at least 120)")
    p.add_argument("--no-verdicts-minutes", type=float, default=15.0, metavar="MINUTES",
                   help="no verdict for this long while work waits as long is a problem (default 15)")
    p.add_argument("--inspect-timeout", type=float, default=1.0, metavar="SECONDS",
                   help="how long to wait for workers to answer Celery's ping (default 1)")
    p.set_defaults(func=status_command)


def status_command(args: argparse.Namespace) -> int:
    import redis as redis_lib
    from kombu.exceptions import OperationalError

    from tracejudge.config import ConfigError, Settings
    from tracejudge.config.settings import redact_url
    from tracejudge.enqueue import resolve_config
    from tracejudge.ops.pipeline import PipelineBounds, pipeline_problems

    try:
        settings = Settings.from_env()
        config = resolve_config(args.config)
    except ConfigError as exc:
        return _unknown(str(exc))
    client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis_lib.exceptions.RedisError as exc:
        return _unknown(f"Redis at {redact_url(settings.redis_url)} does not answer ({exc}): cannot tell", args)
    try:
        state, spend = gather(settings, config, client, inspect_timeout=args.inspect_timeout)
    except (redis_lib.exceptions.RedisError, OSError, OperationalError) as exc:  # the broker or Redis went away
        return _unknown(f"cannot read the pipeline's state: {type(exc).__name__}: {exc}", args)
    online = config.judges.online
    bounds = PipelineBounds(
        max_queue_age_seconds=args.max_age,
        max_queue_depth=args.max_depth,
        max_pickup_lag_seconds=args.max_pickup_lag or max(120.0, online.delay_seconds + 4 * online.interval_seconds),
        no_verdicts_minutes=args.no_verdicts_minutes,
    )
    problems = pipeline_problems(state, bounds)
    report = to_report(state, problems, spend)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return EXIT_PROBLEM if problems else EXIT_HEALTHY


def gather(settings: Any, config: Any, redis: Any, *, inspect_timeout: float = 1.0) -> tuple[Any, Any]:
    """The pipeline's state now (``ops.pipeline.read_state`` with the live workers), and today's spend report."""
    from tracejudge.ops.pipeline import QueueState, read_state
    from tracejudge.tasks.state import RedisState
    from tracejudge.worker import QUEUES, get_app
    from tracejudge.worker.consumers import inspect_workers

    now = time.time()
    prefix = settings.key_prefix
    app = get_app()
    workers = inspect_workers(app, timeout=inspect_timeout)
    broker = broker_client(settings)
    pipeline = read_state(redis, broker=broker, queues=QUEUES, minutes=WINDOW_MINUTES, prefix=prefix, now=now, workers=workers)
    if broker is None:  # RabbitMQ: depth from a passive declare, the age unknown
        from tracejudge.ops.broker import read_amqp_queues

        with app.connection_for_read() as connection:
            found = read_amqp_queues(connection, list(QUEUES))
        pipeline.queues = {
            name: QueueState(depth=r.depth, consumers=[w.name for w in workers if name in w.queues]) for name, r in found.items()
        }
    state = RedisState(redis, prefix=prefix)
    pipeline.pickup = read_pickup(state, now=now)
    return pipeline, state.spend(limit_usd=config.judges.budget.daily_usd)


def broker_client(settings: Any) -> Any:
    """A Redis client of the broker, or None when the broker is RabbitMQ."""
    if not settings.broker_is_redis:
        return None
    import redis as redis_lib

    return redis_lib.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=5)


def read_pickup(state: Any, *, now: float) -> list[Any]:
    """The online pick-up's watermark per experiment (``judges.online``) and how far behind now it is."""
    from tracejudge.controls.online import WATERMARK
    from tracejudge.ops.pipeline import PickupState

    prefix = state.key(f"mark:{WATERMARK}")
    out = []
    for key in sorted(state.redis.scan_iter(match=f"{prefix}*", count=500)):
        name = key.decode() if isinstance(key, bytes) else key
        raw = state.redis.get(name)
        if raw is None:
            continue
        mark = int(raw)
        out.append(PickupState(experiment=name[len(prefix):], watermark_ms=mark, lag_seconds=max(0.0, now - mark / 1000)))
    return out


def to_report(state: Any, problems: list[Any], spend: Any) -> dict[str, Any]:
    """The JSON of ``tracejudge status --format json``."""
    from datetime import datetime, timezone

    def iso(epoch: float) -> str:
        return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")

    w = state.window
    return {
        "healthy": not problems,
        "problems": [p.message for p in problems],
        "checked_at": iso(state.now),
        "workers": [worker.model_dump() for worker in state.workers or []],
        "queues": {name: {**q.model_dump(), "oldest_age_seconds": _round(q.oldest_age_seconds)} for name, q in state.queues.items()},
        "held_by_workers": state.held,
        f"last_{w.minutes}_minutes": {
            "verdicts": w.verdicts,
            "verdicts_total": w.total,
            "verdict_errors": w.verdict_errors,
            "judge_results": w.judge_results,
            "judge_errors": w.judge_errors,
            "trace_lag_p95_seconds": _round(w.lag_p95_seconds, 3),
            "last_verdict_age_seconds": _round(w.last_verdict_age_seconds),
        },
        "pickup": [
            {"experiment": p.experiment, "watermark": iso(p.watermark_ms / 1000), "lag_seconds": round(p.lag_seconds, 1)}
            for p in state.pickup
        ],
        "spend": {"day": spend.day, "spent_usd": spend.spent_usd, "budget_usd": spend.limit_usd,
                  "remaining_usd": None if spend.limit_usd is None else max(0.0, spend.limit_usd - spend.spent_usd)},
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    head = "[green]healthy[/green]" if report["healthy"] else "[red]PROBLEMS[/red]"
    console.print(f"tracejudge status at {report['checked_at']}: {head}")
    for problem in report["problems"]:
        console.print(f"  [red]-[/red] {problem}")
    table = Table(title=f"workers ({len(report['workers'])})")
    for column in ("name", "processes", "concurrency", "active", "queues"):
        table.add_column(column)
    for worker in report["workers"]:
        table.add_row(worker["name"], str(worker["processes"]), str(worker["concurrency"] or ""), str(worker["active"]),
                      ", ".join(worker["queues"]))
    console.print(table)
    table = Table(title="queues" + ("" if report["held_by_workers"] is None else f" (held by workers: {report['held_by_workers']})"))
    for column in ("queue", "depth", "oldest (s)", "read by"):
        table.add_column(column)
    for name, q in report["queues"].items():
        age = f"{q['oldest_age_seconds']:.0f}" if q["oldest_age_seconds"] is not None else "unknown" if q["depth"] else ""
        table.add_row(name, str(q["depth"]), age, ", ".join(q["consumers"] or []) or "nobody")
    console.print(table)
    key = next(k for k in report if k.startswith("last_"))
    w = report[key]
    lag = "n/a" if w["trace_lag_p95_seconds"] is None else f"{w['trace_lag_p95_seconds']:.1f} s"
    verdicts = ", ".join(f"{s} {n}" for s, n in w["verdicts"].items()) or "none"
    ended = ", ".join(f"{c} {n}" for c, n in sorted(w["verdict_errors"].items(), key=lambda kv: -kv[1]))
    errors = ", ".join(f"{c} {n}" for c, n in sorted(w["judge_errors"].items(), key=lambda kv: -kv[1])) or "none"
    console.print(f"{key.replace('_', ' ')}: verdicts {verdicts}{f' (errors: {ended})' if ended else ''}; "
                  f"judge errors {errors} (of {w['judge_results']} results); p95 trace lag {lag}")
    for p in report["pickup"]:
        console.print(f"pick-up, experiment {p['experiment']}: watermark {p['watermark']}, {p['lag_seconds']:.0f} s behind")
    s = report["spend"]
    budget = f" of ${s['budget_usd']:g} (${s['remaining_usd']:.4f} left)" if s["budget_usd"] is not None else " (no daily budget set)"
    console.print(f"spend on {s['day']} (UTC): ${s['spent_usd']:.4f}{budget}")


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _unknown(message: str, args: argparse.Namespace | None = None) -> int:
    if args is not None and args.format == "json":
        print(json.dumps({"healthy": None, "problems": [message], "workers": [], "queues": {}}, indent=2))
    print(f"error: {message}", file=sys.stderr)
    return EXIT_UNKNOWN
