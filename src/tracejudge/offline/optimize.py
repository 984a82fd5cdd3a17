"""Quality-based prompt optimisation (design section 5.4): ``mlflow.genai.optimize_prompts`` with our judges.

The objective is ``quality_score``: the mean over the plan's judges (our scorers, :mod:`tracejudge.offline.scorers`)
of each row's score, lower-is-better judges inverted, maximised. The config's ``optimization.strategy`` names the
MLflow optimizer (:data:`~tracejudge.config.optimization.OPTIMIZER_STRATEGIES`); its reflection model is called
through the judges' endpoint (``TRACEJUDGE_LLM_BASE_URL`` and key), so a local or test endpoint works as for the
judges. MLflow registers the improved prompt as a new version of the same name.

>>> quality_score({"relevance": 0.8, "coherence": 0.6})
0.7
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tracejudge.config import Settings, TraceJudgeConfig, load_config
from tracejudge.config.settings import openai_environment
from tracejudge.config.optimization import OPTIMIZER_STRATEGIES
from tracejudge.offline.scorers import scorers

__all__ = ["OptimizeError", "OptimizeOutcome", "optimize_prompt", "quality_score"]


class OptimizeError(ValueError):
    """The prompt, dataset, config or optimizer cannot be used; the message says which."""


@dataclass
class OptimizeOutcome:
    source_uri: str
    new_uri: str
    optimizer: str
    initial_score: float | None
    final_score: float | None


def quality_score(scores: Mapping[str, Any]) -> float:
    """The objective: the mean of the judges' scores on a row (each 0..1, higher better; a failed judge counts 0).

    MLflow hands each scorer's outcome as it returned it: a number, a ``Feedback``, or a list of them (a judge on
    several targets), which count as their mean.
    """
    values = [_number(v) for v in scores.values()]
    return sum(values) / len(values) if values else 0.0


def _number(outcome: Any) -> float:
    if isinstance(outcome, list):
        return sum(_number(o) for o in outcome) / len(outcome) if outcome else 0.0
    value = getattr(outcome, "value", outcome)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def optimize_prompt(
    prompt_uri: str,
    *,
    dataset: Any,
    predict: Callable[..., Any],
    config: TraceJudgeConfig | Mapping[str, Any] | str | None = None,
) -> OptimizeOutcome:
    """Improve ``prompt_uri`` over ``dataset`` (a name or rows) with the plan's judges; register the result."""
    import mlflow.genai
    from mlflow.exceptions import MlflowException

    cfg = config if isinstance(config, TraceJudgeConfig) else load_config(config)
    block = cfg.optimization
    if not block.enabled:
        raise OptimizeError(f"optimization.enabled is false in {cfg.source or 'the config'}")
    if not prompt_uri.startswith("prompts:/"):
        raise OptimizeError(f"--prompt: expected prompts:/NAME/VERSION (got {prompt_uri!r})")
    try:
        mlflow.genai.load_prompt(prompt_uri)
    except MlflowException as exc:
        raise OptimizeError(f"--prompt: no registered prompt {prompt_uri} ({exc.message})") from None
    rows = _rows(dataset)
    settings = Settings.from_env()
    optimizer = _optimizer(block.strategy, block.reflection_model or settings.default_model, settings)
    plan = scorers(cfg)
    # judges whose lower score is better count inverted, as in the verdict's means
    inverted = {s.name for s in plan if not getattr(s._registry.get(s.judge_name), "greater_is_better", True)}

    def objective(scores: Mapping[str, Any]) -> float:
        return quality_score({k: (1.0 - _number(v) if k in inverted else v) for k, v in scores.items()})

    try:
        with openai_environment(settings):  # MLflow's optimizers call the judges' endpoint
            result = mlflow.genai.optimize_prompts(
                predict_fn=predict, train_data=rows, prompt_uris=[prompt_uri], optimizer=optimizer,
                scorers=plan, aggregation=objective,
            )
    except MlflowException as exc:
        raise OptimizeError(f"mlflow.genai.optimize_prompts failed: {exc.message}") from None
    new = result.optimized_prompts[0]
    return OptimizeOutcome(
        source_uri=prompt_uri, new_uri=f"prompts:/{new.name}/{new.version}", optimizer=result.optimizer_name,
        initial_score=result.initial_eval_score, final_score=result.final_eval_score,
    )


def _rows(dataset: Any) -> Any:
    if not isinstance(dataset, str):
        return dataset
    from mlflow.genai import datasets

    try:
        return datasets.get_dataset(name=dataset)
    except Exception as exc:  # not found, by store
        raise OptimizeError(f"--dataset: no evaluation dataset named {dataset!r} in the tracking store ({exc})") from None


def _optimizer(strategy: str, model: str, settings: Settings) -> Any:
    """The MLflow optimizer the strategy maps to, its reflection model on the judges' endpoint."""
    from mlflow.genai.optimize import optimizers

    name = OPTIMIZER_STRATEGIES[strategy]
    reflection = model if ":/" in model else f"openai:/{model}"
    if name == "GepaPromptOptimizer":
        import importlib.util

        if importlib.util.find_spec("gepa") is None:
            raise OptimizeError("strategy GEPA needs the gepa package: pip install gepa")
    return getattr(optimizers, name)(reflection_model=reflection)
