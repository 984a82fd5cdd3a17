"""The pieces the benchmark runs are built from: services, traces, workers, and each measurement.

``run.py`` (the one command) and ``sweep.py`` (pool and concurrency options)
compose these. Everything started here is registered on an ``ExitStack``,
so it is stopped even when a measurement fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, CLK_TCK, REPO, cpu_seconds, machine_jiffies, pct, tree_rss_mb

from tracejudge.testing.processes import MlflowServer, RedisServer, WorkerProcess, free_port

LLM_LATENCY_S = 0.2
JUDGES_PER_TRACE = 6

#: 3 judges on each of the 2 nodes, none on the workflow root: 6 results per trace.
CONFIG_YAML = """\
observability:
  mlflow:
    enabled: true
    enable_judges: true
    judges:
      node_overrides:
        research: [relevance, groundedness, coherence]
        write: [coherence, completeness, harmfulness]
      execution:
        mode: async
        timeout_seconds: 30
        max_attempts: 3
        trace_wait_seconds: 30
        overall_timeout_seconds: 300
quality_gate:
  enabled: true
  threshold: 0.8
  action: warn
"""


def minimal_config() -> str:
    """The bench config with ``artifact_level: minimal`` (no ``quality_assessment.json``, no run metrics)."""
    return CONFIG_YAML.replace("    enable_judges: true\n", "    enable_judges: true\n    artifact_level: minimal\n", 1)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------- services


@dataclass
class Store:
    """An MLflow store the workers and the trace generator use."""

    name: str  # "sqlite", "http" (mlflow server on sqlite) or "postgres" (mlflow server on PostgreSQL)
    uri: str
    experiment_id: str
    server: MlflowServer | None = None

    @property
    def server_pid(self) -> int | None:
        return self.server.proc.pid if self.server and self.server.proc else None


@dataclass
class Services:
    stack: ExitStack
    base: Path
    redis: RedisServer
    llm: Any  # LLMProcess
    config_path: Path
    stores: dict[str, Store] = field(default_factory=dict)

    def worker_env(self, store: Store, prefix: str, *, write_concurrency: int | None = None, phases_dir: Path | None = None,
                   config_path: Path | None = None) -> dict[str, str]:
        env = {
            "TRACEJUDGE_REDIS_URL": self.redis.url,
            "TRACEJUDGE_LLM_BASE_URL": self.llm.base_url,
            "TRACEJUDGE_LLM_API_KEY": "sk-bench-not-a-real-key",
            "MLFLOW_TRACKING_URI": store.uri,
            "TRACEJUDGE_KEY_PREFIX": prefix,
            "TRACEJUDGE_CONFIG": str(config_path or self.config_path),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_MODEL_CATALOG_URI": "",
        }
        if write_concurrency is not None:  # else the package's default for the store
            env["TRACEJUDGE_WRITE_CONCURRENCY"] = str(write_concurrency)
        if phases_dir is not None:
            env["TJBENCH_PHASES_DIR"] = str(phases_dir)
        return env


def start_services(stack: ExitStack, *, latency_ms: float = 200.0, base: Path | None = None) -> Services:
    from llm_proc import LLMProcess

    base = base or Path(tempfile.mkdtemp(prefix="tracejudge-bench-"))
    (base / "logs").mkdir(parents=True, exist_ok=True)
    say(f"working directory {base}")
    redis = RedisServer(directory=base / "redis")
    (base / "redis").mkdir(exist_ok=True)
    redis.start()
    stack.callback(redis.stop)
    say(f"redis-server on port {redis.port} (append-only file, appendfsync always)")
    llm = LLMProcess(latency_ms=latency_ms).start()
    stack.callback(llm.stop)
    say(f"test LLM server at {llm.base_url}, {latency_ms:g} ms per call (pid {llm.pid})")
    config_path = base / "tracejudge.yaml"
    config_path.write_text(CONFIG_YAML)
    os.environ.update(
        TRACEJUDGE_REDIS_URL=redis.url,
        TRACEJUDGE_CONFIG=str(config_path),
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_MODEL_CATALOG_URI="",
    )
    return Services(stack=stack, base=base, redis=redis, llm=llm, config_path=config_path)


def _precreate_wal(db: Path) -> None:
    """Create the sqlite file in WAL mode (it persists); MLflow then creates its tables in it."""
    import sqlite3

    connection = sqlite3.connect(db)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.close()


def sqlite_store(services: Services, *, wal: bool = False) -> Store:
    import mlflow

    directory = services.base / "sqlite"
    directory.mkdir(exist_ok=True)
    if wal:
        _precreate_wal(directory / "mlflow.db")
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("bench", artifact_location=(directory / "artifacts").as_uri())
    store = Store("sqlite", uri, experiment_id)
    services.stores["sqlite"] = store
    return store


def http_store(services: Services, *, workers: int = 4, wal: bool = False) -> Store:
    import mlflow

    directory = services.base / "http"
    server = MlflowServer(directory=directory, workers=workers)
    directory.mkdir(exist_ok=True)
    if wal:
        _precreate_wal(directory / "mlflow.db")
    server.start()
    services.stack.callback(server.stop)
    say(f"mlflow server (gunicorn --workers {workers}) at {server.url}, sqlite behind it{' (WAL)' if wal else ''}")
    mlflow.set_tracking_uri(server.url)
    experiment_id = mlflow.create_experiment("bench")
    store = Store("http", server.url, experiment_id, server=server)
    services.stores["http"] = store
    return store


#: Where the PostgreSQL row's database is created (trust auth on loopback, as on the team's machine).
POSTGRES_URL_ENV = "TRACEJUDGE_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL row cannot run here (no server, no driver); the message says what to do."""


