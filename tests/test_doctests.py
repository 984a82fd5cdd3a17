"""The examples in the public docstrings run (so they stay true)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "tracejudge.config.loader",
    "tracejudge.config.models",
    "tracejudge.config.settings",
    "tracejudge.judges.model",
    "tracejudge.judges.prompt",
    "tracejudge.judges.registry",
    "tracejudge.judges.client",
    "tracejudge.judges.plan",
    "tracejudge.judges.fingerprint",
    "tracejudge.judges.executor",
    "tracejudge.judges.agreement",
    "tracejudge.judges.calibration",
    "tracejudge.judge_quality",
    "tracejudge.verdict",
    "tracejudge.worker.celery_app",
    "tracejudge.mlflow_io.writer",
    "tracejudge.mlflow_io.rest",
    "tracejudge.payload",
    "tracejudge.config.controls",
    "tracejudge.judges.pricing",
    "tracejudge.judges.controls",
    "tracejudge.controls.sampling",
    "tracejudge.controls.counters",
    "tracejudge.controls.judged",
    "tracejudge.controls.deferred",
    "tracejudge.mlflow_io.search",
    "tracejudge.worker.scheduled",
    "tracejudge.monitor",
    "tracejudge.monitor.rollup",
    "tracejudge.monitor.record",
    "tracejudge.monitor.rebuild",
    "tracejudge.mlflow_io.query",
    "tracejudge.monitor.themes",
    "tracejudge.monitor.summary",
    "tracejudge.monitor.links",
    "tracejudge.monitor.window",
    "tracejudge.monitor.render",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
