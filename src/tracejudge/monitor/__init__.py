"""Quality monitoring: one aggregation (:func:`summarise_quality`) behind the report, the dashboard and alerts.

>>> from tracejudge.monitor import MonitorQuery
>>> MonitorQuery(experiment="1", since="24h", bucket="hour").bucket
'hour'
"""

from tracejudge.monitor.collect import summarise_quality
from tracejudge.monitor.models import QualitySummary
from tracejudge.monitor.window import BadQuery, MonitorQuery, parse_time

__all__ = ["summarise_quality", "QualitySummary", "MonitorQuery", "BadQuery", "parse_time"]