def postgres_database(services: Services) -> str:
    """Create a fresh database for this run on the PostgreSQL at ``$TRACEJUDGE_BENCH_POSTGRES_URL``
    (default 127.0.0.1:5432, user postgres, trust auth) and return its SQLAlchemy URI; dropped at the end."""
    from urllib.parse import urlsplit, urlunsplit

    admin_url = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    shown = _redact(admin_url)
    try:
        import psycopg2
    except ImportError:
        raise PostgresUnavailable(
            "the PostgreSQL row needs the psycopg2 driver: .venv/bin/pip install -e '.[bench]' "
            "(or pass --stores without postgres)"
        ) from None
    try:
        admin = psycopg2.connect(admin_url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise PostgresUnavailable(
            f"no PostgreSQL answers at {shown} ({str(exc).strip().splitlines()[0]}). The PostgreSQL row needs one: "
            f"on Debian/Ubuntu `sudo apt-get install postgresql && sudo service postgresql start`, trust auth for "
            f"127.0.0.1 in pg_hba.conf (or a password in the URL), or point {POSTGRES_URL_ENV} at another server; "
            f"or run without it: --stores sqlite,http"
        ) from None
    admin.autocommit = True
    name = f"tracejudge_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop() -> None:
        try:
            conn = psycopg2.connect(admin_url, connect_timeout=5)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.close()
        except Exception as exc:  # best effort: say so, the run's figures stand
            say(f"could not drop the bench database {name}: {exc}")

    services.stack.callback(drop)
    parts = urlsplit(admin_url)
    say(f"PostgreSQL database {name} created at {shown}")
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3: name the driver installed here
    return urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", "", ""))


def _redact(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def postgres_store(services: Services, *, workers: int = 4) -> Store:
    """An ``mlflow server`` (gunicorn ``workers``) backed by a fresh PostgreSQL database."""
    import mlflow

    uri = postgres_database(services)
    directory = services.base / "postgres"
    directory.mkdir(exist_ok=True)
    server = MlflowServer(directory=directory, workers=workers, backend_store_uri=uri)
    server.start()
    services.stack.callback(server.stop)
    say(f"mlflow server (gunicorn --workers {workers}) at {server.url}, PostgreSQL behind it")
    mlflow.set_tracking_uri(server.url)
    experiment_id = mlflow.create_experiment("bench")
    store = Store("postgres", server.url, experiment_id, server=server)
    services.stores["postgres"] = store
    return store


# ----------------------------------------------------------------------------- traces


def make_traces(store: Store, n: int, label: str) -> list[str]:
    """``n`` sample ``article_writer`` traces (2 nodes + a tool span, each in its own run), exported."""
    import mlflow

    from tracejudge.testing.workflows import record_article_trace

    if n <= 0:
        return []
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_experiment(experiment_id=store.experiment_id)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints a "View run" line per run on an HTTP store
        ids = [record_article_trace(run_name=f"{label}-{i}") for i in range(n)]
    mlflow.flush_trace_async_logging()
    say(f"{n} {label} traces in the {store.name} store ({(time.perf_counter() - started) / n * 1000:.0f} ms each)")
    return ids


# ----------------------------------------------------------------------------- workers


class BenchWorker(WorkerProcess):
    """A ``tracejudge worker`` started through ``bench/instrumented_worker.py`` (timers per step)."""

    def start(self, *, wait: bool = True) -> "BenchWorker":
        cmd = [
            sys.executable, str(BENCH_DIR / "instrumented_worker.py"), "worker",
            # one Celery worker per BenchWorker (start_workers starts N of them), unless processes is None:
            # then `tracejudge worker`'s default, one supervised process per core (bench/processes.py)
            *(["--processes", str(self.processes)] if self.processes else []), "--pool", self.pool,
            "--concurrency", str(self.concurrency), "--queues", self.queues, "--hostname", f"{self.name}@%h",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=str(REPO))
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        from tracejudge.testing import processes

        processes._wait(self._ready, timeout=processes.READY_TIMEOUT, what=f"worker {self.name}", proc=self.proc, log=self.log)


@dataclass
class WorkerSet:
    workers: list[BenchWorker]
    prefix: str
    phases_dir: Path
    pool: str
    concurrency: int
    write_concurrency: int
    whatif: str = ""

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.pid]

    def rss(self) -> dict[str, float]:
        """RSS per process (MB), over every worker's process tree."""
        found = {}
        for w in self.workers:
            if w.pid:
                for pid, mb in tree_rss_mb(w.pid).items():
                    found[str(pid)] = mb
        return found

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def start_workers(services: Services, store: Store, *, processes: int = 1, pool: str = "threads", concurrency: int = 16,
                  write_concurrency: int | None = None, label: str = "w", whatif: str = "",
                  config_yaml: str | None = None) -> WorkerSet:
    """Start ``processes`` bench workers; ``write_concurrency`` None: the package's default for the store."""
    prefix = f"bench-{label}-{uuid.uuid4().hex[:6]}:"
    phases_dir = services.base / "phases" / prefix.rstrip(":")
    phases_dir.mkdir(parents=True, exist_ok=True)
    config_path = None
    if config_yaml is not None:
        config_path = services.base / f"tracejudge-{label}.yaml"
        config_path.write_text(config_yaml)
    env = services.worker_env(store, prefix, write_concurrency=write_concurrency, phases_dir=phases_dir,
                              config_path=config_path)
    if whatif:
        env["TJBENCH_WHATIF"] = whatif
    workers = [
        BenchWorker(env, name=f"{label}{i}-{uuid.uuid4().hex[:4]}", concurrency=concurrency, pool=pool,
                    log=services.base / "logs" / f"{prefix.rstrip(':')}-{i}.log")
        for i in range(processes)
    ]
    for w in workers:
        w.start(wait=False)
    ws = WorkerSet(workers, prefix, phases_dir, pool, concurrency, write_concurrency or store_write_concurrency(store), whatif)
    services.stack.callback(ws.stop)
    started = time.perf_counter()
    for w in workers:
        w.wait_ready()
    say(f"{processes} worker process(es), --pool {pool} -c {concurrency}, write concurrency {ws.write_concurrency}"
        f"{'' if write_concurrency else ' (default)'}, "
        f"{store.name} store{', what-if ' + whatif if whatif else ''}: ready in {time.perf_counter() - started:.1f} s")
    use_prefix(prefix)
    return ws


def store_write_concurrency(store: Store) -> int:
    """The write concurrency a worker uses on ``store`` when ``TRACEJUDGE_WRITE_CONCURRENCY`` is not set."""
    from tracejudge.mlflow_io.store import default_write_concurrency

    return default_write_concurrency(store.uri)


def use_prefix(prefix: str) -> None:
    """Point this process's Celery app (the producer side) at ``prefix``."""
    from tracejudge.worker import reset_app

    os.environ["TRACEJUDGE_KEY_PREFIX"] = prefix
    reset_app()


# ----------------------------------------------------------------------------- measurements


def _done_at(handle: Any) -> float | None:
    value = handle._result.date_done
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def collect(handles: list[Any], *, timeout: float) -> dict[str, Any]:
    """Wait for every verdict; count results and errors."""
    deadline = time.monotonic() + timeout
    verdicts, failures = [], []
    for handle in handles:
        try:
            verdicts.append(handle.verdict(timeout=max(1.0, deadline - time.monotonic()), raise_on_block=False))
        except Exception as exc:  # counted and shown, not hidden
            failures.append(f"{handle.trace_id}: {type(exc).__name__}: {exc}"[:300])
    results = sum(len(v.results()) for v in verdicts)
    judge_errors = sum(len(v.errors) for v in verdicts)
    statuses: dict[str, int] = {}
    for v in verdicts:
        statuses[v.status] = statuses.get(v.status, 0) + 1
    return {"verdicts": verdicts, "failures": failures, "results": results, "judge_errors": judge_errors, "statuses": statuses}


def read_phases(phases_dir: Path, task_ids: set[str] | None = None) -> list[dict[str, Any]]:
    records = []
    for path in sorted(phases_dir.glob("phases-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if task_ids is None or record.get("task_id") in task_ids:
                records.append(record)
    return records


def ops_totals(phases_dir: Path) -> dict[str, list[float]]:
    """Cumulative MLflow calls per worker process (the last record of each), summed."""
    last_by_pid: dict[int, dict] = {}
    for record in read_phases(phases_dir):
        last_by_pid[record["pid"]] = record.get("ops", {})
    totals: dict[str, list[float]] = {}
    for ops in last_by_pid.values():
        for name, (count, seconds) in ops.items():
            entry = totals.setdefault(name, [0, 0.0])
            entry[0] += count
            entry[1] += seconds
    return totals


def ops_delta(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [v[0] - before.get(k, [0, 0])[0], v[1] - before.get(k, [0, 0.0])[1]] for k, v in after.items()}


def phase_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """p50 and mean (ms) of each step over the given task records."""
    keys: set[str] = set()
    for r in records:
        keys.update(r.get("phases", {}))
    out: dict[str, dict[str, float | None]] = {}
    rows = {k: [r.get("phases", {}).get(k, 0.0) for r in records] for k in keys}
    rows["evaluate"] = [r["evaluate"] for r in records if r.get("evaluate") is not None]
    rows["task"] = [r["task"] for r in records]
    rows["celery_and_task_wrapper"] = [r["task"] - (r.get("evaluate") or 0) for r in records]
    rows["queue_wait"] = [r["queue_wait"] for r in records if r.get("queue_wait") is not None]
    if "judges" in rows:
        rows["judges_minus_llm_latency"] = [v - LLM_LATENCY_S for v in rows["judges"]]
    evaluate_other = []
    for r in records:
        p = r.get("phases", {})
        named = sum(p.get(k, 0.0) for k in ("get_trace", "lock", "redis_cache", "judges", "write_back", "write_feedback",
                                              "write_summary"))
        if r.get("evaluate") is not None:
            evaluate_other.append(r["evaluate"] - named)
    rows["evaluate_other"] = evaluate_other
    for k, values in rows.items():
        if values:
            out[k] = {"p50_ms": pct(values, 50) * 1000, "mean_ms": sum(values) / len(values) * 1000}
    return out


class CpuMeter:
    """CPU seconds used by each component between ``start()`` and ``stop()``."""

    def __init__(self, components: dict[str, tuple[int | None, bool]]) -> None:
        self.components = {k: v for k, v in components.items() if v[0]}
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def start(self) -> None:
        self.before = {k: cpu_seconds(pid, tree=tree) for k, (pid, tree) in self.components.items()}  # type: ignore[arg-type]
        self.machine_before = machine_jiffies()

    def stop(self) -> None:
        self.after = {k: cpu_seconds(pid, tree=tree) for k, (pid, tree) in self.components.items()}  # type: ignore[arg-type]
        self.machine_after = machine_jiffies()

    def percent(self, seconds: float) -> dict[str, float]:
        """Percent of one core per component over ``seconds`` (2 cores = 200 %), and ``outside`` the
        benchmark: the machine's busy time not used by any component (other users' processes)."""
        out = {k: round((self.after[k] - self.before.get(k, 0.0)) / seconds * 100, 1) for k in self.after}
        busy = (self.machine_after[0] - self.machine_before[0]) / CLK_TCK / seconds * 100
        out["outside_benchmark"] = round(max(0.0, busy - sum(out.values())), 1)
        return out


def components(services: Services, store: Store, workers: WorkerSet) -> dict[str, tuple[int | None, bool]]:
    comps: dict[str, tuple[int | None, bool]] = {}
    for i, pid in enumerate(workers.pids):
        comps[f"worker{i}"] = (pid, True)
    comps["mlflow_server"] = (store.server_pid, True)
    comps["redis"] = (services.redis.proc.pid if services.redis.proc else None, False)
    comps["llm_server"] = (services.llm.pid, False)
    comps["bench_producer"] = (os.getpid(), False)
    return comps


def warm_up(workers: WorkerSet, traces: list[str]) -> None:
    import tracejudge

    handles = [tracejudge.enqueue(t) for t in traces]
    outcome = collect(handles, timeout=180)
    if outcome["failures"]:
        raise RuntimeError(f"warm-up failed: {outcome['failures'][:3]}")


def throughput(services: Services, store: Store, workers: WorkerSet, traces: list[str], *, profile_seconds: float = 0.0,
               profile_out: Path | None = None) -> dict[str, Any]:
    """Enqueue all ``traces`` at once; time from the first enqueue to the last verdict."""
    import tracejudge

    meter = CpuMeter(components(services, store, workers))
    ops_before = ops_totals(workers.phases_dir)
    llm_before = services.llm.stats()["requests"]
    profiler = None
    if profile_seconds and profile_out is not None:
        from profile_worker import start_py_spy

        profiler = start_py_spy(workers.pids[0], profile_out, seconds=profile_seconds)
    meter.start()
    first = time.time()
    handles = []
    enqueue_at = {}
    for trace_id in traces:
        t = time.time()
        handle = tracejudge.enqueue(trace_id)
        enqueue_at[handle.id] = t
        handles.append(handle)
    outcome = collect(handles, timeout=600)
    done = [d for h in handles if (d := _done_at(h)) is not None]
    last = max(done) if done else time.time()
    window = max(1e-6, last - first)
    meter.stop()
    if profiler is not None:
        profiler.wait(timeout=profile_seconds + 60)
    llm_calls = services.llm.stats()["requests"] - llm_before
    ops = ops_delta(ops_before, ops_totals(workers.phases_dir))
    records = read_phases(workers.phases_dir, {h.id for h in handles})
    n = len(traces)
    feedback_writes = ops.get("log_feedback", [0, 0.0])[0]
    store_calls = sum(v[0] for v in ops.values())
    latencies = [d - enqueue_at[h.id] for h in handles if (d := _done_at(h)) is not None]
    result = {
        "store": store.name,
        "processes": len(workers.workers),
        "pool": workers.pool,
        "concurrency": workers.concurrency,
        "write_concurrency": workers.write_concurrency,
        "whatif": workers.whatif,
        "traces": n,
        "seconds": window,
        "traces_per_s": n / window,
        "judge_calls_per_s": llm_calls / window,
        "llm_calls": llm_calls,
        "results": outcome["results"],
        "judge_errors": outcome["judge_errors"],
        "failures": outcome["failures"][:5],
        "statuses": outcome["statuses"],
        "feedback_writes_per_s": feedback_writes / window,
        "store_calls_per_s": store_calls / window,
        "store_calls_per_trace": store_calls / n if n else None,
        "ops": {k: {"count": v[0], "mean_ms": (v[1] / v[0] * 1000) if v[0] else None} for k, v in ops.items()},
        "cpu_percent": meter.percent(window),
        "worker_cpu_ms_per_trace": sum(v for k, v in meter.percent(window).items() if k.startswith("worker")) * 10 * window / n,
        "server_cpu_ms_per_trace": meter.percent(window).get("mlflow_server", 0.0) * 10 * window / n,
        "phases": phase_summary(records),
        "burst_latency_p50_s": pct(latencies, 50),
        "rss_mb": workers.rss(),
    }
    say(f"  {store.name} x{len(workers.workers)} {workers.pool} -c {workers.concurrency} wc {workers.write_concurrency}: "
        f"{n} traces in {window:.1f} s = {result['traces_per_s']:.1f} traces/s, {result['judge_calls_per_s']:.0f} judge calls/s, "
        f"{result['feedback_writes_per_s']:.0f} feedback writes/s, {result['store_calls_per_s']:.0f} store calls/s; "
        f"errors {outcome['judge_errors']} failures {len(outcome['failures'])}; cpu {result['cpu_percent']}")
    return result


def latency_single(workers: WorkerSet, traces: list[str], *, pause: float = 0.3) -> dict[str, Any]:
    """One trace at a time on an idle worker: enqueue-to-verdict in the caller, minus the LLM latency."""
    import tracejudge

    caller, worker_side = [], []
    ids = set()
    for trace_id in traces:
        time.sleep(pause)
        started = time.perf_counter()
        t_wall = time.time()
        handle = tracejudge.enqueue(trace_id)
        verdict = handle.verdict(timeout=120, raise_on_block=False)
        caller.append(time.perf_counter() - started)
        ids.add(handle.id)
        if (d := _done_at(handle)) is not None:
            worker_side.append(d - t_wall)
        if len(verdict.results()) != JUDGES_PER_TRACE:
            raise RuntimeError(f"single-trace run judged {len(verdict.results())} results, expected {JUDGES_PER_TRACE}")
    records = read_phases(workers.phases_dir, ids)
    return {
        "n": len(traces),
        "overhead_p50_ms": (pct(caller, 50) - LLM_LATENCY_S) * 1000,
        "overhead_p95_ms": (pct(caller, 95) - LLM_LATENCY_S) * 1000,
        "enqueue_to_done_p50_ms": (pct(worker_side, 50) - LLM_LATENCY_S) * 1000 if worker_side else None,
        "phases": phase_summary(records),
    }


def latency_under_load(workers: WorkerSet, traces: list[str], *, rate: float) -> dict[str, Any]:
    """Open-loop arrivals at ``rate`` traces/s; enqueue-to-verdict minus the LLM latency."""
    import tracejudge

    handles, at = [], {}
    start = time.time()
    for i, trace_id in enumerate(traces):
        due = start + i / rate
        time.sleep(max(0.0, due - time.time()))
        t = time.time()
        handle = tracejudge.enqueue(trace_id)
        at[handle.id] = t
        handles.append(handle)
    outcome = collect(handles, timeout=300)
    latencies = [d - at[h.id] for h in handles if (d := _done_at(h)) is not None]
    records = read_phases(workers.phases_dir, {h.id for h in handles})
    return {
        "n": len(traces),
        "rate": rate,
        "overhead_p50_ms": (pct(latencies, 50) - LLM_LATENCY_S) * 1000,
        "overhead_p95_ms": (pct(latencies, 95) - LLM_LATENCY_S) * 1000,
        "failures": outcome["failures"][:3],
        "phases": phase_summary(records),
    }


def ceiling(store: Store, trace_ids: list[str], *, processes: int, threads: int, calls: int,
            writer: str = "client") -> dict[str, Any]:
    """Raw log_feedback calls/s from ``processes`` processes x ``threads`` threads, started together
    (``writer="rest"``: through tracejudge's REST writer, ``threads`` requests in flight per process)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    start_at = time.time() + 10.0  # each process imports MLflow (~2 s) and warms up first
    procs = [
        subprocess.Popen([sys.executable, str(BENCH_DIR / "ceiling.py"), "--trace-ids", ",".join(trace_ids),
                          "--threads", str(threads), "--calls", str(calls), "--start-at", str(start_at),
                          "--writer", writer],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))
        for _ in range(processes)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"ceiling.py failed: {stderr[-1500:]}")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    total = sum(o["calls"] for o in outs)
    window = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    result = {
        "store": store.name,
        "writer": writer,
        "processes": processes,
        "threads": threads,
        "calls": total,
        "errors": sum(o["errors"] for o in outs),
        "error_sample": [e for o in outs for e in o["error_sample"]][:3],
        "calls_per_s": total / window,
        "p50_ms": pct([o["p50_ms"] for o in outs if o["p50_ms"]], 50),
        "client_cpu_ms_per_call": sum(o["cpu_ms_per_call"] or 0 for o in outs) / len(outs),
    }
    say(f"  ceiling {store.name} ({writer}) {processes}x{threads} threads: {result['calls_per_s']:.0f} log_feedback/s "
        f"(p50 {result['p50_ms']:.1f} ms, {result['client_cpu_ms_per_call']:.1f} ms CPU per call in the caller, "
        f"errors {result['errors']})")
    return result


def peer(services: Services, store: Store, traces: list[str], warmup: list[str], *, scorers: int = JUDGES_PER_TRACE) -> dict[str, Any]:
    from peer import PEER_ENV

    ids_file = services.base / f"peer-{store.name}-ids.txt"
    ids_file.write_text("\n".join(traces))
    env = {**os.environ, **PEER_ENV, "MLFLOW_TRACKING_URI": store.uri}
    before = services.llm.stats()["requests"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "peer.py"), "--ids-file", str(ids_file), "--warmup-ids", ",".join(warmup),
         "--base-url", services.llm.base_url, "--scorers", str(scorers), "--experiment-id", store.experiment_id],
        env=env, capture_output=True, text=True, timeout=1200, cwd=str(REPO),
    )
    if done.returncode != 0:
        raise RuntimeError(f"peer.py failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    calls = services.llm.stats()["requests"] - before
    expected = len(traces) * scorers
    out.update(
        store=store.name,
        llm_calls_total=calls,  # includes the warm-up evaluate
        judge_calls_per_s=expected / out["wall"],
        traces_per_s=len(traces) / out["wall"],
        process_seconds=time.perf_counter() - started,
    )
    say(f"  peer mlflow.genai.evaluate on {store.name}: {len(traces)} traces x {scorers} make_judge in {out['wall']:.1f} s = "
        f"{out['judge_calls_per_s']:.1f} judge calls/s (feedback written {out['feedback_written']}/{expected}, "
        f"errors {out['feedback_errors']})")
    return out


def producer_cost(services: Services, store: Store, *, calls: int, sleep_calls: int, workflows: int) -> dict[str, Any]:
    import redis

    prefix = f"bench-producer-{uuid.uuid4().hex[:6]}:"  # no worker reads it: nothing is judged
    env = {**os.environ, "TRACEJUDGE_KEY_PREFIX": prefix, "MLFLOW_TRACKING_URI": store.uri}
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "producer.py"), "--calls", str(calls), "--sleep-calls", str(sleep_calls),
         "--workflows", str(workflows), "--experiment-id", store.experiment_id],
        env=env, capture_output=True, text=True, timeout=900, cwd=str(REPO),
    )
    client = redis.Redis.from_url(services.redis.url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    if done.returncode != 0:
        raise RuntimeError(f"producer.py failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"  enqueue blocking p50 {out['blocking']['p50_us']:.0f} us p99 {out['blocking']['p99_us']:.0f} us; "
        f"non-blocking p50 {out['non_blocking']['p50_us']:.1f} us p99 {out['non_blocking']['p99_us']:.1f} us; "
        f"delivered {out['delivered']}/{out['enqueued']}")
    return out


def redis_enqueue_without_fsync(services: Services, store: Store, *, calls: int) -> dict[str, Any]:
    """The blocking enqueue against a Redis without the append-only file (for comparison)."""
    server = RedisServer(appendonly=False).start()
    try:
        env_backup = os.environ.get("TRACEJUDGE_REDIS_URL")
        saved_url = services.redis.url
        os.environ["TRACEJUDGE_REDIS_URL"] = server.url

        class _R:  # a Services look-alike with another Redis
            url = server.url

        fake = Services(stack=services.stack, base=services.base, redis=_R(), llm=services.llm,  # type: ignore[arg-type]
                        config_path=services.config_path)
        out = producer_cost(fake, store, calls=calls, sleep_calls=10, workflows=1)
        return {"blocking": out["blocking"], "non_blocking": out["non_blocking"]}
    finally:
        if env_backup is not None:
            os.environ["TRACEJUDGE_REDIS_URL"] = env_backup
        else:
            os.environ["TRACEJUDGE_REDIS_URL"] = saved_url
        server.stop()


def wait(seconds: float) -> None:
    threading.Event().wait(seconds)


__all__ = [
    "CONFIG_YAML", "JUDGES_PER_TRACE", "LLM_LATENCY_S", "Services", "Store", "WorkerSet", "ceiling", "free_port",
    "http_store", "latency_single", "latency_under_load", "make_traces", "peer", "producer_cost", "say",
    "postgres_store", "sqlite_store", "start_services", "start_workers", "throughput", "use_prefix", "warm_up",
]
