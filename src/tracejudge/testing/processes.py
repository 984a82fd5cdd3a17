"""Real processes for reliability tests, the chaos run and the benchmarks: on loopback only.

* :class:`RedisServer`: a ``redis-server`` on a free port with its own
  directory (append-only file on, as in docker-compose), which can be
  stopped and started again with its data;
* :class:`MlflowServer`: an ``mlflow server`` (gunicorn workers) on a sqlite
  store, which can be stopped and started again;
* :class:`WorkerProcess`: a ``tracejudge worker`` subprocess that can be
  killed (SIGKILL) or stopped gracefully (SIGTERM);
* :class:`RabbitVhost`: a private virtual host on the machine's RabbitMQ
  (``TRACEJUDGE_TEST_AMQP_URL``, default ``amqp://guest:guest@127.0.0.1:5672``),
  made and dropped with ``rabbitmqctl``, so test runs sharing one RabbitMQ
  never take each other's tasks.

Each stops what it started (context managers), so a test or script that
fails still leaves nothing running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

READY_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} was not ready within {timeout:g} s")


def _stop(proc: subprocess.Popen[bytes] | None, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class RedisServer:
    """A private ``redis-server`` (append-only file on) that survives restarts with its data."""

    def __init__(self, *, port: int | None = None, directory: str | os.PathLike[str] | None = None, appendonly: bool = True) -> None:
        self.port = port or free_port()
        self.dir = Path(directory or tempfile.mkdtemp(prefix="tracejudge-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        log = self.dir / "redis.log"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        _wait(lambda: client.ping(), timeout=20, what=f"redis-server on {self.port}", proc=self.proc, log=log)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def restart(self, *, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class MlflowServer:
    """``mlflow server`` on a sqlite store (or ``backend_store_uri``, e.g. PostgreSQL), with gunicorn workers;
    can be stopped and started again."""

    def __init__(
        self,
        *,
        directory: str | os.PathLike[str] | None = None,
        port: int | None = None,
        workers: int = 4,
        backend_store_uri: str | None = None,
    ) -> None:
        self.dir = Path(directory or tempfile.mkdtemp(prefix="tracejudge-mlflow-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.workers = workers
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.dir / 'mlflow.db'}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        log = self.dir / "mlflow-server.log"
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
        cmd = [
            mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.dir / "artifacts"),
            "--gunicorn-opts", f"--workers {self.workers} --timeout 120",
        ]
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait(self._healthy, timeout=READY_TIMEOUT, what=f"mlflow server on {self.port}", proc=self.proc, log=log)
        except BaseException:  # not ready: stop it, or it outlives the test (``with`` never reaches __exit__)
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
            return reply.status == 200

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class WorkerProcess:
    """A ``tracejudge worker`` subprocess (its own process group, so SIGKILL takes the pool too)."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        name: str | None = None,
        concurrency: int = 8,
        pool: str = "threads",
        queues: str = "tracejudge.gate,tracejudge.online",
        log: str | os.PathLike[str] | None = None,
        extra: list[str] | None = None,
        processes: int = 1,
    ) -> None:
        self.env = dict(os.environ, **env)
        #: worker processes (``--processes``): 1, one Celery worker, unless a test is about the supervisor
        self.processes = processes
        self.name = name or f"w{free_port()}"
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues
        self.log = Path(log or tempfile.mkstemp(prefix=f"tracejudge-{self.name}-", suffix=".log")[1])
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, *, wait: bool = True) -> "WorkerProcess":
        cmd = [
            sys.executable, "-m", "tracejudge", "worker", "--processes", str(self.processes),
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "--queues", self.queues, "--hostname", f"{self.name}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            _wait(self._ready, timeout=READY_TIMEOUT, what=f"worker {self.name}", proc=self.proc, log=self.log)
        return self

    def _ready(self) -> bool:
        return "ready." in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool) at once, as a crash or OOM would."""
        _stop(self.proc, sig=signal.SIGKILL)

    def terminate(self, *, timeout: float = 60.0) -> int | None:
        """SIGTERM: Celery's warm shutdown (running tasks finish, the rest stay queued)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(self.proc, sig=signal.SIGKILL)
            return None

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "WorkerProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


RABBIT_URL_ENV = "TRACEJUDGE_TEST_AMQP_URL"
DEFAULT_RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672"


def rabbit_base_url() -> str:
    """The RabbitMQ the tests use, without a virtual host."""
    return os.environ.get(RABBIT_URL_ENV, DEFAULT_RABBIT_URL).rstrip("/")


def rabbit_answers(url: str | None = None) -> bool:
    """Whether a RabbitMQ answers (an AMQP login succeeds) at ``url``."""
    from kombu import Connection

    try:
        with Connection(url or rabbit_base_url() + "//", connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


class RabbitVhost:
    """A private RabbitMQ virtual host for one test or scenario (``rabbitmqctl``; dropped on exit).

    >>> with RabbitVhost() as vhost:  # doctest: +SKIP
    ...     os.environ["TRACEJUDGE_BROKER_URL"] = vhost.url
    """

    def __init__(self, *, user: str = "guest") -> None:
        self.name = f"tj-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.user = user

    @property
    def url(self) -> str:
        return f"{rabbit_base_url()}/{self.name}"

    def _ctl(self, *args: str) -> None:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        done = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "RabbitVhost":
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")
        return self

    def stop(self) -> None:
        try:
            self._ctl("delete_vhost", self.name)
        except Exception:  # best effort: an empty vhost left behind is harmless
            pass

    def unacked(self) -> int:
        """Messages delivered to consumers and not acknowledged yet, over all queues of the vhost."""
        return sum(row[1] for row in self._queues())

    def queued(self) -> int:
        """Messages ready in the vhost's queues."""
        return sum(row[0] for row in self._queues())

    def _queues(self) -> list[tuple[int, int]]:
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        done = subprocess.run(
            [ctl, "list_queues", "-q", "-p", self.name, "name", "messages_ready", "messages_unacknowledged"],
            capture_output=True, text=True, timeout=60,
        )
        rows = []
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                rows.append((int(parts[1]), int(parts[2])))
        return rows

    def __enter__(self) -> "RabbitVhost":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
