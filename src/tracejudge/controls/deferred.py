"""Evaluations put off until the budget renews (``budget.on_exceed: defer``).

A deferred request is kept in a Redis sorted set (``tracejudge:deferred``)
scored by when it is due, and the beat task :func:`release_due` (every
minute) sends the due ones again with their own evaluation id, so a caller
waiting on the handle gets the verdict when it comes. Judge results already
made are on the trace and are reused; only the calls the budget refused are
made again.

Nothing is lost between taking an entry and sending it. A release moves the
due entries, in one script, into a processing set
(``tracejudge:deferred:processing``, scored by when they were taken), sends
each, and only then removes it. A releaser that dies in between (SIGKILL,
OOM, a lost machine) leaves the entry in the processing set; the next
release after :data:`RECLAIM_AFTER_SECONDS` puts it back and sends it. So an
entry is sent at least once: a releaser that died after the send and before
the removal makes it be sent twice, which is harmless (an evaluation is
idempotent: the second finds the first's results on the trace). One whose
send fails is put back, due a minute later. The script decides who takes
each entry, so two beat processes never send one twice.

Releases are spread, not all at midnight: a request deferred "to the next
UTC day" is due at a point within the day's first :data:`SPREAD_SECONDS`
(an hour), fixed by a hash of its evaluation id (the same request always
gets the same point). Without it every deferred evaluation of the day woke
at 00:00 at once, hitting the LLM's rate limit together and spending the new
day's budget in the first minute; an hour is short enough that deferred
work is still judged early in its day, and at most :data:`RELEASE_LIMIT`
entries are sent per release on top of that.

Beside the two sets, a hash (``tracejudge:deferred:traces``, :data:`TRACES_KEY`) counts per trace id the
entries of that trace in either set, kept by the same scripts that add and remove them, so the report asks
"which of these traces wait for a retry" by trace id (``monitor.collect.scheduled_traces``, ``HMGET``) instead
of reading every deferred request. It is coordination: :func:`rebuild_trace_index` rebuilds it from the sets, and the first
release on a Redis that has never had it built (an upgrade; a Redis lost and started empty) does so once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from tracejudge.payload import EvaluationRequest

log = logging.getLogger(__name__)

DEFERRED_KEY = "tracejudge:deferred"
#: Entries taken by a releaser and not yet confirmed sent (score: when taken).
PROCESSING_KEY = "tracejudge:deferred:processing"
#: A taken entry not confirmed sent within this long is put back and sent again (its releaser died). A live
#: release sends in milliseconds per entry (the producer fails fast when the broker is down), so 5 minutes is
#: far beyond any live release, and short against the day a deferred evaluation has already waited.
RECLAIM_AFTER_SECONDS = 300.0
#: Deferred-to-the-next-day requests are due at a point within the first hour of that UTC day.
SPREAD_SECONDS = 3600.0
#: At most this many entries per release (the beat task runs every minute).
RELEASE_LIMIT = 1000
#: A failed send is tried again this much later.
RETRY_SECONDS = 60.0

#: Per trace id, how many entries of that trace are in the deferred or the processing set.
TRACES_KEY = "tracejudge:deferred:traces"
#: Set (no expiry) when :data:`TRACES_KEY` was rebuilt from the sets: from then on the scripts keep it.
TRACES_BUILT_KEY = "tracejudge:deferred:traces:built"

#: KEYS: deferred, processing, traces. ARGV: when, member, trace id. Adds (or re-scores) an entry; a new entry
#: (in neither set) counts for its trace.
_ADD = """
local new = not redis.call('ZSCORE', KEYS[1], ARGV[2]) and not redis.call('ZSCORE', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
if new then redis.call('HINCRBY', KEYS[3], ARGV[3], 1) end
"""

#: KEYS: deferred, processing, traces. ARGV: member, trace id ('' when unknown). Removes a sent (or dropped)
#: entry from the processing set; gone from both sets, it no longer counts for its trace.
_DONE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and ARGV[2] ~= '' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('HINCRBY', KEYS[3], ARGV[2], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[2]) end
end
"""

#: KEYS: deferred, processing, traces, built. Rebuilds the per-trace counts from both sets (members that are not a
#: request with a trace id are left out) and marks them built.
_REBUILD = """
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[4], '1')
local seen = {}
for i = 1, 2 do
  for _, member in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
    if not seen[member] then
      seen[member] = true
      local ok, data = pcall(cjson.decode, member)
      if ok and type(data) == 'table' and type(data['trace_id']) == 'string' then
        redis.call('HINCRBY', KEYS[3], data['trace_id'], 1)
      end
    end
  end
end
return redis.call('HLEN', KEYS[3])
"""

#: KEYS: deferred, processing. ARGV: now, limit, reclaim_before. Puts stale taken entries back (due now), then
#: moves up to ``limit`` due entries into the processing set and returns them.
_TAKE_DUE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
for _, member in ipairs(stale) do
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZADD', KEYS[1], ARGV[1], member)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZADD', KEYS[2], ARGV[1], member)
end
return due
"""


def next_utc_day(now: float | None = None) -> float:
    """The epoch second at which the next UTC day (and a new budget) starts.

    >>> next_utc_day(0.0)
    86400.0
    """
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    start = datetime(moment.year, moment.month, moment.day, tzinfo=timezone.utc) + timedelta(days=1)
    return start.timestamp()


def spread_offset(evaluation_id: str, *, window: float = SPREAD_SECONDS) -> float:
    """Where in the release window this request falls: a fixed point in ``[0, window)`` from its id.

    >>> spread_offset("e-1") == spread_offset("e-1"), 0 <= spread_offset("e-2") < SPREAD_SECONDS
    (True, True)
    """
    fraction = int.from_bytes(hashlib.sha256(evaluation_id.encode()).digest()[:8], "big") / 2**64
    return fraction * window


def defer(
    redis: Any, prefix: str, request: EvaluationRequest, *, until: float | None = None, now: float | None = None
) -> float:
    """Keep ``request`` until ``until`` (default: a point in the first hour of the next UTC day); returns that time.

    >>> import fakeredis
    >>> from tracejudge.payload import EvaluationRequest
    >>> when = defer(fakeredis.FakeRedis(), "t:", EvaluationRequest(trace_id="tr-1", evaluation_id="e-1"), now=0.0)
    >>> 86400.0 <= when < 86400.0 + SPREAD_SECONDS
    True
    """
    when = next_utc_day(now) + spread_offset(request.evaluation_id) if until is None else until
    redis.eval(_ADD, 3, *_keys(prefix), repr(when), request.model_dump_json(exclude_none=True), request.trace_id)
    return when


def _keys(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}{DEFERRED_KEY}", f"{prefix}{PROCESSING_KEY}", f"{prefix}{TRACES_KEY}"


def rebuild_trace_index(redis: Any, prefix: str) -> int:
    """Rebuild the per-trace counts (:data:`TRACES_KEY`) from the deferred and processing sets; returns how many
    traces have entries. One script: it reads both sets whole, so it is for a missing index, not for every call."""
    return int(redis.eval(_REBUILD, 4, *_keys(prefix), f"{prefix}{TRACES_BUILT_KEY}"))


def release_due(
    redis: Any,
    prefix: str,
    send: Callable[[EvaluationRequest], Any],
    *,
    now: float | None = None,
    limit: int = RELEASE_LIMIT,
) -> int:
    """Send the deferred requests that are due; returns how many were sent.

    Takes them into the processing set (with any a dead releaser left there for
    :data:`RECLAIM_AFTER_SECONDS`), sends each, then removes it (see the module docstring).
    """
    moment = time.time() if now is None else now
    key, processing, traces = _keys(prefix)
    if not redis.exists(f"{prefix}{TRACES_BUILT_KEY}"):  # entries may have been deferred before the index was kept
        rebuild_trace_index(redis, prefix)
    taken = redis.eval(_TAKE_DUE, 2, key, processing, repr(moment), int(limit), repr(moment - RECLAIM_AFTER_SECONDS))
    sent = 0
    for i, raw in enumerate(taken):
        try:
            request = EvaluationRequest.model_validate(json.loads(raw))
        except ValueError as exc:  # never sendable (written by hand, or by an incompatible version): say so, drop it
            log.error("dropping a deferred evaluation that is not a valid request (%s): %.300r", exc, raw)
            redis.eval(_DONE, 3, key, processing, traces, raw, _trace_id(raw))
            continue
        try:
            send(request)
        except Exception:
            # this one is due again a minute later, and those not tried yet go back as they were (due now)
            pipe = redis.pipeline(transaction=True)
            pipe.zrem(processing, *taken[i:])
            pipe.zadd(key, {raw: moment + RETRY_SECONDS})
            if taken[i + 1:]:
                pipe.zadd(key, {member: moment for member in taken[i + 1:]})
            pipe.execute()
            raise
        redis.eval(_DONE, 3, key, processing, traces, raw, request.trace_id)
        sent += 1
    return sent


def _trace_id(raw: Any) -> str:
    """The trace id of an entry that is not a valid request, if it names one ('' otherwise), as the rebuild reads it."""
    try:
        trace_id = json.loads(raw)["trace_id"]
    except (ValueError, KeyError, TypeError):
        return ""
    return trace_id if isinstance(trace_id, str) else ""


def pending(redis: Any, prefix: str) -> int:
    """Deferred evaluations not yet sent: waiting, or taken by a releaser that has not confirmed the send."""
    return int(redis.zcard(f"{prefix}{DEFERRED_KEY}")) + int(redis.zcard(f"{prefix}{PROCESSING_KEY}"))


def release(runtime: Any, send: Callable[[EvaluationRequest], Any]) -> int:
    """The beat task's body: send the due deferred evaluations (none without Redis)."""
    state = runtime.state
    if getattr(state, "redis", None) is None:
        return 0
    return release_due(state.redis, state.prefix, send)
