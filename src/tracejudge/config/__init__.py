"""tracejudge's configuration: what users write (YAML) and where to connect (environment).

``load_config()`` reads the design document's layout unchanged
(``observability.mlflow.judges``, ``quality_gate``, ``quality_retry``) into a
``TraceJudgeConfig``; ``Settings.from_env()`` reads connection settings. Every
problem is a ``ConfigError`` naming the file, the path inside it and the fix.
This subpackage imports nothing else from tracejudge.
"""

from .errors import ConfigError
from .loader import (
    CONFIG_ENV_VAR,
    NOT_USED,
    config_warnings,
    dump_judge_config,
    load_config,
    log_unused_keys_once,
    validate_judge_names,
)
from .models import (
    DEFAULT_ROOT_JUDGES,
    ENVIRONMENT_THRESHOLDS,
    ArtifactsConfig,
    Environment,
    CustomJudgeConfig,
    ExecutionConfig,
    JudgeRef,
    JudgesConfig,
    QualityGateConfig,
    QualityRetryConfig,
    Score,
    TraceJudgeConfig,
    template_variables,
)
from .controls import BudgetConfig, CacheConfig, FiltersConfig, OnlineConfig, PriceEntry, SamplingConfig
from .sessions import SessionsConfig
from .settings import Settings, normalize_model, redact_url

__all__ = [
    "SessionsConfig",
    "BudgetConfig",
    "CacheConfig",
    "FiltersConfig",
    "OnlineConfig",
    "PriceEntry",
    "SamplingConfig",
    "CONFIG_ENV_VAR",
    "ENVIRONMENT_THRESHOLDS",
    "ConfigError",
    "NOT_USED",
    "config_warnings",
    "log_unused_keys_once",
    "ArtifactsConfig",
    "DEFAULT_ROOT_JUDGES",
    "Environment",
    "CustomJudgeConfig",
    "ExecutionConfig",
    "JudgeRef",
    "JudgesConfig",
    "QualityGateConfig",
    "QualityRetryConfig",
    "Score",
    "Settings",
    "TraceJudgeConfig",
    "dump_judge_config",
    "load_config",
    "normalize_model",
    "redact_url",
    "template_variables",
    "validate_judge_names",
]
