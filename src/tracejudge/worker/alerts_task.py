"""The scheduled quality-alert check: a Celery task and its beat entry (``celery -A tracejudge.worker beat``).

The check runs every quarter of ``quality_alerts.window_minutes`` when the config (``TRACEJUDGE_CONFIG``) has
rules; it is :func:`tracejudge.monitor.alerts.check_alerts`, the same as ``tracejudge alerts check --once``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

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
        from tracejudge.config import Settings, load_config
        from tracejudge.monitor.alerts import check_alerts, known_names, watched_experiment
        from tracejudge.tasks.runtime import _redis_client

        settings = Settings.from_env()
        config = load_config(settings.config_path)
        alerts = config.quality_alerts
        experiment = watched_experiment(alerts)
        if not alerts.active or not experiment:
            log.warning("quality alerts: nothing to check (rules: %d, experiment: %s)", len(alerts.rules), experiment)
            return {"checked": 0}
        judges, nodes = known_names(config)
        result = check_alerts(alerts, experiment=experiment, redis=_redis_client(settings), known_judges=judges, known_nodes=nodes)
        return {"checked": len(result.outcomes), "firing": [o.rule for o in result.firing]}
