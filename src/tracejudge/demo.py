"""``tracejudge demo``: the whole pipeline on this machine, from nothing but the repo.

It makes a local MLflow sqlite store, records a sample ``article_writer``
trace (a tool-calling research agent: chat model, search and fetch-page tool
calls; then a write node; inside a run), finds
Redis (or starts a local ``redis-server``), starts its own worker process,
enqueues the trace on the gate queue, waits for the verdict and prints it;
then records a three-turn conversation (traces sharing ``mlflow.trace.session``),
has the session judges judge it as a whole and prints that verdict too.
Its queues and keys live under a private key prefix (``tjdemo-<random>:``),
so another tracejudge worker on the same Redis never takes its task.
Judges call the LLM endpoint configured in the environment, or else the
bundled test server (which says it is not a real model). Everything it
started is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

from tracejudge.testing.processes import RedisServer, WorkerProcess

DEMO_CONFIG = """\
# A complete tracejudge config: judges on every target and on named nodes, the quality gate and quality retry.
# Check it with `.venv/bin/tracejudge validate-config examples/tracejudge.yaml`; pass it as `enqueue(..., config=...)`
# or to the workers as TRACEJUDGE_CONFIG.
observability:
  mlflow:
    enabled: true
    enable_judges: true
    judges:
      workflow_defaults:
        - name: harmfulness
          threshold: 0.8
          model: "openai:/gpt-4o-mini"
        - name: coherence
          threshold: 0.75
          model: "openai:/gpt-4o-mini"
      node_overrides:
        research:
          - name: relevance
            threshold: 0.8
          - name: groundedness
            threshold: 0.85
          - name: citation_quality
            threshold: 0.75
          # agent judges: they read the node's tool calls and steps ({tool_calls}, {trajectory})
          - name: tool_selection
            threshold: 0.8
          - name: tool_arguments
            threshold: 0.8
          - name: trajectory_efficiency
            threshold: 0.7
        write:
          - name: coherence
            threshold: 0.85
          # technical_accuracy judges AI/ML technical content (the design's judge) and reads the topic from the
          # node's inputs: {topic}, an input named `topic`. A node without one gets a clear error naming the
          # variable; give the node a `topic` input, or use completeness/coherence instead.
          - name: technical_accuracy
            threshold: 0.80
          - name: completeness
            threshold: 0.80
      # conversations: the traces sharing MLflow's session id (mlflow.trace.session), judged as a whole
      sessions:
        judges: [conversation_completeness, knowledge_retention]
      execution:
        mode: async
        timeout_seconds: 30
        retry_on_failure: true
        log_rationale: true
quality_gate:
  enabled: true
  threshold: 0.80
  action: block
  judges: [coherence, technical_accuracy, harmfulness]
quality_retry:
  enabled: true
  threshold: 0.70
  max_retries: 2
  judges: [relevance, completeness, citation_quality]
"""

#: With the bundled test server, markers in the judged text choose the scores, so
#: the demo shows a judge below its threshold (citation_quality) without failing the gate.
FAKE_RESEARCH_MARKERS = " [[tj:score:citation_quality=0.62]] [[tj:score:relevance=0.93]]"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def _forget_keys(redis_url: str, prefix: str) -> None:
    """Delete every key under the demo's private prefix (its queues, results, rollups)."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        say(f"removed the demo's {len(keys)} Redis keys (under {prefix})")
    except redis.RedisError as exc:  # the demo's verdict is printed already; say what is left behind
        say(f"could not remove the demo's Redis keys under {prefix}: {exc}")


