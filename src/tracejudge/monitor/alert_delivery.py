"""Alert delivery: at least once per sink, tracked in Redis, retried at every check until a sink accepts it.

Per (experiment, rule) one Redis hash, ``tracejudge:alerts:<experiment>:<rule id>``:

* ``status``: ``firing`` or ``resolved`` (the rule's last state change), ``since``: when it changed;
* per sink (a short id, a hash of its type and address or variable name): ``done:<sink>`` the last status the
  sink accepted, ``attempts:<sink>`` HTTP tries for the current status, ``error:<sink>`` the last failure.

A sink owes ``firing`` while the rule fires and it has not accepted it, and ``resolved`` once the rule resolved
if it had accepted the firing (a sink that never heard of the alert is not told it resolved). Changes of state
are one Lua call (the first checker to see a change records it; others see it recorded), and each delivery is
claimed for its worst-case duration (``SET NX PX``), so a beat schedule and a cron check running together
send once, while a checker that dies mid-send leaves the claim to expire and the next check sends. The hash
goes when the rule resolved and no sink still owes the resolution. Sinks never see a URL in a log line or an
error here; errors are stored without the address.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from tracejudge.config.alerts import AlertSink

log = logging.getLogger(__name__)

Status = Literal["firing", "resolved"]

# (status, since, sink ids...): record a change of state; returns {changed, hash as a flat list}
_TRANSITION = """
local key = KEYS[1]
if redis.call('TYPE', key).ok == 'string' then
  -- written by tracejudge before delivery was tracked (set before sending): count it as sent
  redis.call('DEL', key)
  redis.call('HSET', key, 'status', 'firing', 'since', '')
  for i = 3, #ARGV do redis.call('HSET', key, 'done:' .. ARGV[i], 'firing') end
end
local status = redis.call('HGET', key, 'status')
local want = ARGV[1]
local changed = 0
if (want == 'firing' and status ~= 'firing') or (want == 'resolved' and status == 'firing') then
  redis.call('HSET', key, 'status', want, 'since', ARGV[2])
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 9) == 'attempts:' or string.sub(f, 1, 6) == 'error:' then redis.call('HDEL', key, f) end
  end
  changed = 1
end
local all = redis.call('HGETALL', key)
if redis.call('HGET', key, 'status') == 'resolved' then
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 5) == 'done:' and all[i + 1] == 'firing' then return {changed, all} end
  end
  redis.call('DEL', key)
  return {changed, {}}
end
return {changed, all}
"""

# (sink id, status sent, ok 0/1, tries, error): record one delivery attempt
_RECORD = """
local key, sid, sent = KEYS[1], ARGV[1], ARGV[2]
local exists = redis.call('EXISTS', key) == 1
if ARGV[3] == '1' then
  if not exists then
    if sent ~= 'firing' then return 0 end
    -- the rule resolved (and its state went) while this firing was on its way: the sink still owes the resolution
    redis.call('HSET', key, 'status', 'resolved', 'since', '')
  end
  redis.call('HSET', key, 'done:' .. sid, sent)
  redis.call('HINCRBY', key, 'attempts:' .. sid, tonumber(ARGV[4]))
  redis.call('HDEL', key, 'error:' .. sid)
  if redis.call('HGET', key, 'status') == 'resolved' then
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      if string.sub(all[i], 1, 5) == 'done:' and all[i + 1] == 'firing' then return 1 end
    end
    redis.call('DEL', key)  -- every sink that heard of the alert heard it resolved
  end
elseif exists then
  redis.call('HINCRBY', key, 'attempts:' .. sid, tonumber(ARGV[4]))
  redis.call('HSET', key, 'error:' .. sid, ARGV[5])
end
return 1
"""

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class Delivery(BaseModel):
    """One sink's delivery of one rule's current state, as ``tracejudge alerts check`` shows it."""

    sink: str = Field(description="the sink's type and place in the config, with its host or variable (never the URL)")
    status: Status = Field(description="what the sink is owed or got: firing or resolved")
    delivered: bool
    sent_now: bool = Field(False, description="accepted in this check (not in an earlier one)")
    attempts: int = Field(0, description="HTTP tries for this status so far (all checks)")
    last_error: str | None = None
    in_flight: bool = Field(False, description="another checker is sending it right now")


def sink_id(sink: AlertSink) -> str:
    """A short stable id of a sink (type and address or variable; a one-way hash, so no URL in Redis).

    >>> sink_id(AlertSink(type="slack", url_env="SLACK_WEBHOOK_URL"))
    'f7a9f48d9a21'
    """
    blob = json.dumps([sink.type, sink.url_env or sink.url or ""])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def sink_label(sink: AlertSink, index: int) -> str:
    """How a sink is named in output: ``webhook#0 (hooks.example)``, ``slack#1 ($SLACK_WEBHOOK_URL)``, ``log#2``.

    >>> sink_label(AlertSink(type="webhook", url="https://hooks.example/T0/secret"), 0)
    'webhook#0 (hooks.example)'
    """
    where = f"${sink.url_env}" if sink.url_env else (urlsplit(sink.url).hostname if sink.url else None)
    return f"{sink.type}#{index}" + (f" ({where})" if where else "")


class DeliveryState:
    """The delivery records of one experiment's rules in Redis (see the module docstring)."""

    def __init__(self, redis: Any, key: str) -> None:
        self.redis, self.key = redis, key

    def transition(self, holds: bool, *, since: str, sinks: list[AlertSink]) -> tuple[bool, dict[str, str]]:
        """Record the rule's state; (whether this call changed it, the hash after)."""
        changed, flat = self.redis.eval(_TRANSITION, 1, self.key, "firing" if holds else "resolved", since, *[sink_id(s) for s in sinks])
        flat = [x.decode() if isinstance(x, bytes) else x for x in flat]
        return bool(changed), dict(zip(flat[::2], flat[1::2]))

    def record(self, sid: str, sent: Status, *, ok: bool, tries: int, error: str | None = None) -> None:
        self.redis.eval(_RECORD, 1, self.key, sid, sent, "1" if ok else "0", tries, error or "")

    def claim(self, sid: str, seconds: float) -> str | None:
        token = uuid.uuid4().hex
        return token if self.redis.set(f"{self.key}:sending:{sid}", token, nx=True, px=max(1000, int(seconds * 1000))) else None

    def release(self, sid: str, token: str) -> None:
        self.redis.eval(_RELEASE, 1, f"{self.key}:sending:{sid}", token)


