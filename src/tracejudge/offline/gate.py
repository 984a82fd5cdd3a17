"""The offline release gate: ``mlflow.genai.evaluate`` over a dataset with our scorers, verdicts by the online rule.

Each row is judged by the plan's scorers (:mod:`tracejudge.offline.scorers`) on the trace MLflow records for it;
its verdict comes from the same rule as a worker's (:func:`tracejudge.verdict.build_verdict`). The run passes
when every row passes (``min_pass_rate``, default 1.0, lowers the bar); a row whose judges errored makes the run
an error, as a gate would.

>>> OfflineRun(rows=[], run_id="r").status
'error'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tracejudge.config import TraceJudgeConfig, load_config
from tracejudge.offline.scorers import row_verdict, scorers
from tracejudge.verdict import QualityVerdict

__all__ = ["OfflineGateError", "OfflineRun", "load_predict", "run_offline_gate"]


class OfflineGateError(ValueError):
    """The dataset, the predict function or the config cannot be used; the message says which and why."""


@dataclass
class OfflineRun:
    rows: list[QualityVerdict]
    run_id: str | None
    min_pass_rate: float = 1.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        judged = [v for v in self.rows if v.status in ("passed", "failed")]
        return sum(v.status == "passed" for v in judged) / len(judged) if judged else 0.0

    @property
    def status(self) -> str:
        if not self.rows or any(v.status == "error" for v in self.rows):
            return "error"
        return "passed" if self.pass_rate >= self.min_pass_rate else "failed"


def load_predict(spec: str) -> Callable[..., Any]:
    """``module:function`` (the module importable from the current directory) as the function to evaluate."""
    import sys

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise OfflineGateError(f"--predict: expected module:function, e.g. my_app.agent:answer (got {spec!r})")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OfflineGateError(f"--predict: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise OfflineGateError(f"--predict: {module_name} has no function {attribute!r}")
    return function


def run_offline_gate(
    dataset: Any,
    *,
    predict: Callable[..., Any] | None = None,
    config: TraceJudgeConfig | Mapping[str, Any] | str | None = None,
    min_pass_rate: float = 1.0,
) -> OfflineRun:
    """Evaluate ``dataset`` (a name, an MLflow dataset, or rows) with the plan's scorers and gate the run."""
    import mlflow
    import mlflow.genai

    cfg = config if isinstance(config, TraceJudgeConfig) else load_config(config)
    if isinstance(dataset, str):
        from mlflow.genai import datasets

        try:
            dataset = datasets.get_dataset(name=dataset)
        except Exception as exc:  # not found, by store
            raise OfflineGateError(f"--dataset: no evaluation dataset named {dataset!r} in the tracking store ({exc})") from None
    plan = scorers(cfg)
    kwargs: dict[str, Any] = {"data": dataset, "scorers": plan}
    if predict is not None:
        kwargs["predict_fn"] = predict
    result = mlflow.genai.evaluate(**kwargs)
    frame = result.result_df
    verdicts = []
    for _, row in frame.iterrows():
        assessments = row.get("assessments") if "assessments" in frame else None
        verdicts.append(row_verdict(str(row["trace_id"]), list(assessments if assessments is not None else []), cfg))
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return OfflineRun(rows=verdicts, run_id=result.run_id, min_pass_rate=min_pass_rate, counts=counts)