def run_demo(*, directory: str = ".tracejudge/demo", latency_ms: float = 200.0, timeout: float = 120.0) -> int:
    """Run the demo; returns the process exit code (0 when the demo ran, whatever the verdict)."""
    from tracejudge.config import Settings
    from tracejudge.config.settings import redact_url

    base = Path(directory).resolve()
    base.mkdir(parents=True, exist_ok=True)
    config_path = base / "tracejudge.yaml"
    config_path.write_text(DEMO_CONFIG)
    tracking_uri = f"sqlite:///{base / 'mlflow.db'}"
    env = dict(os.environ)
    env.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        TRACEJUDGE_CONFIG=str(config_path),
        MLFLOW_DISABLE_TELEMETRY=env.get("MLFLOW_DISABLE_TELEMETRY", "true"),
        MLFLOW_MODEL_CATALOG_URI=env.get("MLFLOW_MODEL_CATALOG_URI", ""),
        # private queues and keys: no other worker on this Redis can take the demo's task
        TRACEJUDGE_KEY_PREFIX=f"tjdemo-{uuid.uuid4().hex[:8]}:",
    )
    settings = Settings.from_env(env)

    with ExitStack() as stack:
        # 1. The LLM endpoint.
        using_fake = not (settings.llm_base_url or settings.llm_api_key)
        if using_fake:
            from tracejudge.testing import FakeLLMServer

            fake = stack.enter_context(FakeLLMServer(latency_ms=latency_ms))
            env.update(TRACEJUDGE_LLM_BASE_URL=fake.base_url, TRACEJUDGE_LLM_API_KEY="sk-demo-not-a-real-key")
            say(
                f"LLM: no endpoint configured, so judges call the bundled test server at {fake.base_url} "
                f"(tracejudge-fake-llm, NOT a real model; {latency_ms:g} ms per call). "
                "Set TRACEJUDGE_LLM_BASE_URL and TRACEJUDGE_LLM_API_KEY to use a real one."
            )
        else:
            say(f"LLM: {redact_url(settings.llm_base_url or 'https://api.openai.com/v1')} (from the environment)")

        # 2. Redis.
        redis_url, redis_note = _ensure_redis(settings.redis_url, stack)
        if redis_url is None:
            say(redis_note)
            say("falling back to sync mode: judging in this process, without Redis or a worker.")
        else:
            env["TRACEJUDGE_REDIS_URL"] = redis_url
            say(redis_note)
            # on the way out (after the worker has stopped), the demo's keys go: nothing is left in your Redis
            stack.callback(_forget_keys, redis_url, env["TRACEJUDGE_KEY_PREFIX"])

        # 3. MLflow store and the sample trace.
        os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY", "MLFLOW_MODEL_CATALOG_URI")})
        import mlflow

        from tracejudge.testing.workflows import DEFAULT_RESEARCH, record_article_trace

        mlflow.set_tracking_uri(tracking_uri)
        if mlflow.get_experiment_by_name("tracejudge-demo") is None:
            mlflow.create_experiment("tracejudge-demo", artifact_location=(base / "artifacts").as_uri())
        experiment_id = mlflow.set_experiment("tracejudge-demo").experiment_id
        research = DEFAULT_RESEARCH + (FAKE_RESEARCH_MARKERS if using_fake else "")
        trace_id = record_article_trace(research=research, agent=True)
        say(
            f"MLflow store: {tracking_uri}; recorded trace {trace_id} (article_writer: a research agent calling "
            "serper_search and fetch_page, then write)"
        )

        # 4. Worker, enqueue, verdict.
        os.environ.update({k: v for k, v in env.items() if k.startswith("TRACEJUDGE_")})
        from tracejudge.tasks import reset_runtime
        from tracejudge.worker import reset_app

        reset_app()
        reset_runtime()
        import tracejudge

        config: object = str(config_path)
        if redis_url is not None:
            _start_worker(env, stack, base)
        else:
            config = _sync_config(config_path)
        started = time.perf_counter()
        handle = tracejudge.enqueue(trace_id, config=config, gate=True)
        say(f"enqueued on the gate queue as evaluation {handle.id}; waiting for the verdict...")
        try:
            verdict = handle.verdict(timeout=timeout, raise_on_block=False)
        except tracejudge.EvaluationTimeout as exc:
            say(f"no verdict: {exc}. The worker log is {base / 'worker.log'}")
            return 1
        say(f"verdict after {time.perf_counter() - started:.2f} s:")
        from tracejudge.display import format_verdict

        print()
        print(format_verdict(verdict))
        print()
        say(f"gate: {'PASS' if verdict.passed else 'BLOCK'} (quality_gate.action: block raises QualityGateBlocked in code;"
            " `tracejudge gate TRACE_ID` exits 0/1/2)")

        # 5. A conversation: three turns sharing a session id, judged as a whole by judges.sessions' judges.
        if _demo_conversation(experiment_id, config, timeout=timeout, base=base) != 0:
            return 1
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        ui = str(mlflow_bin) if mlflow_bin.exists() else "mlflow"
        say(f"see it in the MLflow UI: {ui} ui --backend-store-uri {tracking_uri} --port 5000  (then open http://127.0.0.1:5000)")
        # the commands after the demo read the demo's store, not ./mlflow.db: paste them as they are
        say(f"quality over time: MLFLOW_TRACKING_URI={tracking_uri} tracejudge report --experiment-id {experiment_id}")
        say(f"as a page: MLFLOW_TRACKING_URI={tracking_uri} tracejudge dashboard --experiment-id {experiment_id}")
    return 0


