"""The scheduled quality-alert check, independent of any queue (the worker's beat task calls it).

It is :func:`tracejudge.monitor.alerts.check_alerts` on the workers' config
(``TRACEJUDGE_CONFIG``), the same as ``tracejudge alerts check --once``.
"""

from __future__ import annotations

import logging
from typing import Any

from tracejudge.config import Settings, load_config
from tracejudge.tasks.state import RedisState

log = logging.getLogger(__name__)


def check_quality_alerts(*, queues: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check every alert rule once; returns how many were checked and which fire. ``queues``: the broker
    queues the pipeline rules read (the worker passes its own)."""
    from tracejudge.monitor.alerts import check_alerts, known_names, watched_experiment

    settings = Settings.from_env()
    config = load_config(settings.config_path)
    alerts = config.quality_alerts
    experiment = watched_experiment(alerts)
    if not alerts.active or not experiment:
        log.warning("quality alerts: nothing to check (rules: %d, experiment: %s)", len(alerts.rules), experiment)
        return {"checked": 0}
    judges, nodes = known_names(config)
    state = RedisState.from_url(settings.redis_url, prefix=settings.key_prefix)
    result = check_alerts(
        alerts, experiment=experiment, redis=state.redis, prefix=state.prefix, known_judges=judges, known_nodes=nodes,
        queues=queues,
    )
    return {"checked": len(result.outcomes), "firing": [o.rule for o in result.firing]}
