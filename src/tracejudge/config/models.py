"""The pydantic models for everything a user writes about judging.

They mirror the design document's YAML (section 4.4 judges, 5.4 quality_gate
and quality_retry) plus our extensions (custom judges, execution limits,
``on_error``). Inside our sections unknown keys are errors with a
did-you-mean, because a silently ignored ``threshhold`` would judge against
the wrong bar. ``TraceJudgeConfig`` is the one object the rest of tracejudge
uses; ``load_config`` builds it from a user's file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from .alerts import QualityAlertsConfig
from .base import Score, _AtLeastOne, _Count, _no_bool, _Number, _Seconds, _Section, no_repeated_judges
from .errors import ConfigError, FieldProblem, from_validation_error, show, unknown_key_message

__all__ = [
    "ENVIRONMENT_THRESHOLDS",
    "Environment",
    "Score",
    "JudgeRef",
    "ExecutionConfig",
    "CustomJudgeConfig",
    "RubricLevelConfig",
    "JudgesConfig",
    "QualityGateConfig",
    "QualityRetryConfig",
    "ArtifactsConfig",
    "DEFAULT_ROOT_JUDGES",
    "TraceJudgeConfig",
    "template_variables",
    "TEMPLATE_TOKEN",
]

ENVIRONMENT_THRESHOLDS: dict[str, float] = {"production": 0.80, "development": 0.70, "experimental": 0.60}
"""Minimum acceptable score per environment (design section 5.2)."""

Environment = Literal["production", "development", "experimental"]

DEFAULT_ROOT_JUDGES: tuple[str, ...] = ("relevance", "coherence", "harmfulness")
"""The plan of a config that names no judges: these, on the workflow root, at the environment threshold."""



_JUDGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$")
#: A variable is a name or a dotted path into the judged input: ``topic``, ``inputs.request.topic``.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*$")
#: Template tokens: ``{{``, ``}}``, ``{variable}``, or a stray brace (an error).
TEMPLATE_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)\}|\{|\}")


def template_variables(template: str) -> list[str]:
    """Placeholders of a grading prompt, in order of first use.

    ``{{`` and ``}}`` are literal braces; any other brace is an error (so the
    prompt cannot fail later, when a worker renders it).

    >>> template_variables("Prompt: {prompt}\\nOutput: {output} {{not_a_var}} {prompt}")
    ['prompt', 'output']
    """
    names: list[str] = []
    for match in TEMPLATE_TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if match.group(1) is None:
            line = template.count("\n", 0, match.start()) + 1
            raise ValueError(
                f"stray {token!r} on line {line} of the prompt; placeholders look like "
                f"{{name}}, write {token * 2!r} for a literal brace"
            )
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def _nonblank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"must be a non-empty {what}")
    return value.strip()


class JudgeRef(_Section):
    """One judge to run: an entry of ``workflow_defaults`` or ``node_overrides``.

    Written as a mapping or a bare name: ``- relevance`` means ``- name: relevance``.

    >>> JudgeRef.model_validate("relevance").name
    'relevance'
    """

    #: The judge: a built-in (relevance, coherence, ...), a `custom` judge of this file, or a registered one.
    name: str
    #: Minimum passing score, 0..1 (default: the judge's own, else the environment's threshold).
    threshold: Score | None = None
    #: The judge's LLM, e.g. `gpt-4o-mini` or `openai:/gpt-4o-mini` (default: the judge's, else `$TRACEJUDGE_JUDGE_MODEL`).
    model: str | None = None

    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data}
        if isinstance(data, (Mapping, JudgeRef)):
            return data
        raise ValueError(
            f"must be a judge name or a mapping like {{name: relevance, threshold: 0.8}} (got {show(data)})"
        )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _nonblank(value, "judge name")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _nonblank(value, "model name like 'gpt-4o-mini' or 'openai:/gpt-4o-mini'")


class ExecutionConfig(_Section):
    """How judges run: mode, timeouts, retries and limits (``judges.execution``).

    >>> ExecutionConfig(retry_on_failure=False).attempts
    1
    """

    #: `async`: judge in workers, off the workflow's path; `sync`: judge in the calling process; `disabled`: judge nothing.
    mode: Literal["async", "sync", "disabled"] = "async"
    #: Seconds one judge call (one LLM round trip) may take before it fails as `TIMEOUT`.
    timeout_seconds: _Seconds = 30.0
    #: Retry a judge call that failed transiently (timeouts, 429, 5xx), up to `max_attempts`.
    retry_on_failure: bool = True
    #: Write each judge's rationale into its MLflow feedback.
    log_rationale: bool = True
    #: LLM attempts per judge call when `retry_on_failure` is on.
    max_attempts: _AtLeastOne = 3
    #: Judge calls in flight at once for one evaluation.
    concurrency: _AtLeastOne = 32
    #: Longest text handed to a judge per variable; longer values are cut (the cut is recorded).
    max_input_chars: _Count = 20000
    #: How long a worker waits for a trace that is not yet (fully) written to MLflow before giving up.
    trace_wait_seconds: _Number = 30.0
    #: Seconds one whole evaluation (all judges of a trace) may take.
    overall_timeout_seconds: _Seconds = 300.0
    #: Judge calls per second to one model of the endpoint, shared by all workers (through Redis).
    rate_limit_per_second: _Number | None = None
    #: How LLM judges' scores are read: "direct" (the reply's score) or "logprobs" (G-Eval: levels
    #: weighted by the model's token probabilities); a judge's own ``scoring`` wins.
    scoring: Literal["direct", "logprobs"] = "direct"
    #: Replies per judge call, averaged, with their spread recorded (self-consistency). Cost multiplies.
    samples: _Count = 1

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: int) -> int:
        return _check_samples(value)

    @field_validator("rate_limit_per_second")
    @classmethod
    def _positive_rate(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise ValueError(f"must be a number of calls per second greater than 0 (got {show(value)})")
        return value

    @field_validator("trace_wait_seconds")
    @classmethod
    def _wait_seconds(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a number of seconds, 0 or more (got {show(value)})")
        return value

    @field_validator("max_input_chars")
    @classmethod
    def _enough_chars(cls, value: int) -> int:
        if value < 100:
            raise ValueError(f"must be a whole number, 100 or more (got {show(value)})")
        return value

    @property
    def attempts(self) -> int:
        """LLM attempts per judge call: ``max_attempts`` if retrying, else 1."""
        return self.max_attempts if self.retry_on_failure else 1


MAX_SAMPLES = 10


def _check_samples(value: int) -> int:
    if not 1 <= value <= MAX_SAMPLES:
        raise ValueError(f"must be a whole number from 1 to {MAX_SAMPLES} (got {show(value)})")
    return value


class RubricLevelConfig(_Section):
    """One anchored level of a custom judge's ``rubric:``: ``{score: 0.75, description: "..."}``."""

    #: The level's score, 0..1.
    score: Score
    #: What earns this score, in one line.
    description: str

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must say what earns this score (a one-line description)")
        return value


