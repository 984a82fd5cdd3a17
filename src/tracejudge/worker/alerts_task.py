"""The scheduled quality-alert check: a Celery task and its beat entry (``celery -A tracejudge.worker beat``).

The check runs every quarter of ``quality_alerts.window_minutes`` when the config (``TRACEJUDGE_CONFIG``) has
rules; its body is :func:`tracejudge.tasks.alerts.check_quality_alerts`, the same as ``tracejudge alerts check --once``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from tracejudge.tasks import alerts as tasks_alerts

log = logging.getLogger(__name__)

TASK_ALERTS = "tracejudge.check_quality_alerts"
BEAT_ENTRY = "tracejudge-quality-alerts"


def beat_entries(config: Any) -> dict[str, Any]:
    """The beat schedule entry for the alert check, or none when the config has no rules."""
    alerts = config.quality_alerts
    if not alerts.active:
        return {}
    return {BEAT_ENTRY: {"task": TASK_ALERTS, "schedule": timedelta(seconds=alerts.check_every_seconds)}}


def register(app: Any) -> None:
    if TASK_ALERTS in app.tasks:
        return

    @app.task(name=TASK_ALERTS, ignore_result=True)
    def check_quality_alerts() -> dict[str, Any]:
        from tracejudge.worker.names import QUEUES

        return tasks_alerts.check_quality_alerts(queues=QUEUES)
