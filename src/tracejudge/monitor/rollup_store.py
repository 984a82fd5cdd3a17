"""The rollups in Redis: each trace's contribution replaced atomically, the buckets read back, what Redis covers.

Keys, under ``<prefix>tracejudge:monitor:<experiment>:``:

* ``<workflow>\\x1f<environment>:<bucket>:c`` (counters and thresholds), ``:s`` (every trace's overall score, a sorted
  set: the lowest and highest), ``:f`` (up to 20 failing examples, newest first);
* ``t:<trace>``: the trace's last contribution (JSON), a cache of what MLflow's record gives for it;
* ``series`` (every workflow/environment seen), ``since`` (when workers started recording: coverage, see
  :mod:`tracejudge.monitor.coverage`), ``pending`` and ``pending_at`` (traces whose write-back began and whose
  rollup is not recorded yet).

Every key of a bucket, and the contributions in it, expire 35 days after the bucket's start (``EXPIREAT``, not
refreshed), so Redis holds exactly the last 35 days by trace time. ``series`` and ``since`` are refreshed on each
write to 35 days from then (``series`` never to less than the bucket written: it outlives every bucket it names),
so an experiment no worker records for goes from Redis entirely.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tracejudge.monitor.rollup import (
    BUCKET_MS,
    FLOAT_FIELDS,
    KEEP_EXTREMES,
    KEEP_FAILURES,
    SEP,
    Contribution,
    Rollup,
    TraceRecord,
    bucket_of,
    contribution,
)

TTL_SECONDS = 35 * 24 * 3600
ROOT = "tracejudge:monitor:"

#: KEYS[1]: the trace's contribution key. ARGV: base, trace id, new contribution JSON ('' only takes the old one
#: back), the new one's expiry (unix seconds), now (ms), the coverage record's lifetime (ms).
_REPLACE = """
local base, tid = ARGV[1], ARGV[2]
local function neg(v)
  if string.sub(v, 1, 1) == '-' then return string.sub(v, 2) end
  return '-' .. v
end
local function apply(c, sign, expire_at)
  local key = base .. c.k
  local h = key .. ':c'
  for f, v in pairs(c.i) do
    if redis.call('HINCRBY', h, f, sign * v) == 0 then redis.call('HDEL', h, f) end
  end
  for f, v in pairs(c.f) do
    local d = v
    if sign < 0 then d = neg(v) end
    if math.abs(tonumber(redis.call('HINCRBYFLOAT', h, f, d))) < 1e-9 then redis.call('HDEL', h, f) end
  end
  if sign < 0 then
    if redis.call('HEXISTS', h, 'traces') == 0 then redis.call('DEL', h) end  -- no trace left: thresholds go too
    redis.call('ZREM', key .. ':s', tid)
    for _, e in ipairs(c.x) do redis.call('LREM', key .. ':f', 1, e) end
    return
  end
  for f, v in pairs(c.t) do redis.call('HSET', h, f, v) end
  if c.s ~= cjson.null then
    redis.call('ZADD', key .. ':s', c.s, tid)
    redis.call('EXPIREAT', key .. ':s', expire_at)
  end
  if #c.x > 0 then
    redis.call('LPUSH', key .. ':f', unpack(c.x))
    redis.call('LTRIM', key .. ':f', 0, tonumber(ARGV[7]) - 1)
    redis.call('EXPIREAT', key .. ':f', expire_at)
  end
  redis.call('EXPIREAT', h, expire_at)
  -- the series set outlives every bucket naming it: kept until the later of this bucket's expiry and
  -- now + the rollups' retention, never shortened (a set without expiry, from before, gets one)
  local series, now_s = base .. 'series', math.floor(tonumber(ARGV[5]) / 1000)
  redis.call('SADD', series, c.series)
  local keep = math.max(expire_at, now_s + math.floor(tonumber(ARGV[6]) / 1000))
  local left = redis.call('TTL', series)
  if left < 0 or now_s + left < keep then redis.call('EXPIREAT', series, keep) end
end
local old = redis.call('GET', KEYS[1])
if old then apply(cjson.decode(old), -1, 0) end
if ARGV[3] ~= '' then
  local expire_at = tonumber(ARGV[4])
  apply(cjson.decode(ARGV[3]), 1, expire_at)
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('EXPIREAT', KEYS[1], expire_at)
  if not redis.call('SET', base .. 'since', ARGV[5], 'NX', 'PX', ARGV[6]) then
    redis.call('PEXPIRE', base .. 'since', ARGV[6])
  end
