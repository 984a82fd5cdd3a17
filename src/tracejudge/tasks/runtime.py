"""What one process keeps for all its evaluations, built once.

A worker process (or a producer in ``sync`` mode) makes one :class:`Runtime`
and reuses it. It is only the sum of three parts, one per concern, each
built once (under a lock, in :func:`get_runtime`):

* ``loop``: a :class:`~tracejudge.tasks.loop.LoopRunner`, the event loop that
  runs every judge call of the process with one LLM client (``llm``);
* ``state``: a :class:`~tracejudge.tasks.state.RedisState` (lock, result
  cache, rate limiter, counters), or :class:`~tracejudge.tasks.state.NoRedisState`
  in ``sync`` mode;
* ``store``: the :class:`~tracejudge.mlflow_io.store.TraceStore`, the one
  MLflow client of the process.

After a fork the child builds its own.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from tracejudge.config import Settings, TraceJudgeConfig, load_config
from tracejudge.judges.client import LLMClient
from tracejudge.judges.registry import JudgeRegistry, default_registry
from tracejudge.mlflow_io.store import TraceStore
from tracejudge.tasks.loop import LoopRunner
from tracejudge.tasks.state import NoRedisState, RedisState

log = logging.getLogger(__name__)

T = TypeVar("T")


class Runtime:
    """Per-process resources for evaluations. Build with :func:`get_runtime`."""

    def __init__(self, *, settings: Settings, config: TraceJudgeConfig, use_redis: bool = True) -> None:
        self.settings = settings
        self.config = config
        self.pid = os.getpid()
        import_judge_modules(settings.judge_modules)
        self.registry: JudgeRegistry = default_registry()
        execution = config.judges.execution
        self.llm = LLMClient(
            base_url=settings.llm_base_url,
            api_key=settings.require_llm_key(),
            timeout_seconds=execution.timeout_seconds,
            max_attempts=execution.attempts,
        )
        self.loop = LoopRunner()
        self.state: RedisState | NoRedisState = (
            RedisState.from_url(settings.redis_url, prefix=settings.key_prefix) if use_redis else NoRedisState()
        )
        self.store = TraceStore(
            settings.mlflow_tracking_uri,
            write_concurrency=settings.write_concurrency,
            loop=self.loop.loop,
            rest_writer=settings.rest_writer,
        )

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run a coroutine on this process's loop and wait for it (from any thread)."""
        return self.loop.run(coro, timeout=timeout)

    def limiter(self, per_second: float | None) -> Any:
        """The shared (Redis) rate limiter for the LLM endpoint, or None without Redis."""
        return self.state.limiter(self.llm.host, per_second)

    @property
    def redis(self) -> Any:
        """The process's sync Redis client (``state.redis``), or None without Redis (``sync`` mode)."""
        return getattr(self.state, "redis", None)

    def async_redis(self) -> Any:
        """The process's asyncio Redis client (for code on the loop: rate limit, budget, cache)."""
        return self.state.async_redis()

    @property
    def mlflow(self) -> Any:
        """The process's ``MlflowClient`` (``store.client``): for code that reads through ``mlflow_io`` helpers."""
        return self.store.client

    def controls(self, config: TraceJudgeConfig, *, use_cache: bool = True) -> Any:
        """Cache, budget and cost around each judge call, for ``config`` (see judges/controls.py).

        ``use_cache=False`` (a forced re-judge) makes every call anew.
        """
        from tracejudge.judges.controls import CallControls
        from tracejudge.judges.pricing import PriceTable

        judges = config.judges
        execution = judges.execution
        budget = cache = None
        if judges.budget.daily_usd is not None:
            # the holder extends the lease every third of it while the call runs (rate-limiter waits, Retry-After
            # and backoff have no fixed bound), so it need only outlast one attempt and the longest wait before the next
            from tracejudge.judges.client import RETRY_AFTER_MAX_SECONDS

            budget = self.state.budget(judges.budget.daily_usd, lease_seconds=execution.timeout_seconds + RETRY_AFTER_MAX_SECONDS + 30)
        if judges.cache.enabled and use_cache:
            cache = self.state.judge_cache(judges.cache.ttl_hours * 3600)
        return CallControls(
            prices=PriceTable(judges.pricing), budget=budget, cache=cache, reserve_output_tokens=judges.budget.reserve_output_tokens
        )

    def close(self) -> None:
        try:
            self.run(self.llm.aclose(), timeout=5)
        except Exception:  # closing is best effort
            pass
        self.loop.close()
        self.store.close()


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
    """The Redis key prefix of this process (``Settings.key_prefix``, from ``TRACEJUDGE_KEY_PREFIX``)."""
    return Settings.from_env().key_prefix


class JudgeModuleError(ImportError):
    """A module of ``TRACEJUDGE_JUDGE_MODULES`` could not be imported; the message names it and why."""


def import_judge_modules(names: Iterable[str] | None = None) -> list[str]:
    """Import modules (default: ``Settings.judge_modules``, from ``TRACEJUDGE_JUDGE_MODULES``) so their judges register.

    A module that cannot be imported (missing, or raising while it loads) is a :class:`JudgeModuleError`
    naming the module, the error and the variable:

    >>> import_judge_modules(["tracejudge_no_such_mod"])
    Traceback (most recent call last):
    ...
    tracejudge.tasks.runtime.JudgeModuleError: cannot import judge module 'tracejudge_no_such_mod' (TRACEJUDGE_JUDGE_MODULES): ModuleNotFoundError: No module named 'tracejudge_no_such_mod' (is its directory on PYTHONPATH?)
    """
    names = list(Settings.from_env().judge_modules if names is None else names)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a module that fails while loading is as unusable as a missing one
            hint = " (is its directory on PYTHONPATH?)" if _is_missing(exc, name) else ""
            raise JudgeModuleError(
                f"cannot import judge module {name!r} (TRACEJUDGE_JUDGE_MODULES): {type(exc).__name__}: {exc}{hint}"
            ) from exc
    return names


def _is_missing(exc: Exception, name: str) -> bool:
    """Whether ``exc`` says the module ``name`` itself (or its package) is not found, not something it imports."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    return bool(missing) and (name == missing or name.startswith(f"{missing}."))
