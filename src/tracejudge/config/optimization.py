"""``optimization``: quality-based prompt optimisation (design section 5.4), run by ``tracejudge optimize``.

.. code-block:: yaml

    optimization:
      enabled: true
      metric: quality_score     # the mean of the plan's judges' scores (lower-is-better judges inverted)
      target: maximize
      strategy: BootstrapFewShot
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from .base import _Section
from .errors import show

__all__ = ["OPTIMIZER_STRATEGIES", "OptimizationConfig"]

#: The strategies a config may name and the MLflow optimizer each maps to: DSPy's few-shot bootstrapping has no
#: MLflow optimizer of its own; MLflow's metaprompting over the dataset's judged examples is its nearest.
OPTIMIZER_STRATEGIES = {
    "BootstrapFewShot": "MetaPromptOptimizer",
    "metaprompt": "MetaPromptOptimizer",
    "MetaPrompt": "MetaPromptOptimizer",
    "GEPA": "GepaPromptOptimizer",
    "gepa": "GepaPromptOptimizer",
}


class OptimizationConfig(_Section):
    """``optimization``: improve a registered prompt with the judges as the objective."""

    #: Allow `tracejudge optimize` with this config.
    enabled: bool = True
    #: The objective: `quality_score`, the mean of the plan's judges' scores.
    metric: Literal["quality_score"] = "quality_score"
    #: The objective's direction (quality is maximised).
    target: Literal["maximize"] = "maximize"
    #: The optimizer: BootstrapFewShot or metaprompt (MLflow's MetaPromptOptimizer), or GEPA (GepaPromptOptimizer).
    strategy: str = "BootstrapFewShot"
    #: The model that rewrites the prompt (default: the judges' model), e.g. `gpt-4o-mini`.
    reflection_model: str | None = None

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in OPTIMIZER_STRATEGIES:
            from .errors import suggest

            close = suggest(value, OPTIMIZER_STRATEGIES)
            hint = f"; did you mean {close!r}?" if close else ""
            raise ValueError(f"unknown strategy {show(value)}{hint} Known: {', '.join(OPTIMIZER_STRATEGIES)}")
        return value