def owed(state: dict[str, str], sid: str) -> Status | None:
    """What a sink is owed by the rule's recorded state, or None."""
    status, done = state.get("status"), state.get(f"done:{sid}")
    if status == "firing" and done != "firing":
        return "firing"
    if status == "resolved" and done == "firing":
        return "resolved"
    return None


def deliver(store: DeliveryState, state: dict[str, str], sinks: list[AlertSink], make_alert: Callable[[Status], Any]) -> list[Delivery]:
    """Send the rule's state to every sink that is owed it; return every sink's delivery of the current state."""
    out: list[Delivery] = []
    payload: dict[Status, Any] = {}
    for index, sink in enumerate(sinks):
        sid, label = sink_id(sink), sink_label(sink, index)
        status = owed(state, sid)
        attempts = int(state.get(f"attempts:{sid}", 0))
        if status is None:
            current = state.get("status")
            if current in ("firing", "resolved") and state.get(f"done:{sid}") == current:
                out.append(Delivery(sink=label, status=current, delivered=True, attempts=attempts))
            continue
        token = store.claim(sid, worst_case_seconds(sink))
        if token is None:
            out.append(Delivery(sink=label, status=status, delivered=False, attempts=attempts,
                                last_error=state.get(f"error:{sid}"), in_flight=True))
            continue
        try:
            if status not in payload:
                payload[status] = make_alert(status)
            tries, error = send_to_sink(sink, payload[status])
            store.record(sid, status, ok=error is None, tries=tries, error=error)
        finally:
            store.release(sid, token)
        if error:
            log.error("quality alert %s to %s not delivered after %d tries (%s); tried again at the next check", status, label, tries, error)
        out.append(Delivery(sink=label, status=status, delivered=error is None, sent_now=error is None,
                            attempts=attempts + tries, last_error=error))
    return out


def worst_case_seconds(sink: AlertSink) -> float:
    """How long one delivery may take: every try's timeout plus the backoff between tries, plus a margin."""
    backoff = sum(min(8.0, 0.5 * 2**i) for i in range(sink.max_attempts - 1))
    return sink.max_attempts * sink.timeout_seconds + backoff + 5.0


def send_to_sink(sink: AlertSink, alert: Any) -> tuple[int, str | None]:
    """Send one alert to one sink with its retries; (HTTP tries made, None or the last error, without the URL)."""
    if sink.type == "log":
        log.warning("quality alert %s: %s", alert.status, alert.message)
        return 1, None
    try:
        url = sink.resolved_url()
    except ValueError as exc:
        return 1, str(exc)
    payload = alert.model_dump(mode="json") if sink.type == "webhook" else slack_payload(alert)
    return _post(url, payload, timeout=sink.timeout_seconds, max_attempts=sink.max_attempts)


def slack_payload(alert: Any) -> dict[str, Any]:
    """A Slack-compatible message (``text`` with links in Slack's ``<url|label>`` form)."""
    icon = ":white_check_mark:" if alert.status == "resolved" else ":rotating_light:"
    lines = [f"{icon} *{alert.status.upper()}* quality alert `{alert.rule}` (experiment {alert.experiment_id})", alert.message,
             f"window {alert.window['since']} .. {alert.window['until']}"]
    lines += [f"• {_slack_link(e.get('url') or '', e['trace_id'])} {e.get('node') or ''} {e.get('judge') or ''} {'' if e.get('score') is None else round(e['score'], 3)}" for e in alert.examples]
    if alert.links.get("quality"):
        lines.append(_slack_link(alert.links["quality"], "MLflow Quality tab"))
    return {"text": "\n".join(lines)}


def _slack_link(url: str, label: str) -> str:
    """``<url|label>``; a path in the MLflow UI (its address is not known: a local store) as text.

    >>> _slack_link("https://ui/#/x", "tr-1"), _slack_link("/#/experiments/1/traces", "tr-1")
    ('<https://ui/#/x|tr-1>', 'tr-1 (/#/experiments/1/traces in the MLflow UI)')
    """
    if url.startswith(("http://", "https://")):
        return f"<{url}|{label}>"
    return f"{label} ({url} in the MLflow UI)" if url else label


def _post(url: str, payload: dict[str, Any], *, timeout: float, max_attempts: int) -> tuple[int, str | None]:
    from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

    body = json.dumps(payload).encode()
    tries = 0
    try:
        for attempt in Retrying(stop=stop_after_attempt(max_attempts), wait=wait_exponential(multiplier=0.5, max=8)):
            with attempt:
                tries += 1
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    response.read()
    except RetryError as exc:  # every try failed
        return tries, _describe(exc.last_attempt.exception(), url)
    except Exception as exc:
        return tries, _describe(exc, url)
    return tries, None


def _describe(exc: BaseException | None, url: str) -> str:
    """The error in a line, with no URL in it (webhook URLs are secrets)."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"cannot connect: {exc.reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.replace(url, "<url>")[:300]