class CustomJudgeConfig(_Section):
    """A judge defined in YAML: the design's ``make_genai_metric(...)`` as data.

    >>> CustomJudgeConfig(name="tone", grading_prompt="Rate {output} for {audience}").template_variables()
    ['output', 'audience']
    """

    #: The judge's name, as plans, gates and MLflow feedback refer to it.
    name: str
    #: What the judge measures, in a sentence (shown to the judge LLM).
    definition: str = ""
    #: The prompt template; `{output}`, `{input}`, `{context}` or any declared variable are filled from the target span.
    grading_prompt: str
    #: The variables the prompt uses; a variable the trace lacks is an error naming it (default: those found in the prompt).
    variables: list[str] | None = None
    #: The judge's LLM (default: `$TRACEJUDGE_JUDGE_MODEL`).
    model: str | None = None
    #: Extra request parameters for the LLM call (temperature, max_tokens, ...).
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: Figures to report over many results (as in MLflow's make_genai_metric).
    aggregations: list[Literal["mean", "variance", "min", "max", "median", "p90"]] = Field(default_factory=list)
    #: Whether a higher score is better (false: the score is inverted before thresholds apply).
    greater_is_better: bool = True
    #: Minimum passing score, 0..1 (default: the environment's threshold).
    threshold: Score | None = None
    #: What to check, what to ignore, how to treat empty or off-topic output (shown before the rubric).
    criteria: str = ""
    #: Anchored levels, e.g. five: 1.0, 0.75, 0.5, 0.25, 0.0, each with a one-line description.
    rubric: list[RubricLevelConfig] = Field(default_factory=list)
    #: `direct` or `logprobs` for this judge (default: `judges.execution.scoring`).
    scoring: Literal["direct", "logprobs"] | None = None
    #: Replies per call for this judge, averaged (default: `judges.execution.samples`).
    samples: _Count | None = None

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: int | None) -> int | None:
        return None if value is None else _check_samples(value)

    @field_validator("rubric")
    @classmethod
    def _rubric(cls, value: list[RubricLevelConfig]) -> list[RubricLevelConfig]:
        if value and not 2 <= len(value) <= 9:
            raise ValueError(f"needs 2 to 9 levels (got {len(value)})")
        seen: dict[float, int] = {}
        for index, level in enumerate(value):
            if level.score in seen:
                raise FieldProblem(
                    f"score {level.score:g} is used twice (also at [{seen[level.score]}]); levels need distinct scores",
                    loc=(index, "score"),
                )
            seen[level.score] = index
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _JUDGE_NAME.match(value):
            raise ValueError(
                "must start with a letter or '_' and use only letters, digits, '_', '.', '-' "
                f"(at most 100 characters) (got {show(value)})"
            )
        return value

    @field_validator("grading_prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty prompt that uses {variables} such as {output}")
        template_variables(value)  # raises on stray braces
        return value

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        seen: set[str] = set()
        for index, name in enumerate(value):
            if not _IDENTIFIER.match(name):
                raise FieldProblem(
                    f"must be a plain name (letters, digits, '_') (got {show(name)})", loc=(index,)
                )
            if name in seen:
                raise FieldProblem(f"variable {name!r} is listed twice", loc=(index,))
            seen.add(name)
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _nonblank(value, "model name like 'gpt-4o-mini' or 'openai:/gpt-4o-mini'")

    @field_validator("parameters")
    @classmethod
    def _json_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError("must hold only plain values (numbers, text, true/false, lists, mappings)") from None
        return value

    @model_validator(mode="after")
    def _declared(self) -> CustomJudgeConfig:
        if self.variables is not None:
            for name in self.template_variables():
                if name not in self.variables:
                    declared = ", ".join(self.variables) or "nothing"
                    raise FieldProblem(
                        f"grading_prompt uses {{{name}}} but variables declares only {declared}; "
                        f"add {name!r} to variables (or write {{{{{name}}}}} for literal braces)",
                        loc=("variables",),
                    )
        return self

    def template_variables(self) -> list[str]:
        """Placeholders in ``grading_prompt``, in order, each once."""
        return template_variables(self.grading_prompt)


