"""``quality_alerts``: rules checked on a schedule against judged quality, and where alerts go.

.. code-block:: yaml

    quality_alerts:
      experiment: "1"                 # id or name (default: $MLFLOW_EXPERIMENT_ID / $MLFLOW_EXPERIMENT_NAME)
      window_minutes: 60
      baseline_days: 7
      rules:
        - {kind: quality_drop, judge: relevance, below: 0.75}
        - {kind: quality_drop, node: write, drop_by: 0.10}
        - {kind: failure_rate, above: 0.20}
        - {kind: variance_increase, factor: 2.0}
        - {kind: new_failure_type}
        - {kind: gate_pass_rate, below: 0.9}
        - {kind: session_failure_rate, above: 0.3}    # conversations (judges.sessions) failing a session judge
        - {kind: tool_failure_rate, above: 0.1}       # over 10% of the judged traces' tool calls failed
        - {kind: tool_failure_rate, tool: book_flight, above: 0.05}
        # the pipeline itself (all experiments; see docs/pipeline-health.md)
        - {kind: pipeline_lag, seconds: 300}          # p95 trace end -> verdict above 5 min
        - {kind: backlog, depth: 1000, seconds: 600}  # a queue deeper than 1000 or its oldest message older than 10 min
        - {kind: no_verdicts, minutes: 15}            # no verdict for 15 min while messages wait (or workers hold them)
        - {kind: judge_error_rate, above: 0.2}        # over 20% of judge results end in one error code
      sinks:
        - {type: webhook, url: "https://hooks.example/abc"}
        - {type: slack, url_env: SLACK_WEBHOOK_URL}   # the address from the environment: no secret in YAML
        - {type: log}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .errors import show
from .base import Score, _no_bool, _Section

# every rule kind and the fields it needs (one of them set); its evaluator is registered in
# tracejudge.monitor.alert_rules under the same name (a test checks the two agree)
RULE_NEEDS: dict[str, tuple[str, ...]] = {
    "quality_drop": ("below", "drop_by"),
    "failure_rate": ("above",),
    "variance_increase": ("factor",),
    "new_failure_type": (),
    "gate_pass_rate": ("below",),
    # conversations (judges.sessions): the share of sessions judged in the window with a result below threshold
    "session_failure_rate": ("above",),
    # agents: the share of the judged traces' tool calls that failed (all tools, or one: `tool`)
    "tool_failure_rate": ("above",),
    # judges vs people: kappa (or Spearman) of our scores with HUMAN feedback in the window below a bound
    "judge_agreement": ("below",),
    # the pipeline's health (tracejudge.ops.pipeline; evaluated at the end of tracejudge.monitor.alert_rules)
    "pipeline_lag": ("seconds",),
    "backlog": ("depth", "seconds"),
    "no_verdicts": ("minutes",),
    "judge_error_rate": ("above",),
}
#: The rule kinds about the pipeline (all experiments), not about one experiment's judged quality.
PIPELINE_KINDS = ("pipeline_lag", "backlog", "no_verdicts", "judge_error_rate")
RULE_KINDS = tuple(RULE_NEEDS)
_Positive = Annotated[float, BeforeValidator(_no_bool), Field(gt=0)]


class AlertRule(_Section):
    """One rule; ``judge`` / ``node`` narrow it (default: every judge on every node)."""

    #: The rule: quality_drop, failure_rate, variance_increase, new_failure_type, gate_pass_rate, session_failure_rate, judge_agreement, tool_failure_rate; about the pipeline: pipeline_lag, backlog, no_verdicts, judge_error_rate.
    kind: str
    #: A name for the alert (default: made from the rule).
    name: str | None = None
    #: Only this judge's results.
    judge: str | None = None
    #: Only this node's results.
    node: str | None = None
    #: Fires when the figure is below this (quality_drop, gate_pass_rate, judge_agreement).
    below: Score | None = None
    #: Fires when the figure is above this (failure_rate, session_failure_rate, judge_error_rate, tool_failure_rate).
    above: Score | None = None
    #: Fires when the mean drops by this much against the baseline (quality_drop).
    drop_by: Score | None = None
    #: Fires when the variance grows by this factor against the baseline (variance_increase).
    factor: _Positive | None = None
    #: Fires above this many seconds: the p95 trace lag (pipeline_lag), the oldest message's wait (backlog).
    seconds: _Positive | None = None
    #: Fires when a queue holds more messages than this (backlog).
    depth: Annotated[int, BeforeValidator(_no_bool), Field(ge=0)] | None = None
    #: Fires after this many minutes without a verdict while work waits as long (no_verdicts).
    minutes: _Positive | None = None
    #: Only this queue (backlog; default every queue), e.g. tracejudge.gate.
    queue: str | None = None
    #: Only this error code (judge_error_rate; default each code on its own), e.g. JUDGE_TIMEOUT.
    code: str | None = None
    #: Only this tool's calls (tool_failure_rate; default all tools together), e.g. book_flight.
    tool: str | None = None
    #: The agreement figure a judge_agreement rule watches: Cohen's `kappa` (pass/fail) or `spearman` (scores).
    statistic: Literal["kappa", "spearman"] = "kappa"
    min_count: int = Field(5, ge=1, description="fewer scored results in the window than this (tool calls for tool_failure_rate, sessions for session_failure_rate): the rule stays quiet")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in RULE_KINDS:
            from .errors import suggest

            close = suggest(value, RULE_KINDS)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"unknown rule kind {show(value)}{hint} Allowed: {', '.join(RULE_KINDS)}")
        return value

    @model_validator(mode="after")
    def _needs(self) -> AlertRule:
        need = RULE_NEEDS[self.kind]
        if need and all(getattr(self, k) is None for k in need):
            raise ValueError(f"a {self.kind} rule needs {' or '.join(need)}")
        if self.kind in PIPELINE_KINDS and (self.judge or self.node):
            raise ValueError(f"a {self.kind} rule is about the whole pipeline: it takes no judge or node")
        if self.kind == "tool_failure_rate" and (self.judge or self.node):
            raise ValueError("a tool_failure_rate rule is about tool calls: it takes no judge or node (use tool: <name>)")
        if self.tool is not None and self.kind != "tool_failure_rate":
            raise ValueError(f"tool: only a tool_failure_rate rule takes a tool, not a {self.kind} rule")
        return self

    @property
    def label(self) -> str:
        """A readable name: the given one, else kind and scope.

        >>> AlertRule(kind="quality_drop", judge="relevance", below=0.75).label
        'quality_drop relevance below 0.75'
        """
        if self.name:
            return self.name
        parts = [self.kind]
        if self.node:
            parts.append(f"node {self.node}")
        if self.judge:
            parts.append(self.judge)
        for key in ("queue", "code", "tool"):
            if getattr(self, key):
                parts.append(getattr(self, key))
        for key in ("below", "above", "drop_by", "factor", "seconds", "depth", "minutes"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key} {value:g}")
        return " ".join(parts)


class AlertSink(_Section):
    """Where alerts go: a JSON webhook, a Slack-compatible webhook, or the log."""

    #: Where alerts go: `webhook` (JSON POST), `slack` (incoming webhook) or `log`.
    type: Literal["webhook", "slack", "log"]
    #: The webhook or Slack URL (a secret: prefer `url_env`).
    url: str | None = Field(None, repr=False)
    #: The environment variable holding the URL, read when an alert is sent (so the YAML holds no secret).
    url_env: str | None = None
    #: Seconds one delivery attempt may take.
    timeout_seconds: _Positive = 10.0
    #: Delivery attempts per check before the next check tries again.
    max_attempts: int = Field(4, ge=1, le=10)

    @model_validator(mode="after")
    def _url(self) -> AlertSink:
        if self.type == "log":
            return self
        if self.url and self.url_env:
            raise ValueError(f"a {self.type} sink takes url or url_env, not both")
        if self.url_env:
            if not _ENV_NAME.fullmatch(self.url_env):
                raise ValueError(f"url_env must name an environment variable (got {show(self.url_env)})")
            return self
        if not self.url:
            raise ValueError(f"a {self.type} sink needs a url (http:// or https://) or url_env (the variable holding it)")
        check_url(self.url)
        return self

    def resolved_url(self) -> str:
        """The address to post to: ``url``, or the value of ``url_env`` now; ``ValueError`` saying what is missing.

        >>> import os; os.environ["TJ_DOCTEST_HOOK"] = "https://hooks.example/x"
        >>> AlertSink(type="slack", url_env="TJ_DOCTEST_HOOK").resolved_url()
        'https://hooks.example/x'
        """
        if not self.url_env:
            return self.url or ""
        import os

        value = os.environ.get(self.url_env, "").strip()
        if not value:
            raise ValueError(f"environment variable {self.url_env} is not set (the {self.type} sink's url_env)")
        check_url(value, where=f"environment variable {self.url_env}")
        return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_url(url: str, *, where: str = "url") -> None:
    """An http(s) address with a host, or ``ValueError`` (a value read from the environment is never echoed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = show(url) if where == "url" else f"a {parts.scheme or 'schemeless'} value"
        raise ValueError(f"{where} must be an http:// or https:// address (got {shown})")


class QualityAlertsConfig(_Section):
    """``quality_alerts`` (see the module docstring)."""

    #: Check the rules (on the beat's schedule and with `tracejudge alerts check`).
    enabled: bool = True
    #: The experiment watched (id or name; default `$MLFLOW_EXPERIMENT_ID`).
    experiment: str | None = None
    #: Only traces of this workflow.
    workflow: str | None = None
    #: The window each check looks at.
    window_minutes: Annotated[int, BeforeValidator(_no_bool), Field(ge=4)] = 60
    #: The baseline a window is compared with, in days before it.
    baseline_days: _Positive = 7.0
    #: The alert rules.
    rules: list[AlertRule] = Field(default_factory=list)
    #: Where firing alerts are delivered (default: the log).
    sinks: list[AlertSink] = Field(default_factory=lambda: [AlertSink(type="log")])

    @property
    def check_every_seconds(self) -> float:
        """Rules are checked every quarter window.

        >>> QualityAlertsConfig().check_every_seconds
        900.0
        """
        return self.window_minutes * 60 / 4

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.rules)


def describe(rule: Any) -> str:
    return rule.label
