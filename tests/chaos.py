"""Chaos scenarios against real processes on loopback, shared by the reliability tests and ``bench/chaos.py``.

A :class:`ChaosStack` owns everything one scenario needs: a private
``redis-server`` (append-only file on), an MLflow store (a sqlite file, or a
real ``mlflow server`` when the scenario stops it), the fake LLM server,
``tracejudge worker`` subprocesses, and this process's environment (the
producer side: ``enqueue`` and the verdict handles talk to the private
Redis). Leaving the ``with`` block stops every process it started and puts
the environment and MLflow's tracking URI back, even on failure or Ctrl-C.

Each ``run_*`` function runs one failure against a fresh stack and
returns a :class:`ScenarioResult` (counts, never timing assertions): the
tests assert on it, the chaos script prints it as a table.

The judge plan is small on purpose: ``harmfulness`` on every target plus
``relevance`` on the research node, so an ``article_writer`` trace gets
exactly :data:`JUDGES_PER_TRACE` feedback assessments, one per (span, judge).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tracejudge.testing.processes import MlflowServer, RabbitVhost, RedisServer, WorkerProcess

#: The judges each span of an ``article_writer`` trace gets under :func:`chaos_config`.
EXPECTED_JUDGES: dict[str, tuple[str, ...]] = {
    "node_research": ("harmfulness", "relevance"),
    "node_write": ("harmfulness",),
    "article_writer": ("harmfulness",),
}
JUDGES_PER_TRACE = sum(len(j) for j in EXPECTED_JUDGES.values())
EXPERIMENT = "tracejudge-chaos"
KEY_METADATA = "tracejudge.key"


def chaos_config(*, timeout_seconds: float = 20, trace_wait_seconds: float = 30, overall_timeout_seconds: float = 300) -> dict[str, Any]:
    """The config every chaos evaluation is sent with (see the module docstring)."""
    return {
        "observability": {
            "mlflow": {
                "enabled": True,
                "enable_judges": True,
                "judges": {
                    "workflow_defaults": [{"name": "harmfulness", "threshold": 0.5}],
                    "node_overrides": {"research": [{"name": "relevance", "threshold": 0.5}]},
                    "execution": {
                        "mode": "async",
                        "timeout_seconds": timeout_seconds,
                        "trace_wait_seconds": trace_wait_seconds,
                        "overall_timeout_seconds": overall_timeout_seconds,
                    },
                },
            }
        },
        "quality_gate": {"enabled": True, "threshold": 0.5, "action": "block"},
    }


# --------------------------------------------------------------------------- audit


@dataclasses.dataclass
class Audit:
    """What is on the traces in MLflow, against what the plan expects."""

    traces: int = 0
    expected: int = 0  #: (span, judge) pairs the plan asks for
    written: int = 0  #: feedback assessments of ours found (duplicates included)
    duplicates: int = 0  #: assessments beyond the first for one (span, judge)
    lost: int = 0  #: expected (span, judge) pairs without any assessment
    unexpected: int = 0  #: assessments for a (span, judge) the plan does not have
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.duplicates == 0 and self.lost == 0 and self.unexpected == 0 and self.written == self.expected


def audit_traces(trace_ids: Sequence[str], *, client: Any = None) -> Audit:
    """Count our feedback assessments per (span, judge) on every trace."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    audit = Audit(traces=len(trace_ids))
    for trace_id in trace_ids:
        trace = client.get_trace(trace_id)
        span_ids = {s.name: s.span_id for s in trace.data.spans}
        expected = {(span_ids[span], judge) for span, judges in EXPECTED_JUDGES.items() for judge in judges}
        found = Counter(
            (a.span_id, a.name)
            for a in trace.info.assessments or []
            if getattr(a, "feedback", None) is not None and KEY_METADATA in (a.metadata or {})
        )
        audit.expected += len(expected)
        audit.written += sum(found.values())
        for pair, count in found.items():
            if pair not in expected:
                audit.unexpected += count
                audit.problems.append(f"{trace_id}: unexpected assessment {pair} x{count}")
            elif count > 1:
                audit.duplicates += count - 1
                audit.problems.append(f"{trace_id}: {pair} written {count} times")
        for pair in sorted(expected - set(found)):
            audit.lost += 1
            audit.problems.append(f"{trace_id}: {pair} missing")
    return audit