else
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', base .. 'pending', tid)
redis.call('HDEL', base .. 'pending_at', tid)
return old and 1 or 0
"""


def base_key(prefix: str, experiment_id: str) -> str:
    return f"{prefix}{ROOT}{experiment_id}:"


def expires_at(bucket: int) -> int:
    """When a bucket's keys (and its traces' contributions) expire: unix seconds, 35 days after its start."""
    return bucket // 1000 + TTL_SECONDS


def contribution_json(c: Contribution) -> str:
    """A contribution as the script reads it: integer counters, float counters as exact strings, examples as the
    exact strings pushed (so taking them back finds them)."""
    ints: dict[str, int] = {}
    floats: dict[str, str] = {}
    for name, value in c.counters.items():
        if name.endswith(FLOAT_FIELDS):
            floats[name] = repr(float(value))
        else:
            ints[name] = int(value)
    return json.dumps(
        {
            "k": f"{c.series}:{c.bucket}",
            "series": c.series,
            "i": ints,
            "f": floats,
            "t": {f"thr|{j}|{n}": f"{t:g}" for (j, n), t in c.thresholds.items()},
            "s": c.score,
            "x": [json.dumps(e, sort_keys=True) for e in c.failures[:KEEP_FAILURES]],
        },
        separators=(",", ":"),
    )


def record_verdict(
    pipe: Any, trace: TraceRecord | None, *, experiment_id: str, prefix: str = "", trace_id: str | None = None,
    now_ms: int | None = None,
) -> None:
    """Queue on ``pipe`` (a redis pipeline or client) the script that makes ``trace`` count once: its earlier
    contribution taken back and this one added, atomically. ``trace=None`` (with ``trace_id``) only takes it back.

    A trace older than the rollups keep (35 days) is only taken back.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base = base_key(prefix, experiment_id)
    c = contribution(trace) if trace is not None else None
    tid = c.trace_id if c is not None else str(trace_id)
    payload, expiry = "", 0
    if c is not None and expires_at(c.bucket) > now_ms // 1000:
        payload, expiry = contribution_json(c), expires_at(c.bucket)
    pipe.eval(_REPLACE, 1, f"{base}t:{tid}", base, tid, payload, expiry, now_ms, TTL_SECONDS * 1000, KEEP_FAILURES)


def mark_pending(redis: Any, *, experiment_id: str, trace_id: str, timestamp_ms: int, prefix: str = "",
                 now_ms: int | None = None) -> None:
    """Say, before the write-back, that a trace's record is about to change: until its rollup is recorded, Redis
    does not cover its bucket (a failed rollup write, or a worker lost in between, leaves the mark)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base = base_key(prefix, experiment_id)
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(f"{base}pending", {trace_id: bucket_of(timestamp_ms)})
    pipe.hset(f"{base}pending_at", trace_id, now_ms)
    pipe.execute()


def load_rollup(
    redis: Any,
    experiment_id: str,
    start_ms: int,
    end_ms: int,
    *,
    workflow: str | None = None,
    environment: str | None = None,
    prefix: str = "",
) -> Rollup:
    """Read the buckets of ``[start_ms, end_ms)`` for the matching series (one pipelined round trip per 500 keys)."""
    base = base_key(prefix, experiment_id)
    series = []
    for raw in redis.smembers(f"{base}series"):
        name = _text(raw)
        wf, _, env = name.partition(SEP)
        if (workflow is None or wf == workflow) and (environment is None or env == environment):
            series.append(name)
    rollup = Rollup()
    buckets = range(bucket_of(start_ms), end_ms, BUCKET_MS)
    keys = [(bucket, f"{base}{name}:{bucket}") for name in series for bucket in buckets]
    for chunk_start in range(0, len(keys), 500):
        chunk = keys[chunk_start : chunk_start + 500]
        pipe = redis.pipeline(transaction=False)
        for _, key in chunk:
            pipe.hgetall(f"{key}:c")
            pipe.zrange(f"{key}:s", 0, KEEP_EXTREMES - 1, withscores=True)
            pipe.zrevrange(f"{key}:s", 0, KEEP_EXTREMES - 1, withscores=True)
            pipe.lrange(f"{key}:f", 0, -1)
        replies = pipe.execute()
        for i, (bucket, _) in enumerate(chunk):
            counters, lo, hi, fails = replies[4 * i : 4 * i + 4]
            if not counters:
                continue
            rollup.merge_redis(bucket, counters, [(_text(m), s) for m, s in lo], [(_text(m), s) for m, s in hi], fails)
    return rollup


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
