"""Fast checks of the operating pieces: the loop's wait deadline, the watchdog, the probes' server, broker readings."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

import pytest

from tracejudge.ops.health import ProcessHealth
from tracejudge.ops.server import MetricsServer, Readings, queue_metrics
from tracejudge.ops.broker import QueueReading
from tracejudge.ops.watchdog import LoopWatchdog
from tracejudge.tasks.loop import LoopRunner, LoopStalled
from tracejudge.tasks.retry import EVALUATION_STALLED, RetryPolicy


def test_a_wait_on_a_blocked_loop_ends_at_its_deadline_with_a_retryable_error():
    runner = LoopRunner()
    release = threading.Event()
    try:
        runner.loop.call_soon_threadsafe(release.wait, 30)  # a judge blocking the loop
        done: list[BaseException] = []

        def wait() -> None:
            async def judges() -> int:
                return 1

            try:
                runner.run(judges(), timeout=0.3)
            except BaseException as exc:  # noqa: BLE001 - recorded for the assert
                done.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(10)  # without the deadline the waiting thread stays until the loop is free
        assert not waiter.is_alive(), "the wait on the blocked loop did not end"
        assert isinstance(done[0], LoopStalled)
        retry = RetryPolicy().decide(done[0], attempt=0)
        assert retry is not None and retry.code == EVALUATION_STALLED
    finally:
        release.set()
        runner.close()


def test_a_coroutines_own_timeout_is_not_taken_for_a_stalled_loop():
    runner = LoopRunner()
    try:
        async def times_out() -> None:
            raise TimeoutError("the coroutine's own")

        with pytest.raises(TimeoutError) as info:
            runner.run(times_out(), timeout=5)
        assert not isinstance(info.value, LoopStalled)
    finally:
        runner.close()


def test_the_watchdog_measures_a_free_loop_as_live_and_a_blocked_one_once():
    runner = LoopRunner()
    calls: list[float] = []
    dog = LoopWatchdog(runner.loop, block_seconds=0.5, interval=0.05, loop_thread=runner._thread,
                       on_blocked=lambda lag, stack: calls.append(lag)).start()
    try:
        deadline = time.monotonic() + 5
        while dog.lag == 0.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not dog.blocked and dog.alive
        runner.loop.call_soon_threadsafe(time.sleep, 1.5)
        assert dog.wait_blocked(10)
        time.sleep(1.5)
        assert len(calls) == 1 and calls[0] >= 0.5  # once, however long it stays blocked
    finally:
        dog.stop()
        runner.close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_probes_answer_503_with_the_failing_check_and_metrics_survive_a_failing_reading():
    health = ProcessHealth(block_seconds=2.0, consumer_ready=True)

    def broken() -> list:
        raise ConnectionError("redis down")

    server = MetricsServer(
        host="127.0.0.1", port=0, live=[health.live], ready=[health.ready, lambda: (False, "redis does not answer")],
        source=None,
    ).start()
    server.source.sources += (Readings("broken", broken), Readings("queues", lambda: queue_metrics({"q": QueueReading(3, 12.5)})))
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(f"{base}/healthz")[0] == 200
        status, body = get(f"{base}/readyz")
        assert status == 503 and "FAIL redis does not answer" in body
        status, body = get(f"{base}/metrics")
        assert status == 200 and 'tracejudge_queue_depth{queue="q"} 3.0' in body
        assert 'tracejudge_oldest_message_age_seconds{queue="q"} 12.5' in body
        health.update(lag=2.5, blocked=True)
        status, body = get(f"{base}/healthz")
        assert status == 503 and "blocked" in body
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.close()


def test_closing_the_loop_ends_the_waits_on_it_with_loop_stalled():
    """A worker stopping (or a runtime replaced) while an evaluation waits on the loop: the waiting thread gets
    LoopStalled at once (retried later), not a wait to its deadline that holds the thread pool at exit."""
    import asyncio
    import threading

    from tracejudge.tasks.loop import CLOSED, LoopRunner, LoopStalled

    runner = LoopRunner()
    started = threading.Event()
    outcome: list[BaseException] = []

    async def judge_forever():
        started.set()
        await asyncio.Event().wait()

    def wait():
        try:
            runner.run(judge_forever(), timeout=3600)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    assert started.wait(30)
    runner.close()
    waiter.join(60)
    assert not waiter.is_alive(), "the wait outlived close()"
    assert len(outcome) == 1 and isinstance(outcome[0], LoopStalled) and str(outcome[0]) == CLOSED

    async def two():
        return 2

    try:
        runner.run(two())
    except LoopStalled as exc:  # a wait asked of a closed loop is refused the same way
        assert str(exc) == CLOSED
    else:
        raise AssertionError("a closed loop ran a coroutine")
