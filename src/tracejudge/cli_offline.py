"""``tracejudge dataset``, ``evaluate`` and ``optimize``: the loop from production failures to a release gate."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def add_commands(sub: Any) -> None:
    """Register the commands on the ``tracejudge`` parser's subcommands."""
    p = sub.add_parser(
        "dataset",
        help="make or extend an MLflow evaluation dataset from judged traces (production failures as a regression set)",
        description="Page through an experiment's judged traces and add those that failed or errored (or where a judge "
        "scored below a bound) to an MLflow evaluation dataset: inputs, output, people's expectations (MLflow "
        "expectations and HUMAN feedback), and the tag tracejudge.source_trace. Re-running adds only new traces.",
    )
    p.add_argument("--experiment-id", "--experiment", dest="experiment", required=True, help="experiment id or name")
    p.add_argument("--name", required=True, help="the dataset's name (created if missing)")
    p.add_argument("--status", action="append", choices=("failed", "error", "passed"),
                   help="verdict statuses to keep; repeat for several (default: failed and error)")
    p.add_argument("--judge", help="keep traces where this judge scored below --below (instead of by status)")
    p.add_argument("--below", type=float, help="with --judge: the score bound (default 1.0)")
    p.add_argument("--since", help="only traces started since: a duration (7d, 12h) or a date")
    p.add_argument("--until", help="only traces started until: a duration ago or a date")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser(
        "evaluate",
        help="the offline release gate: mlflow.genai.evaluate with our judges over a dataset; exit 0 passed, 1 failed, 2 error",
        description="Run mlflow.genai.evaluate over an evaluation dataset with the plan's judges as scorers (the same "
        "judges, prompts, thresholds and client as the workers), print each row's verdict as `tracejudge gate` does, "
        "and exit 0 when the run passes the gate rule (every row passes, or --min-pass-rate), 1 when it fails, "
        "2 on errors.",
    )
    p.add_argument("--dataset", required=True, help="the evaluation dataset's name")
    p.add_argument("--predict", metavar="MODULE:FUNCTION", help="the function that answers each row's inputs "
                   "(default: judge the outputs stored in the dataset)")
    p.add_argument("--config", help="YAML config file (default: $TRACEJUDGE_CONFIG)")
    p.add_argument("--min-pass-rate", type=float, default=1.0, help="share of rows that must pass (default 1.0: every row)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "optimize",
        help="improve a registered prompt with mlflow.genai.optimize_prompts, our judges as the objective",
        description="Run mlflow.genai.optimize_prompts on a registered prompt over an evaluation dataset with the plan's "
        "judges as scorers (objective quality_score: their mean score, maximised), with the optimizer the config's "
        "optimization.strategy names, and register the improved prompt as a new version.",
    )
    p.add_argument("--prompt", required=True, metavar="prompts:/NAME/VERSION", help="the registered prompt to improve")
    p.add_argument("--dataset", required=True, help="the evaluation dataset's name")
    p.add_argument("--predict", metavar="MODULE:FUNCTION", required=True,
                   help="the function answering a row's inputs with the prompt (it loads it with mlflow.genai.load_prompt)")
    p.add_argument("--config", help="YAML config file with optimization: (default: $TRACEJUDGE_CONFIG)")
    p.set_defaults(func=cmd_optimize)


def _error(command: str, message: str) -> int:
    print(f"tracejudge {command}: {message}", file=sys.stderr)
    return EXIT_ERROR


def cmd_dataset(args: argparse.Namespace) -> int:
    from tracejudge.backfill import parse_time
    from tracejudge.config import Settings
    from tracejudge.mlflow_io.store import TraceStore, UnknownExperiment
    from tracejudge.offline.dataset import DatasetQuery, extend_dataset

    if args.below is not None and args.judge is None:
        return _error("dataset", "--below goes with --judge (the judge whose score is bounded)")
    if args.below is not None and not 0.0 <= args.below <= 1.0:
        return _error("dataset", f"--below must be a score from 0 to 1 (got {args.below:g})")
    try:
        store = TraceStore(Settings.from_env().mlflow_tracking_uri)
        experiment_id = store.experiment_id(args.experiment, where="--experiment-id")
        query = DatasetQuery(
            experiment_id=experiment_id, status=args.status or ["failed", "error"], judge=args.judge, below=args.below,
            since_ms=parse_time(args.since, what="--since"), until_ms=parse_time(args.until, what="--until"),
        )
        result = extend_dataset(store.client, args.name, query)
    except (UnknownExperiment, ValueError) as exc:
        return _error("dataset", str(exc))
    if args.json:
        print(json.dumps({"name": result.name, "dataset_id": result.dataset_id, "created": result.created,
                          "looked_at": result.looked_at, "added": result.added, "already_in": result.already}))
    else:
        print(f"{'created' if result.created else 'extended'} dataset {result.name} ({result.dataset_id}): "
              f"{len(result.added)} traces added, {result.already} already in it, of {result.looked_at} matching")
    return EXIT_PASSED


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tracejudge.config import ConfigError, Settings
    from tracejudge.display import format_verdict
    from tracejudge.judges.errors import JudgeError
    from tracejudge.offline.gate import OfflineGateError, load_predict, run_offline_gate

    if not 0.0 <= args.min_pass_rate <= 1.0:
        return _error("evaluate", f"--min-pass-rate must be from 0 to 1 (got {args.min_pass_rate:g})")
    try:
        predict = load_predict(args.predict) if args.predict else None
        run = run_offline_gate(args.dataset, predict=predict, config=args.config or Settings.from_env().config_path,
                               min_pass_rate=args.min_pass_rate)
    except (OfflineGateError, ConfigError, JudgeError) as exc:
        return _error("evaluate", str(exc))
    if args.json:
        print(json.dumps({"status": run.status, "pass_rate": run.pass_rate, "run_id": run.run_id,
                          "rows": [v.model_dump(mode="json") for v in run.rows]}))
    else:
        for verdict in run.rows:
            print(f"== {verdict.trace_id}")
            print(format_verdict(verdict))
            print()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()))
        print(f"offline gate: {run.status.upper()}: {counts}; pass rate {run.pass_rate:.0%} "
              f"(needs {run.min_pass_rate:.0%}); MLflow run {run.run_id}")
    return {"passed": EXIT_PASSED, "failed": EXIT_FAILED}.get(run.status, EXIT_ERROR)


def cmd_optimize(args: argparse.Namespace) -> int:
    from tracejudge.config import ConfigError, Settings
    from tracejudge.offline.gate import OfflineGateError, load_predict
    from tracejudge.offline.optimize import OptimizeError, optimize_prompt

    try:
        predict = load_predict(args.predict)
        outcome = optimize_prompt(args.prompt, dataset=args.dataset, predict=predict,
                                  config=args.config or Settings.from_env().config_path)
    except (OfflineGateError, OptimizeError, ConfigError) as exc:
        return _error("optimize", str(exc))

    def score(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(f"registered {outcome.new_uri} (improved from {outcome.source_uri} by {outcome.optimizer}); "
          f"quality_score {score(outcome.initial_score)} -> {score(outcome.final_score)}")
    return EXIT_PASSED
