"""Everything tracejudge keeps in Redis, behind one object per process.

:class:`RedisState` owns the process's Redis clients and every key we write
(all under ``Settings.key_prefix``, so several tracejudge installs can share
one Redis):

* ``trace_lock``: the per-trace lock that serialises two deliveries of one
  evaluation (``tracejudge:lock:<trace>``, short TTL, renewed while held);
* the result cache: results judged but not yet written to MLflow
  (``tracejudge:result:<key>``, 24 h), so a retry after an MLflow outage
  makes no LLM calls again;
* ``limiter``: the shared rate limit per LLM endpoint and model
  (``tracejudge:rate:...``, see :mod:`tracejudge.tasks.ratelimit`);
* ``counters`` (``tracejudge:count:<name>``), ``watermarks``
  (``tracejudge:mark:<name>``) and ``seen`` (``tracejudge:seen:<trace>``):
  the home of budgets, sampling, cache-hit and monitoring counts, and of
  how far a pick-up or backfill got.

Without Redis (``sync`` mode) :class:`NoRedisState` stands in: no lock, no
cache, no shared limit.

>>> import fakeredis  # doctest: +SKIP
>>> state = RedisState(fakeredis.FakeRedis(), prefix="t1:")  # doctest: +SKIP
>>> state.counters.incr("judge_calls", 3)  # doctest: +SKIP
3
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tracejudge.judges.model import JudgeResult

log = logging.getLogger(__name__)

NAMESPACE = "tracejudge:"
CACHE_TTL_SECONDS = 24 * 3600
#: The per-trace lock expires this long after its holder stops renewing it (e.g. was SIGKILLed).
LOCK_TTL_SECONDS = 20.0
#: The evaluation's own Redis calls (lock, result cache) wait out a Redis restart (~1 minute) instead
#: of failing the task: a failed task is acknowledged, so its evaluation would be lost.
REDIS_RETRIES = 30
REDIS_RETRY_CAP_SECONDS = 2.0


class EvaluationBusy(RuntimeError):
    """Another delivery still holds the trace's lock after our wait: retry later (nothing is lost)."""


@dataclass
class HeldLock:
    """The per-trace lock while we hold it: ``waited`` for another holder first; ``lost`` once renewal failed.

    ``owned`` asks Redis whether the lock is still ours (see :meth:`still_held`).
    """

    waited: bool = False
    lost: threading.Event = field(default_factory=threading.Event)
    owned: Callable[[], bool] | None = None

    def still_held(self) -> bool:
        """Whether the lock is ours right now: not seen lost by the renewer, and still holding our token in Redis.

        Asked right before a write-back: the renewer looks only every few seconds, and a process paused past the
        lock's TTL (a long GC, a stalled VM) learns it from Redis only. Unanswerable (Redis down) counts as lost.

        >>> HeldLock().still_held(), HeldLock(owned=lambda: False).still_held()
        (True, False)
        """
        if self.lost.is_set():
            return False
        if self.owned is None:
            return True
        try:
            return bool(self.owned())
        except Exception as exc:
            log.warning("could not check the evaluation lock: %s", exc)
            return False


class Counters:
    """Integer counters in Redis (``<prefix>tracejudge:count:<name>``), shared by every process.

    For budgets (judge calls, tokens per day), sampling, cache hits and monitoring roll-ups:
    name a counter by what it counts and, for a window, the window (``tokens:2026-11-28``).
    """

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def incr(self, name: str, amount: int = 1, *, ttl_seconds: float | None = None) -> int:
        """Add ``amount`` and return the new total; ``ttl_seconds`` makes a windowed counter expire."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.incrby(self.key(name), amount)
        if ttl_seconds:
            pipe.expire(self.key(name), max(1, int(ttl_seconds)), nx=True)
        return int(pipe.execute()[0])

    def get(self, name: str) -> int:
        value = self.redis.get(self.key(name))
        return int(value) if value is not None else 0

    def get_many(self, names: Iterable[str]) -> dict[str, int]:
        names = list(names)
        values = self.redis.mget([self.key(n) for n in names]) if names else []
        return {n: int(v) if v is not None else 0 for n, v in zip(names, values)}


class Watermarks:
    """How far a scan got (``<prefix>tracejudge:mark:<name>``): a timestamp or page token per name."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def get(self, name: str) -> str | None:
        value = self.redis.get(f"{self.prefix}{name}")
        return value.decode() if isinstance(value, bytes) else value

    def set(self, name: str, value: str, *, ttl_seconds: float | None = None) -> None:
        self.redis.set(f"{self.prefix}{name}", value, ex=max(1, int(ttl_seconds)) if ttl_seconds else None)

    def advance(self, name: str, value: int) -> None:
        """Move a numeric mark forward only (a slower scanner never moves it back)."""
        self.redis.eval(_ADVANCE, 1, f"{self.prefix}{name}", int(value))

    def forget(self, name: str) -> None:
        self.redis.delete(f"{self.prefix}{name}")


