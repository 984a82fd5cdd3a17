"""What one process keeps for all its evaluations: an event loop, an LLM client, pools, clients.

A worker process (or a producer in ``sync`` mode) makes one :class:`Runtime`
and reuses it: one event loop in a background thread runs every judge call
of every task (so one HTTP connection pool serves them all, from any Celery
pool: prefork, threads or solo), one thread pool issues MLflow writes
concurrently, and one Redis client holds the result cache and the
per-trace lock. After a fork the child builds its own.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tracejudge.config import Settings, TraceJudgeConfig, load_config
from tracejudge.judges.client import LLMClient
from tracejudge.judges.registry import JudgeRegistry, default_registry

log = logging.getLogger(__name__)

T = TypeVar("T")
JUDGE_MODULES_ENV = "TRACEJUDGE_JUDGE_MODULES"
KEY_PREFIX_ENV = "TRACEJUDGE_KEY_PREFIX"
WRITE_CONCURRENCY = int(os.environ.get("TRACEJUDGE_WRITE_CONCURRENCY", "8"))


class Runtime:
    """Per-process resources for evaluations. Build with :func:`get_runtime`."""

    def __init__(self, *, settings: Settings, config: TraceJudgeConfig, use_redis: bool = True) -> None:
        self.settings = settings
        self.config = config
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="tracejudge-loop", daemon=True)
        self._thread.start()
        execution = config.judges.execution
        self.llm = LLMClient(
            base_url=settings.llm_base_url,
            api_key=settings.require_llm_key(),
            timeout_seconds=execution.timeout_seconds,
            max_attempts=execution.attempts,
        )
        self.write_pool = ThreadPoolExecutor(max_workers=WRITE_CONCURRENCY, thread_name_prefix="tracejudge-write")
        self.registry: JudgeRegistry = default_registry()
        import_judge_modules()
        self.redis = _redis_client(settings) if use_redis else None
        self._async_redis: Any = None
        self._limiters: dict[float | None, Any] = {}
        self._mlflow_client: Any = None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run a coroutine on this process's loop and wait for it (from any thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def limiter(self, per_second: float | None) -> Any:
        """The shared (Redis) rate limiter for this endpoint, or None without Redis."""
        if self.redis is None:
            return None
        limiter = self._limiters.get(per_second)
        if limiter is None:
            from tracejudge.tasks.ratelimit import RedisRateLimiter

            limiter = self._limiters[per_second] = RedisRateLimiter(
                self.async_redis(), endpoint=self.llm.host, per_second=per_second, prefix=key_prefix()
            )
        return limiter

    def async_redis(self) -> Any:
        """The process's asyncio Redis client (for code on the loop: rate limit, budget, cache)."""
        if self._async_redis is None:
            import redis.asyncio

            # with retries like the sync client's: a Redis restart must not turn judge calls into errors;
            # a blocking pool: many judge calls at once wait for a connection instead of failing
            # (redis-py's default pool raises MaxConnectionsError past 100; measured at -c 32)
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.settings.redis_url,
                max_connections=64,
                timeout=30,
                socket_connect_timeout=5,
                socket_timeout=10,
                **_redis_retry(asyncio=True),
            )
            self._async_redis = redis.asyncio.Redis(connection_pool=pool)
        return self._async_redis

    def controls(self, config: TraceJudgeConfig, *, use_cache: bool = True) -> Any:
        """Cache, budget and cost around each judge call, for ``config`` (see judges/controls.py).

        ``use_cache=False`` (a forced re-judge) makes every call anew.
        """
        from tracejudge.judges.controls import CallControls
        from tracejudge.judges.pricing import PriceTable

        judges = config.judges
        budget = cache = None
        if self.redis is not None and judges.budget.daily_usd is not None:
            from tracejudge.tasks.budget import RedisBudget

            lease = judges.execution.timeout_seconds * judges.execution.attempts + 60
            budget = RedisBudget(self.async_redis(), daily_usd=judges.budget.daily_usd, prefix=key_prefix(), lease_seconds=lease)
        if self.redis is not None and judges.cache.enabled and use_cache:
            from tracejudge.tasks.result_cache import RedisResultCache

            cache = RedisResultCache(self.async_redis(), ttl_seconds=judges.cache.ttl_hours * 3600, prefix=key_prefix())
        return CallControls(
            prices=PriceTable(judges.pricing), budget=budget, cache=cache, reserve_output_tokens=judges.budget.reserve_output_tokens
        )

    @property
    def mlflow(self) -> Any:
        """One ``MlflowClient`` for the process (MLflow is imported on first use)."""
        if self._mlflow_client is None:
            import mlflow
            from mlflow import MlflowClient

            if self.settings.mlflow_tracking_uri:
                mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
            self._mlflow_client = MlflowClient()
        return self._mlflow_client

    def close(self) -> None:
        try:
            self.run(self.llm.aclose(), timeout=5)
        except Exception:  # closing is best effort
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.write_pool.shutdown(wait=False)


_runtimes: dict[bool, Runtime] = {}
_lock = threading.Lock()


def get_runtime(*, config: TraceJudgeConfig | None = None, settings: Settings | None = None, use_redis: bool = True) -> Runtime:
    """The process's runtime, built on first use (and again in a forked child).

    Workers use Redis (result cache, per-trace lock); ``sync`` mode does not,
    so each kind is kept apart.
    """
    with _lock:
        runtime = _runtimes.get(use_redis)
        if runtime is None or runtime.pid != os.getpid():
            settings = settings or Settings.from_env()
            config = config or load_config(settings.config_path)
            runtime = _runtimes[use_redis] = Runtime(settings=settings, config=config, use_redis=use_redis)
        return runtime


def reset_runtime() -> None:
    """Drop the process's runtimes (tests, and after settings change)."""
    with _lock:
        for runtime in _runtimes.values():
            if runtime.pid == os.getpid():
                runtime.close()
        _runtimes.clear()


def key_prefix() -> str:
    """A prefix for every Redis key tracejudge and Celery write (``TRACEJUDGE_KEY_PREFIX``), for a shared Redis."""
    return os.environ.get(KEY_PREFIX_ENV, "")


def import_judge_modules() -> list[str]:
    """Import the modules named in ``TRACEJUDGE_JUDGE_MODULES`` (comma-separated) so their judges register."""
    names = [n.strip() for n in os.environ.get(JUDGE_MODULES_ENV, "").split(",") if n.strip()]
    for name in names:
        importlib.import_module(name)
    return names


#: The evaluation's own Redis calls (lock, result cache) wait out a Redis restart (~1 minute) instead
#: of failing the task: a failed task is acknowledged, so its evaluation would be lost.
REDIS_RETRIES = 30
REDIS_RETRY_CAP_SECONDS = 2.0


def _redis_retry(*, asyncio: bool = False) -> dict[str, Any]:
    """Client options: retry connection errors with backoff for about a minute."""
    import redis
    from redis.backoff import ExponentialBackoff

    if asyncio:
        from redis.asyncio.retry import Retry
    else:
        from redis.retry import Retry  # type: ignore[assignment]
    return {
        "retry": Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_SECONDS, base=0.1), REDIS_RETRIES),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    }


def _redis_client(settings: Settings) -> Any:
    import redis

    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=25, **_redis_retry()
    )
