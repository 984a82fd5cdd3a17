"""Judges that blocked a worker's event loop are not run on it again for a while.

When a worker's watchdog finds its event loop blocked (``ops/watchdog.py``), the process exits so
it is restarted and its messages are delivered again. Without more, a code judge that blocks on every
call would take down each worker that gets the trace again, for ever. So before the process exits, it
puts every judge (name and version) it finds running in the blocked loop's stack
(:func:`judges_on_stack`: the ``job`` of ``judges.runner.run_one``'s frames) in quarantine:
a Redis key ``tracejudge:quarantine:<judge>:<version>`` for :data:`QUARANTINE_SECONDS`. Until it
expires, an evaluation answers that judge with a failed result (``LOOP_BLOCKED``, saying why and
until when) instead of running it; the other judges of the trace run as usual. A new version of the
judge (its code changed) is not in quarantine. The key is coordination only: lost, the judge runs
(and may block) once more.

>>> import fakeredis
>>> from tracejudge.tasks.state import RedisState
>>> state = RedisState(fakeredis.FakeRedis())
>>> quarantine(state, [("slow", "v1")], where="my_judges.py:12")
>>> list(quarantined(state, [("slow", "v1"), ("slow", "v2")]))
[('slow', 'v1')]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from tracejudge.judges import errors
from tracejudge.judges.errors import JudgeError
from tracejudge.judges.model import JudgeResult

#: How long a judge that blocked the loop is not run (an operator fixes the judge meanwhile: a new version runs at once).
QUARANTINE_SECONDS = 3600


def _key(state: Any, name: str, version: str) -> str:
    return state.key(f"quarantine:{name}:{version}")


def judges_on_stack(thread_ident: int | None) -> list[tuple[str, str]]:
    """(name, version) of each judge job running in that thread's stack (the loop's, when it is blocked)."""
    from tracejudge.judges import runner

    frame = sys._current_frames().get(thread_ident) if thread_ident is not None else None
    found: list[tuple[str, str]] = []
    while frame is not None:
        if frame.f_code is runner.run_one.__code__:
            job = frame.f_locals.get("job")
            judge = getattr(job, "judge", None)
            if judge is not None and (judge.name, judge.version) not in found:
                found.append((judge.name, judge.version))
        frame = frame.f_back
    return found


def quarantine(state: Any, judges: Iterable[tuple[str, str]], *, where: str = "", seconds: int = QUARANTINE_SECONDS) -> None:
    """Put ``judges`` in quarantine for ``seconds`` (one pipelined round trip)."""
    judges = list(judges)
    if not judges:
        return
    until = time.time() + seconds
    pipe = state.redis.pipeline(transaction=False)
    for name, version in judges:
        pipe.set(_key(state, name, version), json.dumps({"until": until, "where": where}), ex=seconds)
    pipe.execute()


def quarantined(state: Any, judges: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Which of ``judges`` are in quarantine now, with until when and where they blocked."""
    judges = list(dict.fromkeys(judges))
    redis = getattr(state, "redis", None)
    if not judges or redis is None:
        return {}
    values = redis.mget([_key(state, name, version) for name, version in judges])
    found = {}
    for judge, value in zip(judges, values):
        if value is not None:
            try:
                found[judge] = json.loads(value)
            except ValueError:
                found[judge] = {}
    return found


def blocked_result(job: Any, info: dict[str, Any]) -> JudgeResult:
    """The failed result a quarantined judge gets instead of running."""
    until = info.get("until")
    when = time.strftime("%H:%M UTC", time.gmtime(until)) if until else "later"
    where = f" (at {info['where']})" if info.get("where") else ""
    error = JudgeError(
        errors.LOOP_BLOCKED,
        f"judge {job.judge.name!r} blocked a worker's event loop{where}; it is not run until {when} or until its code "
        "changes (an async judge must not block: make it a plain def, or await)",
    )
    return JudgeResult.failed(
        error, name=job.judge.name, target=job.input.target, span_id=job.input.span_id, threshold=job.threshold,
        greater_is_better=job.judge.greater_is_better, model=job.model, judge_version=job.judge.version, key=job.key,
    )