# --------------------------------------------------------------------------- waiting


@dataclasses.dataclass
class Outcome:
    """The verdicts of a batch of handles, and when the last one arrived (``time.monotonic()``)."""

    verdicts: dict[str, Any]  #: trace id -> QualityVerdict
    failures: dict[str, str]  #: trace id -> why there is no verdict
    last_done: float
    done_at: dict[str, float] = dataclasses.field(default_factory=dict)  #: handle id -> when it became ready

    @property
    def statuses(self) -> Counter[str]:
        return Counter(v.status for v in self.verdicts.values())


def wait_for_verdicts(handles: Sequence[Any], *, timeout: float, poll: float = 0.2) -> Outcome:
    """Wait for every handle, noting when each became ready; never raises for one handle.

    Redis may be down part of the time: errors while polling count as "not ready yet".
    """
    from tracejudge.verdict import QualityVerdict

    deadline = time.monotonic() + timeout
    pending = list(handles)
    done_at: dict[str, float] = {}
    while pending and time.monotonic() < deadline:
        still = []
        for handle in pending:
            try:
                ready = handle.ready()
            except Exception:
                ready = False
            if ready:
                done_at[handle.id] = time.monotonic()
            else:
                still.append(handle)
        pending = still
        if pending:
            time.sleep(poll)
    verdicts: dict[str, QualityVerdict] = {}
    failures: dict[str, str] = {}
    for handle in handles:
        if handle.id not in done_at:
            failures[handle.trace_id] = f"no verdict within {timeout:g} s (state {_state(handle)})"
            continue
        try:
            verdicts[handle.trace_id] = handle.verdict(timeout=30, raise_on_block=False)
        except Exception as exc:
            failures[handle.trace_id] = f"{type(exc).__name__}: {exc}"
    return Outcome(
        verdicts=verdicts, failures=failures, last_done=max(done_at.values(), default=time.monotonic()), done_at=done_at
    )


def count_ready(handles: Sequence[Any]) -> int:
    n = 0
    for handle in handles:
        try:
            n += bool(handle.ready())
        except Exception:
            pass
    return n