_ADVANCE = (
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '-1') "
    "if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end return 1"
)


class SeenTraces:
    """Traces already taken (``<prefix>tracejudge:seen:<trace>``), so a pick-up enqueues each once."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def add(self, trace_id: str, *, ttl_seconds: float) -> bool:
        """Mark ``trace_id`` seen; True only the first time (within ``ttl_seconds``)."""
        return bool(self.redis.set(f"{self.prefix}{trace_id}", "1", nx=True, ex=max(1, int(ttl_seconds))))

    def __contains__(self, trace_id: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}{trace_id}"))

    def forget(self, trace_id: str) -> None:
        self.redis.delete(f"{self.prefix}{trace_id}")


class RedisState:
    """The process's Redis: lock, result cache, rate limiters, counters. Build with :meth:`from_url`.

    ``redis`` is a sync client (``redis.Redis`` or ``fakeredis.FakeRedis``);
    ``async_factory`` builds the asyncio client the rate limiter uses, on first use.
    """

    def __init__(self, redis: Any, *, prefix: str = "", async_factory: Any = None) -> None:
        self.redis = redis
        self.prefix = prefix
        self._async_factory = async_factory
        self._async_redis: Any = None
        self._limiters: dict[tuple[str, float | None], Any] = {}
        self._lock = threading.Lock()
        self.counters = Counters(redis, self.key("count:"))
        self.watermarks = Watermarks(redis, self.key("mark:"))
        self.seen = SeenTraces(redis, self.key("seen:"))

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "") -> RedisState:
        """Clients for ``url`` that ride out a Redis restart (about a minute of retries)."""
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=10, health_check_interval=25, **_redis_retry()
        )

        def async_factory() -> Any:
            import redis.asyncio

            # a blocking pool: many judge calls at once wait for a connection instead of failing
            # (redis-py's default pool raises MaxConnectionsError past 100; measured at -c 32)
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=64, timeout=30, socket_connect_timeout=5, socket_timeout=10,
                **_redis_retry(asyncio=True),
            )
            return redis.asyncio.Redis(connection_pool=pool)

        return cls(client, prefix=prefix, async_factory=async_factory)

    def key(self, name: str) -> str:
        """The full Redis key of one of ours: ``<prefix>tracejudge:<name>``.

        >>> RedisState(None, prefix="demo:").key("lock:tr-1")
        'demo:tracejudge:lock:tr-1'
        """
        return f"{self.prefix}{NAMESPACE}{name}"

    # ------------------------------------------------------------------ production controls

    def budget(self, daily_usd: float, *, lease_seconds: float) -> Any:
        """The daily judge budget shared by all workers (``tracejudge:budget:<day>:*``)."""
        from tracejudge.controls.budget import RedisBudget

        return RedisBudget(self.async_redis(), daily_usd=daily_usd, prefix=self.prefix, lease_seconds=lease_seconds)

    def spend(self, *, day: str | None = None, limit_usd: float | None = None) -> Any:
        """One UTC day's judge spend, by model and by judge (``tracejudge budget``)."""
        from tracejudge.controls.budget import read_spend

        return read_spend(self.redis, prefix=self.prefix, day=day, limit_usd=limit_usd)

    def judge_cache(self, ttl_seconds: float) -> Any:
        """The judge result cache (``tracejudge:judgecache:<key>``), hits and misses counted."""
        from tracejudge.controls.result_cache import RedisResultCache

        return RedisResultCache(self.async_redis(), ttl_seconds=ttl_seconds, prefix=self.prefix)

    def add_counts(self, counts: dict[tuple[str | None, str], int]) -> None:
        """Add to today's control counters (``tracejudge:counts:<day>``, ``<workflow>|<event>``)."""
        from tracejudge.controls import counters

        counters.add(self.redis, self.prefix, counts)

    def read_counts(self, day: str | None = None) -> dict[str, dict[str, int]]:
        """A day's control counters as ``{workflow: {event: n}}`` (for monitoring)."""
        from tracejudge.controls import counters

        return counters.read(self.redis, self.prefix, day)

    # ------------------------------------------------------------------ per-trace lock

    @contextmanager
    def trace_lock(self, trace_id: str, *, timeout: float) -> Iterator[HeldLock]:
        """Hold the per-trace lock so two deliveries never judge one trace at once.

        Waits up to ``timeout`` for another holder (then :class:`EvaluationBusy`). The lock has a
        short TTL renewed by a small thread while we hold it, so a SIGKILLed holder's lock is gone
        within ``LOCK_TTL_SECONDS``; if a renewal finds it gone, ``held.lost`` is set.
        """
        from redis.exceptions import LockError

        # thread_local=False: the token must be visible to the renewer thread (with redis-py's default
        # thread-local token every renewal failed, so the lock silently expired after LOCK_TTL_SECONDS)
        lock = self.redis.lock(
            self.key(f"lock:{trace_id}"), timeout=LOCK_TTL_SECONDS, blocking_timeout=timeout, thread_local=False
        )
        held = HeldLock(waited=not lock.acquire(blocking=False), owned=lock.owned)
        if held.waited and not lock.acquire(blocking=True):
            raise EvaluationBusy(f"another delivery of {trace_id} held its evaluation lock for {timeout:g} s")
        stop = threading.Event()
        renewer = threading.Thread(
            target=_renew_lock, args=(lock, stop, held, trace_id), name="tracejudge-lock", daemon=True
        )
        renewer.start()
        try:
            yield held
        finally:
            stop.set()
            renewer.join(timeout=5)
            try:
                lock.release()
            except LockError:  # expired: another holder may have it now; nothing to undo
                log.warning("evaluation lock for %s had expired before release", trace_id)
            except Exception as exc:  # Redis unreachable: the lock expires by itself within LOCK_TTL_SECONDS
                log.warning("could not release the evaluation lock for %s: %s", trace_id, exc)

    # ------------------------------------------------------------------ result cache

    def cached_results(self, keys: Iterable[str]) -> dict[str, JudgeResult]:
        """Results judged by an earlier attempt that had not reached MLflow, by key."""
        keys = list(keys)
        if not keys:
            return {}
        values = self.redis.mget([self.key(f"result:{k}") for k in keys])
        return {k: JudgeResult.model_validate_json(v) for k, v in zip(keys, values) if v}

    def cache_results(self, results: Iterable[JudgeResult]) -> None:
        """Keep new results until they are on the trace (24 h at most)."""
        pipe = self.redis.pipeline(transaction=False)
        for r in results:
            pipe.set(self.key(f"result:{r.key}"), r.model_dump_json(), ex=CACHE_TTL_SECONDS)
        pipe.execute()

    def forget_results(self, keys: Iterable[str]) -> None:
        """Drop cached results (once they are written to MLflow)."""
        keys = [self.key(f"result:{k}") for k in keys]
        if keys:
            self.redis.delete(*keys)

    # ------------------------------------------------------------------ shared rate limit

    def async_redis(self) -> Any:
        """The asyncio client (for code on the event loop: rate limit, budget, result cache), built once."""
        with self._lock:
            if self._async_redis is None:
                if self._async_factory is None:
                    raise RuntimeError("RedisState has no asyncio client (pass async_factory)")
                self._async_redis = self._async_factory()
            return self._async_redis

    def limiter(self, endpoint: str, per_second: float | None) -> Any:
        """The shared rate limiter for ``endpoint`` at ``per_second`` (one per process and setting)."""
        from tracejudge.tasks.ratelimit import RedisRateLimiter

        client = self.async_redis()
        with self._lock:
            limiter = self._limiters.get((endpoint, per_second))
            if limiter is None:
                limiter = RedisRateLimiter(client, endpoint=endpoint, per_second=per_second, prefix=self.prefix)
                self._limiters[(endpoint, per_second)] = limiter
            return limiter