class JudgesConfig(_Section):
    """``observability.mlflow.judges``: which judges run where, and how."""

    #: Which environment's default threshold applies (production 0.8, development 0.7, experimental 0.6).
    environment: Environment | None = None
    #: Judges run on every target: each node span and the workflow root.
    workflow_defaults: list[JudgeRef] = Field(default_factory=list)
    #: Judges for named nodes (by node id), replacing the defaults there.
    node_overrides: dict[str, list[JudgeRef]] = Field(default_factory=dict)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    #: Judges defined in this file (prompt templates with declared variables, rubric and threshold).
    custom: list[CustomJudgeConfig] = Field(default_factory=list)
    # Production controls (config/controls.py): which traces, pick-up, cost, budget, cache.
    sampling: "SamplingConfig" = Field(default_factory=lambda: SamplingConfig())
    filters: "FiltersConfig" = Field(default_factory=lambda: FiltersConfig())
    online: "OnlineConfig" = Field(default_factory=lambda: OnlineConfig())
    #: Prices per model, USD per 1M tokens (`{input: ..., output: ...}`), over the built-in price table.
    pricing: dict[str, "PriceEntry"] = Field(default_factory=dict)
    budget: "BudgetConfig" = Field(default_factory=lambda: BudgetConfig())
    cache: "CacheConfig" = Field(default_factory=lambda: CacheConfig())
    review: "ReviewConfig" = Field(default_factory=lambda: ReviewConfig())
    #: Conversations (traces sharing `mlflow.trace.session`): their judges, and when a session counts as idle.
    sessions: "SessionsConfig" = Field(default_factory=lambda: SessionsConfig())

    @field_validator("pricing", mode="before")
    @classmethod
    def _pricing(cls, value: Any) -> Any:
        from .controls import check_pricing

        return check_pricing(value)

    @field_validator("workflow_defaults")
    @classmethod
    def _defaults_unique(cls, value: list[JudgeRef]) -> list[JudgeRef]:
        no_repeated_judges(value)
        return value

    @field_validator("node_overrides")
    @classmethod
    def _overrides_unique(cls, value: dict[str, list[JudgeRef]]) -> dict[str, list[JudgeRef]]:
        for node, refs in value.items():
            if not node.strip():
                raise FieldProblem("node ids must be non-empty", loc=(node,))
            try:
                no_repeated_judges(refs)
            except FieldProblem as exc:
                raise FieldProblem(str(exc), loc=(node, *exc.loc)) from None
        return value

    @field_validator("custom")
    @classmethod
    def _custom_unique(cls, value: list[CustomJudgeConfig]) -> list[CustomJudgeConfig]:
        seen: dict[str, int] = {}
        for index, judge in enumerate(value):
            if judge.name in seen:
                raise FieldProblem(
                    f"duplicate custom judge name {judge.name!r} (also at custom[{seen[judge.name]}]); "
                    "names must be unique",
                    loc=(index, "name"),
                )
            seen[judge.name] = index
        return value