def wait_until(check: Any, *, timeout: float, what: str, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


def _state(handle: Any) -> str:
    try:
        return str(handle.status)
    except Exception as exc:
        return f"unknown ({type(exc).__name__})"


# --------------------------------------------------------------------------- environment


@contextlib.contextmanager
def producer_environment(env: dict[str, str], *, tracking_uri: str, artifact_root: Path | None = None) -> Iterator[str]:
    """This process as a producer against a private stack: env vars, Celery app, MLflow URI and experiment.

    Everything is put back on exit (the app and runtime are rebuilt lazily from
    the restored environment). Yields the experiment id.
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from tracejudge.tasks.runtime import reset_runtime
    from tracejudge.worker import reset_app

    saved_env = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID"]}
    saved_uri = tracking_utils._tracking_uri
    saved_experiment = fluent._active_experiment_id
    os.environ.update(env)
    reset_app()
    reset_runtime()
    try:
        mlflow.set_tracking_uri(tracking_uri)
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            location = artifact_root.as_uri() if artifact_root is not None else None
            experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
        yield experiment_id
    finally:
        mlflow.set_tracking_uri(saved_uri)
        fluent._active_experiment_id = saved_experiment
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_app()
        reset_runtime()


class ChaosStack:
    """Private Redis, MLflow store (sqlite, or a real server), fake LLM and workers for one scenario.

    >>> with ChaosStack(latency_ms=150, visibility_timeout=10) as stack:  # doctest: +SKIP
    ...     traces = stack.record(100)
    ...     handles = stack.enqueue(traces)
    ...     w1 = stack.worker("w1")
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0,
        visibility_timeout: int | None = None,
        mlflow_server: bool = False,
        broker: str = "redis",
        workdir: str | os.PathLike[str] | None = None,
        keep: bool = False,
    ) -> None:
        self.latency_ms = latency_ms
        self.visibility_timeout = visibility_timeout
        self.use_mlflow_server = mlflow_server
        if broker not in ("redis", "rabbitmq"):
            raise ValueError(f"broker must be 'redis' or 'rabbitmq' (got {broker!r})")
        self.broker = broker
        self.rabbit: RabbitVhost | None = None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tracejudge-chaos-"))
        self.keep = keep
        self.key_prefix = f"tjchaos-{uuid.uuid4().hex[:8]}:"
        self.redis: RedisServer | None = None
        self.mlflow: MlflowServer | None = None
        self.llm: Any = None
        self.workers: list[WorkerProcess] = []
        self.handles: list[Any] = []
        self._exit = contextlib.ExitStack()

    # -- life cycle

    def __enter__(self) -> "ChaosStack":
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def _start(self) -> None:
        from tracejudge.testing.fake_llm import FakeLLMServer

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(directory=self.workdir / "redis")
        self._exit.callback(self.redis.stop)
        self.redis.start()
        if self.broker == "rabbitmq":
            self.rabbit = RabbitVhost()
            self._exit.callback(self.rabbit.stop)
            self.rabbit.start()
        self.llm = self._exit.enter_context(FakeLLMServer(latency_ms=self.latency_ms, retry_after=0.05))
        if self.use_mlflow_server:
            self.mlflow = MlflowServer(directory=self.workdir / "mlflow")
            self._exit.callback(self.mlflow.stop)
            self.mlflow.start()
            self.tracking_uri = self.mlflow.url
            artifact_root = None  # the server's --artifacts-destination
        else:
            (self.workdir / "mlflow").mkdir(exist_ok=True)
            self.tracking_uri = f"sqlite:///{self.workdir / 'mlflow' / 'mlflow.db'}"
            artifact_root = self.workdir / "mlflow" / "artifacts"
        self._exit.callback(self._stop_workers)
        self._exit.callback(self.handles.clear)  # result handles unsubscribe while Redis still answers
        self.experiment_id = self._exit.enter_context(
            producer_environment(self.env(), tracking_uri=self.tracking_uri, artifact_root=artifact_root)
        )
        if not self.keep:
            self._exit.callback(shutil.rmtree, self.workdir, True)

    def __exit__(self, *exc: Any) -> None:
        self._exit.close()

    def _stop_workers(self) -> None:
        for worker in self.workers:
            worker.kill()

    # -- pieces

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a worker of this stack (and of this process as producer)."""
        assert self.redis is not None and self.llm is not None
        env = {
            "TRACEJUDGE_REDIS_URL": self.redis.url,
            "TRACEJUDGE_LLM_BASE_URL": self.llm.base_url,
            "TRACEJUDGE_LLM_API_KEY": "sk-test-not-secret",
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "TRACEJUDGE_KEY_PREFIX": self.key_prefix,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_MODEL_CATALOG_URI": "",
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        }
        if self.rabbit is not None:
            env["TRACEJUDGE_BROKER_URL"] = self.rabbit.url
        if self.visibility_timeout is not None:
            env["TRACEJUDGE_VISIBILITY_TIMEOUT"] = str(self.visibility_timeout)
        env.update(extra)
        return env

    def worker(self, name: str, *, concurrency: int = 8, pool: str = "threads", wait: bool = True, **extra_env: str) -> WorkerProcess:
        """Start a ``tracejudge worker`` subprocess on this stack (MLflow client settings as in production)."""
        from tracejudge.mlflow_io.store import WORKER_ENVIRONMENT

        env = {**WORKER_ENVIRONMENT, **self.env(**extra_env)}
        worker = WorkerProcess(env, name=name, concurrency=concurrency, pool=pool, log=self.workdir / f"{name}.log")
        self.workers.append(worker)
        return worker.start(wait=wait)

    def record(self, n: int, *, research: str | None = None, article: str | None = None) -> list[str]:
        """Record ``n`` ``article_writer`` traces (each in its own run), waiting until all are in the store."""
        import mlflow

        from tracejudge.testing import workflows

        ids = []
        for i in range(n):
            ids.append(
                workflows.record_article_trace(
                    topic=f"topic {i}",
                    research=research or workflows.DEFAULT_RESEARCH,
                    article=article or workflows.DEFAULT_ARTICLE,
                )
            )
        mlflow.flush_trace_async_logging()
        return ids

    def enqueue(self, trace_ids: Sequence[str], *, config: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
        """``tracejudge.enqueue`` every trace with ``config`` (default :func:`chaos_config`); returns the handles."""
        import tracejudge

        config = config or chaos_config()
        handles = [tracejudge.enqueue(trace_id, config=config, **kwargs) for trace_id in trace_ids]
        self.handles.extend(handles)
        return handles

    def redis_client(self) -> Any:
        import redis

        assert self.redis is not None
        return redis.Redis.from_url(self.redis.url, socket_connect_timeout=1, socket_timeout=5)

    def unacked(self) -> int:
        """Messages delivered to a worker and not acknowledged yet (kombu's ``unacked`` hash, or RabbitMQ's count)."""
        if self.rabbit is not None:
            return self.rabbit.unacked()
        return int(self.redis_client().hlen(f"{self.key_prefix}unacked"))

    def queued(self) -> int:
        """Messages waiting in the two tracejudge queues."""
        from tracejudge.worker import QUEUES

        if self.rabbit is not None:
            return self.rabbit.queued()
        client = self.redis_client()
        return sum(int(client.llen(f"{self.key_prefix}{q}")) for q in QUEUES)

    def llm_requests(self) -> int:
        return int(self.llm.stats()["requests"])

    def log_count(self, text: str) -> int:
        """How often ``text`` appears in the logs of this stack's workers."""
        return sum(w.log.read_text(errors="replace").count(text) for w in self.workers if w.log.exists())

    def log_tail(self, chars: int = 3000) -> str:
        parts = []
        for worker in self.workers:
            text = worker.log.read_text(errors="replace") if worker.log.exists() else ""
            parts.append(f"--- {worker.name} ({worker.log}) ---\n{text[-chars:]}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- scenarios


@dataclasses.dataclass
class ScenarioResult:
    """What one chaos scenario did, in counts (and the recovery time, for people, not for asserts)."""

    scenario: str
    traces: int
    audit: Audit
    outcome: Outcome
    llm_requests: int  #: chat requests the fake LLM server answered
    recovery_seconds: float | None  #: failure start -> last verdict
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def expected_llm_requests(self) -> int:
        return self.traces * JUDGES_PER_TRACE

    @property
    def verdicts(self) -> int:
        return len(self.outcome.verdicts)

    @property
    def error_verdicts(self) -> dict[str, str]:
        return {t: v.summary() for t, v in self.outcome.verdicts.items() if v.status == "error"}

    @property
    def ok(self) -> bool:
        return self.audit.exact and self.verdicts == self.traces and not self.error_verdicts

    def describe(self) -> str:
        """Everything needed to see what went wrong (for assertion messages)."""
        lines = [
            f"{self.scenario}: traces {self.traces}, verdicts {self.verdicts} {dict(self.outcome.statuses)}, "
            f"assessments {self.audit.written}/{self.audit.expected}, duplicates {self.audit.duplicates}, "
            f"lost {self.audit.lost}, unexpected {self.audit.unexpected}, LLM calls {self.llm_requests} "
            f"(plan: {self.expected_llm_requests}), notes {self.notes}",
            *self.audit.problems[:10],
            *[f"{t}: {why}" for t, why in list(self.outcome.failures.items())[:10]],
            *[f"{t}: {why}" for t, why in list(self.error_verdicts.items())[:10]],
        ]
        return "\n".join(lines)


TABLE_HEADER = (
    "scenario", "traces", "verdicts", "evaluations expected", "evaluations written",
    "duplicates", "lost", "LLM calls (plan)", "recovery s",
)


def table_row(result: ScenarioResult) -> tuple[str, ...]:
    recovery = "-" if result.recovery_seconds is None else f"{result.recovery_seconds:.1f}"
    return (
        result.scenario, str(result.traces), str(result.verdicts), str(result.audit.expected), str(result.audit.written),
        str(result.audit.duplicates), str(result.audit.lost), f"{result.llm_requests} ({result.expected_llm_requests})",
        recovery,
    )


def format_table(results: Sequence[ScenarioResult]) -> str:
    """A Markdown table of the results (one row per scenario)."""
    rows = [TABLE_HEADER, *(table_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in rows]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _say(log: Any, message: str) -> None:
    if log is not None:
        log(message)


def _finish(stack: ChaosStack, name: str, trace_ids: list[str], handles: list[Any], *, started: float | None,
            timeout: float, notes: dict[str, Any], log: Any) -> ScenarioResult:
    outcome = wait_for_verdicts(handles, timeout=timeout)
    recovery = outcome.last_done - started if started is not None else None
    _say(log, f"[{name}] {len(outcome.verdicts)}/{len(handles)} verdicts; auditing MLflow")
    audit = audit_traces(trace_ids)
    result = ScenarioResult(name, len(trace_ids), audit, outcome, stack.llm_requests(), recovery, notes)
    if not result.ok:
        result.notes["worker_logs"] = stack.log_tail()
    return result


def run_worker_kill(
    *, traces: int = 100, latency_ms: float = 150, concurrency: int = 8, kill_after: int | None = None,
    visibility_timeout: int | None = None, broker: str = "redis", timeout: float = 600, log: Any = None,
) -> ScenarioResult:
    """SIGKILL a worker with evaluations in flight and queued, then start another one.

    With the default settings (``visibility_timeout=None``) the killed worker's
    unacknowledged tasks come back once its lease lapses (15 s) plus kombu's
    restore sweep (3 s); the new worker reuses what is already on the traces
    or cached, so nothing is written twice.
    """
    name = "worker SIGKILL" + (" (RabbitMQ)" if broker == "rabbitmq" else "")
    kill_after = traces // 5 if kill_after is None else kill_after
    with ChaosStack(latency_ms=latency_ms, visibility_timeout=visibility_timeout, broker=broker) as stack:
        _say(log, f"[{name}] recording {traces} traces")
        trace_ids = stack.record(traces)
        handles = stack.enqueue(trace_ids)
        w1 = stack.worker("w1", concurrency=concurrency)
        wait_until(lambda: count_ready(handles) >= kill_after and stack.unacked() > 0, timeout=timeout, what=f"{kill_after} verdicts")
        notes = {"verdicts_before_kill": count_ready(handles), "unacked_at_kill": stack.unacked(), "queued_at_kill": stack.queued()}
        running = [h for h in handles if _state(h) == "STARTED"]  # (task_track_started): held by w1 at the kill
        started = time.monotonic()
        w1.kill()
        _say(log, f"[{name}] SIGKILLed w1 ({notes}); starting w2")
        stack.worker("w2", concurrency=concurrency)
        result = _finish(stack, name, trace_ids, handles, started=started, timeout=timeout, notes=notes, log=log)
        back = [result.outcome.done_at[h.id] for h in running if h.id in result.outcome.done_at]
        result.notes["running_at_kill"] = len(running)
        if back:  # when the last evaluation w1 was running had its verdict (the lease's part of the recovery)
            result.notes["running_at_kill_done_s"] = round(max(back) - started, 1)
        return result


def run_mlflow_outage(
    *, traces: int = 40, outage: float = 30, latency_ms: float = 150, concurrency: int = 8, timeout: float = 900,
    log: Any = None,
) -> ScenarioResult:
    """Stop the MLflow tracking server mid-run for ``outage`` seconds, then start it again on the same port.

    Evaluations that meet the outage retry with backoff (``MlflowUnavailable``);
    judge results made before a failed write are cached in Redis, so no judge
    call is repeated: the LLM sees exactly one call per (span, judge).
    """
    name = f"MLflow server down {outage:g} s"
    with ChaosStack(latency_ms=latency_ms, mlflow_server=True) as stack:
        assert stack.mlflow is not None
        _say(log, f"[{name}] recording {traces} traces")
        trace_ids = stack.record(traces)
        handles = stack.enqueue(trace_ids)
        stack.worker("w1", concurrency=concurrency)
        wait_until(lambda: count_ready(handles) >= max(1, traces // 5), timeout=timeout, what="first verdicts")
        notes: dict[str, Any] = {"verdicts_before_outage": count_ready(handles), "unacked_at_outage": stack.unacked()}
        started = time.monotonic()
        stack.mlflow.stop()
        _say(log, f"[{name}] MLflow server stopped ({notes})")
        time.sleep(max(0.0, outage - (time.monotonic() - started)))
        notes["verdicts_during_outage"] = count_ready(handles) - notes["verdicts_before_outage"]
        stack.mlflow.start()
        notes["down_seconds"] = round(time.monotonic() - started, 1)
        _say(log, f"[{name}] MLflow server back after {notes['down_seconds']} s")
        result = _finish(stack, name, trace_ids, handles, started=started, timeout=timeout, notes=notes, log=log)
        result.notes["task_retries"] = stack.log_count("MLflow unavailable for")
        return result


def run_redis_restart(
    *, traces: int = 60, down: float = 5, latency_ms: float = 150, concurrency: int = 8, timeout: float = 600,
    log: Any = None,
) -> ScenarioResult:
    """Restart the (append-only) Redis mid-run; an ``enqueue`` while it is down must fail fast and clearly.

    Workers reconnect by themselves; evaluations in flight wait out the restart
    (their Redis calls and result storing retry), queued ones survive in the
    append-only file. One more trace is enqueued after the restart, so the
    producer is shown to recover too. ``notes["enqueue_error"]`` is the
    exception ``enqueue`` raised while Redis was down (or None).
    """
    import tracejudge

    name = f"Redis restart ({down:g} s down)"
    with ChaosStack(latency_ms=latency_ms) as stack:
        assert stack.redis is not None
        _say(log, f"[{name}] recording {traces} traces")
        trace_ids = stack.record(traces)
        late = trace_ids.pop()
        handles = stack.enqueue(trace_ids)
        stack.worker("w1", concurrency=concurrency)
        wait_until(lambda: count_ready(handles) >= max(1, traces // 5), timeout=timeout, what="first verdicts")
        notes: dict[str, Any] = {"verdicts_before_restart": count_ready(handles), "unacked_at_restart": stack.unacked()}
        started = time.monotonic()
        stack.redis.stop()
        try:
            tracejudge.enqueue(late, config=chaos_config())
            notes["enqueue_error"] = None
        except Exception as exc:
            notes["enqueue_error"] = exc
            notes["enqueue_error_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(max(0.0, down - (time.monotonic() - started)))
        stack.redis.start()
        _say(log, f"[{name}] Redis back after {time.monotonic() - started:.1f} s ({notes})")
        handles += stack.enqueue([late])
        trace_ids.append(late)
        result = _finish(stack, name, trace_ids, handles, started=started, timeout=timeout, notes=notes, log=log)
        result.notes["unacked_after"] = stack.unacked()
        result.notes["broker_reconnects"] = stack.log_count("Connection to broker lost")
        return result


def run_graceful_shutdown(
    *, traces: int = 12, judge_latency_ms: int = 2000, concurrency: int = 4, timeout: float = 300, log: Any = None,
) -> ScenarioResult:
    """SIGTERM a worker busy with slow evaluations: in-flight ones finish, queued ones stay queued.

    Then a new worker finishes the rest. ``notes`` has what was running when
    the signal came and what was done and queued when the worker had exited.
    """
    name = "worker SIGTERM (warm shutdown)"
    slow = f"[[tj:latency={judge_latency_ms}]]"
    with ChaosStack() as stack:
        _say(log, f"[{name}] recording {traces} traces")
        trace_ids = stack.record(traces, research=f"Slow findings {slow}", article=f"Slow article {slow}")
        handles = stack.enqueue(trace_ids)
        w1 = stack.worker("w1", concurrency=concurrency)
        busy = concurrency * JUDGES_PER_TRACE
        wait_until(lambda: stack.llm.stats()["in_flight"] >= busy, timeout=timeout, what=f"{busy} judge calls in flight")
        notes: dict[str, Any] = {
            "running_at_term": stack.unacked(), "verdicts_at_term": count_ready(handles), "queued_at_term": stack.queued(),
        }
        started = time.monotonic()
        notes["exit_code"] = w1.terminate(timeout=timeout)
        notes.update(
            verdicts_after_exit=count_ready(handles), queued_after_exit=stack.queued(),
            unacked_after_exit=stack.unacked(), llm_requests_after_exit=stack.llm_requests(),
        )
        _say(log, f"[{name}] w1 exited ({notes}); starting w2")
        stack.worker("w2", concurrency=concurrency)
        return _finish(stack, name, trace_ids, handles, started=started, timeout=timeout, notes=notes, log=log)


def run_long_evaluation(
    *, seconds: float = 180, workers: int = 2, concurrency: int = 2, visibility_timeout: int | None = None,
    broker: str = "redis", log: Any = None,
) -> ScenarioResult:
    """One evaluation whose judge calls take ``seconds`` each, on live workers with default settings.

    Its message must be delivered once: the worker holding it renews its lease,
    so kombu's restore sweep (run by every worker, the idle one too) never
    hands it to another worker, however much longer than the visibility
    timeout it runs. ``notes["deliveries"]`` counts the workers' "received" log
    lines for its task id (1 = no redelivery).
    """
    name = f"evaluation of {seconds:g} s on a live worker" + (" (RabbitMQ)" if broker == "rabbitmq" else "")
    slow = f"[[tj:latency={int(seconds * 1000)}]]"
    with ChaosStack(visibility_timeout=visibility_timeout, broker=broker) as stack:
        _say(log, f"[{name}] recording 1 trace, starting {workers} workers")
        trace_ids = stack.record(1, research=f"Slow findings {slow}", article=f"Slow article {slow}")
        for i in range(workers):
            stack.worker(f"w{i + 1}", concurrency=concurrency)
        config = chaos_config(timeout_seconds=seconds + 60, overall_timeout_seconds=seconds + 120)
        started = time.monotonic()
        handles = stack.enqueue(trace_ids, config=config)
        result = _finish(stack, name, trace_ids, handles, started=None, timeout=seconds * 3 + 120, notes={}, log=log)
        result.notes["seconds"] = round(time.monotonic() - started, 1)
        result.notes["deliveries"] = stack.log_count(f"[{handles[0].id}] received")
        result.notes["redeliveries"] = result.notes["deliveries"] - 1
        return result
