"""``tracejudge calibrate`` and ``tracejudge agreement``: how far a judge agrees with people.

``calibrate`` runs one judge over a labelled set (a shipped one per built-in
judge, or yours) with the workers' own client, timeouts and rate limit, and
prints the agreement figures. ``agreement`` pairs our judges' scores with
people's feedback (HUMAN assessments) already in MLflow and prints the same
figures per judge and judge version.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from tracejudge.judges.agreement import agreement_by_judge
from tracejudge.judges.calibration import (
    CalibrationError,
    calibrate,
    format_report,
    format_table,
    load_dataset,
    result_json,
    shipped_dataset,
)

EXIT_OK = 0
EXIT_ERROR = 2


class ProgressBar:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line per 25% otherwise)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.stream, self.width = label, stream or sys.stderr, width
        self.started = time.monotonic()
        self._last_quarter = -1

    def __call__(self, done: int, total: int) -> None:
        filled = int(self.width * done / total) if total else self.width
        line = f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {time.monotonic() - self.started:.1f}s"
        if self.stream.isatty():
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            quarter = (4 * done) // total if total else 4
            if quarter == self._last_quarter:
                return
            self._last_quarter = quarter
            self.stream.write(line + "\n")
        self.stream.flush()


def cmd_calibrate(args: argparse.Namespace) -> int:
    from tracejudge.config import ConfigError, Settings, load_config
    from tracejudge.judges.errors import JudgeError
    from tracejudge.tasks.runtime import get_runtime, import_judge_modules

    try:
        settings = Settings.from_env()
        config = load_config(args.config or settings.config_path)
        import_judge_modules()
        from tracejudge.judges.registry import default_registry

        judge = default_registry().with_config(config).get(args.judge)
        dataset = args.dataset or shipped_dataset(judge.name)
        if dataset is None:
            raise CalibrationError(
                f"no labelled set ships for judge {judge.name!r}; pass --dataset FILE.jsonl "
                "(one item a line: the judge's variables and a label)"
            )
        items = load_dataset(dataset, judge=judge)
        threshold = args.threshold if args.threshold is not None else (judge.threshold or config.environment_threshold())
        if not 0.0 <= threshold <= 1.0:
            raise CalibrationError(f"--threshold must be in 0..1 (got {threshold:g})")
        execution = config.judges.execution
        runtime = get_runtime(config=config, settings=settings, use_redis=execution.rate_limit_per_second is not None)
        model = args.model or judge.model or settings.default_model
        limiter = runtime.limiter(execution.rate_limit_per_second) if execution.rate_limit_per_second else None
        result = runtime.run(
            calibrate(
                judge,
                items,
                client=runtime.llm,
                execution=execution,
                model=model,
                threshold=threshold,
                dataset=str(dataset),
                limiter=limiter,
                progress=None if args.quiet else ProgressBar(f"calibrate {judge.name}"),
            )
        )
    except (CalibrationError, ConfigError, JudgeError) as exc:
        print(f"tracejudge calibrate: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        print(json.dumps(result_json(result), indent=2))
    else:
        print(format_table(result))
    return EXIT_OK if result.report is not None else EXIT_ERROR


def cmd_agreement(args: argparse.Namespace) -> int:
    from tracejudge.config import Settings
    from tracejudge.mlflow_io.feedback import judge_human_pairs
    from tracejudge.mlflow_io.query import ExperimentNotFound, resolve_experiment
    from tracejudge.mlflow_io.reader import MlflowUnavailable
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.monitor.window import BadQuery, parse_time

    try:
        since = parse_time(args.since, option="--since")
        until = parse_time(args.until, option="--until") if args.until else int(time.time() * 1000)
        store = TraceStore(Settings.from_env().mlflow_tracking_uri)  # our own client, not MLflow's global URI
        client = store.client
        experiment_id = resolve_experiment(client, args.experiment)
        pairs = list(judge_human_pairs(client, experiment_id, since, until))
    except (BadQuery, ExperimentNotFound, MlflowUnavailable) as exc:
        print(f"tracejudge agreement: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = agreement_by_judge(pairs)
    if args.format == "json":
        print(json.dumps({"experiment_id": experiment_id, "pairs": len(pairs), "judges": report}, indent=2))
    else:
        print(format_agreement(report, experiment_id=experiment_id, pairs=len(pairs)))
    return EXIT_OK


def format_agreement(report: list[dict[str, Any]], *, experiment_id: str, pairs: int) -> str:
    from tracejudge.judges.agreement import AgreementReport

    lines = [f"experiment {experiment_id}: {pairs} judge/human pair(s)"]
    if not report:
        lines.append(
            "no human feedback found on spans our judges scored (feedback needs source HUMAN and the judge's name)"
        )
    for entry in report:
        lines.append(f"\njudge {entry['judge']} (version {entry['judge_version']}): {entry['pairs']} pair(s)")
        if entry["report"] is None:
            lines.append(f"  no figures: {entry['refused']}")
        else:
            lines += ["  " + line for line in format_report(AgreementReport.model_validate(entry["report"]))]
    return "\n".join(lines)