class QualityGateConfig(_Section):
    """``quality_gate``: block (or warn) when quality is below a threshold."""

    #: Turn the gate on: a caller waiting on the verdict is blocked (or warned) below the threshold.
    enabled: bool = False
    #: Minimum score the gating judges must reach, 0..1.
    threshold: Score = 0.80
    #: What a failing gate does to the caller: `block` raises QualityGateBlocked, `warn` logs, `ignore` nothing.
    action: Literal["block", "warn", "ignore"] = "block"
    #: The judges the gate looks at (default: every judge of the plan).
    judges: list[str] = Field(default_factory=list)
    #: A gating judge that failed (error): `error` makes the verdict an error, `ignore` leaves it out.
    on_error: Literal["error", "ignore"] = "error"

    @field_validator("judges")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _judge_name_list(value)


class QualityRetryConfig(_Section):
    """``quality_retry``: re-run a node whose quality is too low."""

    #: Re-run a node whose quality is below the threshold.
    enabled: bool = False
    #: Score below which a node is re-run, 0..1.
    threshold: Score = 0.70
    #: How many times a node may be re-run.
    max_retries: _Count = 2
    #: The judges whose scores decide a retry.
    judges: list[str] = Field(default_factory=list)

    @field_validator("max_retries")
    @classmethod
    def _retries(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be a whole number, 0 or more (got {show(value)})")
        return value

    @field_validator("judges")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return _judge_name_list(value)


class ArtifactsConfig(_Section):
    """``observability.mlflow.artifacts`` (design section 3.3): per-artifact switches.

    Only ``quality`` concerns tracejudge (our ``quality_assessment.json``); the
    others are the workflow tracker's and are accepted, not used by tracejudge.

    >>> ArtifactsConfig(quality=False).quality
    False
    """

    #: The workflow tracker's switch; accepted, not used by tracejudge.
    inputs: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    outputs: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    prompts: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    responses: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    tool_calls: bool | None = None
    #: Write `quality_assessment.json` and the run metrics (true wins over `artifact_level: minimal`).
    quality: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    state_snapshots: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    performance: bool | None = None
    #: The workflow tracker's switch; accepted, not used by tracejudge.
    visualizations: bool | None = None


def _judge_name_list(value: list[str]) -> list[str]:
    for index, name in enumerate(value):
        if not name.strip():
            raise FieldProblem("must be a non-empty judge name", loc=(index,))
    return [name.strip() for name in value]


class TraceJudgeConfig(_Section):
    """Everything tracejudge reads from a user's config; build it with ``load_config``.

    >>> TraceJudgeConfig().judging_enabled
    True
    >>> TraceJudgeConfig().environment_threshold("development")
    0.7
    """

    #: Observability on; `false` turns tracejudge off for this config.
    enabled: bool = True
    #: Run judges at all (`false`: traces are recorded but not judged).
    enable_judges: bool = True
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    quality_gate: QualityGateConfig = Field(default_factory=QualityGateConfig)
    quality_retry: QualityRetryConfig = Field(default_factory=QualityRetryConfig)
    quality_alerts: "QualityAlertsConfig" = Field(default_factory=lambda: _alerts_config())
    #: Quality-based prompt optimisation (`tracejudge optimize`): objective and strategy.
    optimization: "OptimizationConfig" = Field(default_factory=lambda: OptimizationConfig())
    #: Design section 10.3: ``false`` turns the quality gate and quality retry off (absent: as configured).
    quality_based_workflows: bool | None = None
    #: Design section 3.3: ``log_artifacts: false`` or ``artifact_level: minimal`` (or
    #: ``artifacts.quality: false``) skip ``quality_assessment.json`` and the run metrics (only the
    #: feedbacks and the status/score tags are written); ``artifacts.quality: true`` wins.
    log_artifacts: bool | None = None
    #: `minimal` writes only the feedbacks and the status/score tags; `standard` and `full` add the report and run metrics.
    artifact_level: Literal["minimal", "standard", "full"] | None = None
    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    #: Paths of keys the design defines that we accept but do not act on (set by the loader).
    unused_keys: list[str] = Field(default_factory=list)
    #: Keys that look like a misspelt section of ours (``quality_gates:``), as warnings (set by the loader).
    misspelt_keys: list[str] = Field(default_factory=list)
    source: str | None = None

    # Where each section sits in the user's document, for messages
    # (e.g. {"quality_gate": "quality_gate"}); set by the loader.
    _locations: dict[str, str] = PrivateAttr(default_factory=dict)

    DEFAULT_LOCATIONS: ClassVar[dict[str, str]] = {
        "enabled": "observability.mlflow.enabled",
        "enable_judges": "observability.mlflow.enable_judges",
        "judges": "observability.mlflow.judges",
        "quality_gate": "quality_gate",
        "quality_retry": "quality_retry",
        "quality_alerts": "quality_alerts",
        "optimization": "optimization",
        "quality_based_workflows": "observability.mlflow.quality_based_workflows",
        "log_artifacts": "observability.mlflow.log_artifacts",
        "artifact_level": "observability.mlflow.artifact_level",
        "artifacts": "observability.mlflow.artifacts",
    }

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> TraceJudgeConfig:  # type: ignore[override]
        """Validate like pydantic, but raise ConfigError (paths as in the model).

        >>> TraceJudgeConfig.model_validate({"quality_gate": {"threshold": 0.9}}).quality_gate.threshold
        0.9
        """
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            source = obj.get("source") if isinstance(obj, Mapping) else None
            raise from_validation_error(
                exc, source=source if isinstance(source, str) else "<dict>"
            ) from None

    @classmethod
    def from_sections(
        cls,
        data: Mapping[str, Any],
        *,
        source: str | None = None,
        locations: Mapping[str, str] | None = None,
    ) -> TraceJudgeConfig:
        """Validate our sections; errors name the paths given in ``locations``.

        >>> TraceJudgeConfig.from_sections({"enable_judges": False}, source="<dict>").judging_enabled
        False
        """
        try:
            config = super().model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, source=source, locations=locations) from None
        config.source = source
        config._locations = dict(locations or {})
        return config

    @property
    def judging_enabled(self) -> bool:
        """True when judges should run at all."""
        return self.enabled and self.enable_judges and self.judges.execution.mode != "disabled"

    @property
    def gate_enabled(self) -> bool:
        """``quality_gate.enabled``, unless ``quality_based_workflows: false`` turns it off.

        >>> TraceJudgeConfig.model_validate({"quality_gate": {"enabled": True}, "quality_based_workflows": False}).gate_enabled
        False
        """
        return self.quality_gate.enabled and self.quality_based_workflows is not False

    @property
    def retry_enabled(self) -> bool:
        """``quality_retry.enabled``, unless ``quality_based_workflows: false`` turns it off."""
        return self.quality_retry.enabled and self.quality_based_workflows is not False

    @property
    def write_report(self) -> bool:
        """Whether ``quality_assessment.json`` and the run metrics (the same numbers) are logged (design
        section 3.3, ``quality: true  # standard+``; default yes).

        >>> TraceJudgeConfig.model_validate({"artifact_level": "minimal"}).write_report
        False
        """
        if self.artifacts.quality is not None:
            return self.artifacts.quality
        if self.log_artifacts is False:
            return False
        return self.artifact_level != "minimal"

    @property
    def has_plan(self) -> bool:
        """Whether the config names any judge to run (else :data:`DEFAULT_ROOT_JUDGES` on the root)."""
        return bool(self.judges.workflow_defaults or self.judges.node_overrides)

    def environment_threshold(self, environment: str | None = None) -> float:
        """Minimum score for ``environment`` (the argument, else ``judges.environment``,
        else production).

        >>> TraceJudgeConfig().environment_threshold()
        0.8
        """
        name = environment or self.judges.environment or "production"
        try:
            return ENVIRONMENT_THRESHOLDS[name]
        except KeyError:
            raise ConfigError(
                f"must be one of {', '.join(ENVIRONMENT_THRESHOLDS)} (got {show(name)})",
                source=self.source,
                path="environment",
            ) from None

    def judge_names(self) -> set[str]:
        """Every judge name referenced: defaults, node overrides, gate and retry."""
        names = {ref.name for ref in self.judges.workflow_defaults}
        for refs in self.judges.node_overrides.values():
            names.update(ref.name for ref in refs)
        names.update(self.quality_gate.judges)
        names.update(self.quality_retry.judges)
        names.update(ref.name for ref in self.judges.sessions.judges)
        return names

    def location(self, section: str) -> str:
        """Where ``section`` sits in the user's document, e.g. ``'quality_gate'``."""
        return self._locations.get(section) or self.DEFAULT_LOCATIONS.get(section, section)


from .controls import BudgetConfig, CacheConfig, FiltersConfig, OnlineConfig, PriceEntry, SamplingConfig  # noqa: E402
from .review import ReviewConfig  # noqa: E402
from .optimization import OptimizationConfig  # noqa: E402

from .sessions import SessionsConfig  # noqa: E402

SessionsConfig.model_rebuild(_types_namespace={"JudgeRef": JudgeRef})
JudgesConfig.model_rebuild()


def _alerts_config() -> Any:
    return QualityAlertsConfig()

TraceJudgeConfig.model_rebuild()
