"""The config a task carries: the user's config without what an evaluation never needs and must not hold.

``enqueue(config=...)`` sends the config inside the task's arguments, which Redis keeps (the broker message,
and the result backend with ``result_extended``) and Flower shows. Alerts are checked by beat or cron from the
workers' own config, never by an evaluation, and their sink URLs are bearer secrets: the ``quality_alerts``
section is dropped when a task config is written and when one is read (a producer of an older version may
still send it).

>>> from tracejudge.config import load_config
>>> cfg = load_config({"quality_alerts": {"sinks": [{"type": "slack", "url": "https://hooks.example/T/secret"}]}})
>>> "quality_alerts" in strip_for_task(cfg.model_dump(mode="json"))
False
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, WrapSerializer

from .models import TraceJudgeConfig

#: Sections of a config that never travel with a task.
NOT_IN_TASKS = ("quality_alerts",)


def strip_for_task(data: Any) -> Any:
    """The config's data without :data:`NOT_IN_TASKS` (anything but a mapping passes through)."""
    if isinstance(data, dict):
        return {k: v for k, v in data.items() if k not in NOT_IN_TASKS}
    if isinstance(data, TraceJudgeConfig):
        return data.model_copy(update={k: TraceJudgeConfig.model_fields[k].get_default(call_default_factory=True) for k in NOT_IN_TASKS})
    return data


def _dump(value: Any, handler: Any) -> Any:
    return strip_for_task(handler(value))


#: A config in a task payload: validated as a :class:`TraceJudgeConfig`, never holding ``quality_alerts``.
TaskConfig = Annotated[TraceJudgeConfig, BeforeValidator(strip_for_task), WrapSerializer(_dump)]