def _demo_conversation(experiment_id: str, config: object, *, timeout: float, base: Path) -> int:
    """Record the sample conversation, have it judged as one session, print its verdict; 1 when none came."""
    import tracejudge
    from tracejudge.display import format_verdict
    from tracejudge.testing.conversations import SAMPLE_CONVERSATION, record_turn

    session_id = f"demo-chat-{uuid.uuid4().hex[:8]}"
    turns = [record_turn(session_id, message, answer) for message, answer in SAMPLE_CONVERSATION]
    say(f"recorded a conversation: session {session_id}, {len(turns)} turns (traces sharing mlflow.trace.session)")
    started = time.perf_counter()
    handle = tracejudge.enqueue_session(session_id, experiment_id=experiment_id, config=config, gate=True)
    try:
        verdict = handle.verdict(timeout=timeout, raise_on_block=False)
    except tracejudge.EvaluationTimeout as exc:
        say(f"no session verdict: {exc}. The worker log is {base / 'worker.log'}")
        return 1
    say(f"session verdict after {time.perf_counter() - started:.2f} s (the results are on its first turn, {turns[0]}):")
    print()
    print(format_verdict(verdict))
    print()
    return 0


def _ensure_redis(url: str, stack: ExitStack) -> tuple[str | None, str]:
    from tracejudge.config.settings import redact_url

    if _redis_answers(url):
        return url, f"Redis: using the one at {redact_url(url)}"
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None, f"Redis: nothing answers at {redact_url(url)}. Start it, or unset TRACEJUDGE_REDIS_URL to let the demo start a local one."
    if shutil.which("redis-server") is None:
        return None, (
            f"Redis: nothing answers at {redact_url(url)} and no redis-server is installed. "
            "Install one (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis; "
            "or docker run -p 6379:6379 redis:7) and run the demo again."
        )
    server = stack.enter_context(RedisServer(appendonly=False))
    return server.url, (
        f"Redis: nothing answered at {redact_url(url)}, so the demo started redis-server on port {server.port} "
        f"(stopped at the end; log {server.dir / 'redis.log'})"
    )


def _start_worker(env: dict[str, str], stack: ExitStack, base: Path) -> None:
    worker = WorkerProcess(env, name="demo", concurrency=4, log=base / "worker.log")
    say(f"starting the demo's own worker (log {worker.log}; keys under {env['TRACEJUDGE_KEY_PREFIX']})...")
    stack.enter_context(worker)
    say(f"worker is ready (pid {worker.pid})")


def _sync_config(config_path: Path) -> object:
    from tracejudge.config import load_config

    config = load_config(config_path)
    config.judges.execution.mode = "sync"
    return config


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except Exception:
        return False