class NoRedisState:
    """``sync`` mode: no Redis, so no lock (one caller), no cache, no shared limit."""

    prefix = ""

    @contextmanager
    def trace_lock(self, trace_id: str, *, timeout: float) -> Iterator[HeldLock]:
        yield HeldLock()

    def cached_results(self, keys: Iterable[str]) -> dict[str, JudgeResult]:
        return {}

    def cache_results(self, results: Iterable[JudgeResult]) -> None:
        return None

    def forget_results(self, keys: Iterable[str]) -> None:
        return None

    def budget(self, daily_usd: float, *, lease_seconds: float) -> None:
        return None  # no shared counters: sync mode does not hold a budget

    def judge_cache(self, ttl_seconds: float) -> None:
        return None

    def add_counts(self, counts: dict[tuple[str | None, str], int]) -> None:
        return None

    def limiter(self, endpoint: str, per_second: float | None) -> None:
        return None

    def async_redis(self) -> None:
        return None


def _renew_lock(lock: Any, stop: threading.Event, held: HeldLock, trace_id: str) -> None:
    """Reset the lock's TTL every quarter TTL until ``stop`` is set (the holder is alive)."""
    from redis.exceptions import LockError

    while not stop.wait(LOCK_TTL_SECONDS / 4):
        try:
            lock.reacquire()
        except LockError:
            log.warning("evaluation lock for %s was lost (expired before renewal)", trace_id)
            held.lost.set()
            return
        except Exception as exc:  # Redis briefly unreachable: try again next round
            log.warning("could not renew the evaluation lock for %s: %s", trace_id, exc)


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
