"""The peer: ``mlflow.genai.evaluate`` over existing traces with ``make_judge`` scorers, at its best.

``python bench/peer.py --ids-file F --warmup-ids a,b --base-url URL --scorers 6 --experiment-id E``
(``MLFLOW_TRACKING_URI`` and the peer's settings from the environment; see
``PEER_ENV``) prints one JSON line with the wall time of ``evaluate`` on the
measured traces, the time to fetch them, and how many feedbacks it wrote.

Run at its best, as the issue asks: ``MLFLOW_GENAI_EVAL_MAX_WORKERS=32``,
both rate limits off, synchronous trace logging, telemetry and the model
catalog off, and a warm-up ``evaluate`` first (the first one in a process
pays the databricks-sdk warm-up and first-call costs, which our warm workers
do not pay either). ``make_judge`` posts to ``base_url`` verbatim, so it gets
the full ``.../v1/chat/completions`` URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

PEER_ENV = {
    "MLFLOW_GENAI_EVAL_MAX_WORKERS": "32",
    "MLFLOW_GENAI_EVAL_PREDICT_RATE_LIMIT": "0",
    "MLFLOW_GENAI_EVAL_SCORER_RATE_LIMIT": "0",
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "OPENAI_API_KEY": "sk-bench-not-a-real-key",
}

#: Six aspects, as many scorers per trace as our plan has judges per trace.
ASPECTS = ["relevance", "groundedness", "coherence", "completeness", "harmfulness", "clarity"]


def scorers(base_url: str, count: int) -> list:
    from mlflow.genai.judges import make_judge

    chat_url = base_url.rstrip("/") + "/chat/completions"
    made = []
    for i in range(count):
        aspect = ASPECTS[i % len(ASPECTS)]
        made.append(make_judge(
            name=f"peer_{aspect}" if i < len(ASPECTS) else f"peer_{aspect}_{i}",
            instructions=(
                f"Rate the {aspect} of the answer in {{{{ outputs }}}} to the request in {{{{ inputs }}}}. "
                "Reply with a number from 0 (bad) to 1 (excellent) and a short rationale."
            ),
            model="openai:/gpt-4o-mini",
            base_url=chat_url,
            feedback_value_type=float,
        ))
    return made


def main() -> int:
    for key, value in PEER_ENV.items():
        os.environ.setdefault(key, value)
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--warmup-ids", default="")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--scorers", type=int, default=6)
    parser.add_argument("--experiment-id", required=True)
    args = parser.parse_args()

    import logging

    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_experiment(experiment_id=args.experiment_id)
    client = MlflowClient()
    judges = scorers(args.base_url, args.scorers)
    names = {j.name for j in judges}

    warm = [client.get_trace(t) for t in args.warmup_ids.split(",") if t]
    if warm:
        mlflow.genai.evaluate(data=warm, scorers=judges)

    ids = [line.strip() for line in open(args.ids_file) if line.strip()]
    fetch_started = time.perf_counter()
    traces = [client.get_trace(t) for t in ids]
    fetch = time.perf_counter() - fetch_started

    started = time.perf_counter()
    started_wall = time.time()
    cpu_started = time.process_time()
    mlflow.genai.evaluate(data=traces, scorers=judges)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started

    written = errors = 0
    for trace_id in ids:
        for assessment in client.get_trace(trace_id).info.assessments or []:
            if assessment.name in names and getattr(assessment, "feedback", None) is not None:
                if getattr(assessment, "error", None) is None and assessment.value is not None:
                    written += 1
                else:
                    errors += 1
    print(json.dumps({
        "traces": len(ids),
        "scorers": len(judges),
        "wall": wall,
        "start": started_wall,
        "fetch": fetch,
        "cpu_seconds": cpu,
        "cpu_ms_per_trace": cpu / len(ids) * 1000 if ids else None,
        "feedback_written": written,
        "feedback_errors": errors,
    }))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
