"""Find tracejudge's sections in a user's YAML and build a TraceJudgeConfig.

Users already have configs laid out as in the observability design document:
``observability.mlflow.{enabled, enable_judges, judges}`` and ``quality_gate`` /
``quality_retry`` at the root (or under ``observability`` /
``observability.mlflow``). Those layouts are read unchanged. Everything else in
the file is the user's workflow config and is left alone, except that a near
miss of one of our keys under ``observability.mlflow`` (``enable_judgs``) is
reported, since ignoring it would silently change what gets judged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from .errors import ConfigError, format_path, show, suggest
from .models import TraceJudgeConfig

__all__ = ["CONFIG_ENV_VAR", "load_config", "validate_judge_names", "dump_judge_config", "config_warnings", "log_unused_keys_once", "NOT_USED"]

CONFIG_ENV_VAR = "TRACEJUDGE_CONFIG"

_MLFLOW = "observability.mlflow"
_OUR_MLFLOW_KEYS = ("enabled", "enable_judges", "judges", "quality_gate", "quality_retry", "quality_alerts", "optimization")
#: Keys of the design that tracejudge acts on, beside its own sections.
_USED_MLFLOW_KEYS = ("quality_based_workflows", "log_artifacts", "artifact_level", "artifacts")
_MOVABLE = ("quality_gate", "quality_retry", "quality_alerts", "optimization")
#: The design's sections that may sit at the root, under observability or under observability.mlflow,
#: which tracejudge accepts but does not act on.
_UNUSED_MOVABLE: tuple[str, ...] = ()
NOT_USED = "accepted, not used by tracejudge"
# Keys the design document puts under observability.mlflow for other features;
# never mistaken for typos of ours.
_THEIR_MLFLOW_KEYS = frozenset(
    {
        "log_artifacts",
        "artifact_level",
        "artifacts",
        "cost_management",
        "use_mlflow_39_tracing",
        "async_logging",
        "enhanced_metrics",
        "tool_call_tracking",
        "cost_optimization_suggestions",
        "enable_prompt_registry",
        "quality_based_workflows",
        "budget_management",
    }
)


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    known_judges: Iterable[str] | None = None,
) -> TraceJudgeConfig:
    """Read a user's config (file path, mapping, or ``$TRACEJUDGE_CONFIG``; else defaults).

    With ``known_judges``, every judge name the config refers to must be known
    (or defined under ``judges.custom``).

    >>> load_config({"quality_gate": {"enabled": True, "threshold": 0.9}}).quality_gate.threshold
    0.9
    >>> load_config({}).judging_enabled
    True
    """
    if source is None:
        env_path = os.environ.get(CONFIG_ENV_VAR, "").strip()
        if not env_path:
            return TraceJudgeConfig()
        source = env_path
    if isinstance(source, Mapping):
        label, document = "<dict>", source
    else:
        label = os.fspath(source)
        document = _read_yaml(Path(label), label)
    data, locations = _extract(document, label)
    config = TraceJudgeConfig.from_sections(data, source=label, locations=locations)
    if known_judges is not None:
        validate_judge_names(config, known_judges)
    return config


def _read_yaml(path: Path, label: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=label) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML file", source=label) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", source=label) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=label) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context}"
            if exc.context_mark is not None:
                problem += f" started at line {exc.context_mark.line + 1}"
            problem += ")"
        if mark is None:
            raise ConfigError(f"invalid YAML: {problem}", source=label) from None
        line, column = mark.line + 1, mark.column + 1
        raise ConfigError(
            f"invalid YAML at line {line}, column {column}: {problem}",
            source=label,
            line=line,
            column=column,
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", source=label) from None


def _mapping_at(parent: Mapping[str, Any], key: str, path: str, label: str) -> Mapping[str, Any]:
    """``parent[key]`` as a mapping ({} when absent or empty)."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"must be a mapping of keys to values (got {show(value)})", source=label, path=path)
    return value


def _extract(document: Any, label: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Pull our sections out of the user's document.

    Returns the data for TraceJudgeConfig and, for each section, its path in
    the document (used in messages).
    """
    if document is None:
        return {}, {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"the top level must be a mapping of keys to values (got {show(document)})", source=label
        )
    observability = _mapping_at(document, "observability", "observability", label)
    mlflow = _mapping_at(observability, "mlflow", _MLFLOW, label)
    _check_mlflow_typos(mlflow, label)

    data: dict[str, Any] = {}
    locations: dict[str, str] = {}
    for key in ("enabled", "enable_judges", "judges", *_USED_MLFLOW_KEYS):
        if key in mlflow and mlflow[key] is not None:
            data[key] = mlflow[key]
            locations[key] = f"{_MLFLOW}.{key}"
    # Every other key under observability.mlflow is accepted (it may serve the workflow's own tracker) and reported.
    unused = [f"{_MLFLOW}.{key}" for key in mlflow if key not in _OUR_MLFLOW_KEYS and key not in _USED_MLFLOW_KEYS]
    artifacts = mlflow.get("artifacts")
    if isinstance(artifacts, Mapping):
        unused += [f"{_MLFLOW}.artifacts.{key}" for key in artifacts if key != "quality"]
    for key in _UNUSED_MOVABLE:
        unused += [
            path
            for path, container in ((key, document), (f"observability.{key}", observability), (f"{_MLFLOW}.{key}", mlflow))
            if key in container
        ]
    if unused:
        data["unused_keys"] = unused
    misspelt = _near_misses(document, observability)
    if misspelt:
        data["misspelt_keys"] = misspelt
    for key in _MOVABLE:
        places = [
            (path, container[key])
            for path, container in ((key, document), (f"observability.{key}", observability), (f"{_MLFLOW}.{key}", mlflow))
            if key in container and container[key] is not None
        ]
        if len(places) > 1:
            raise ConfigError(
                f"{key} is given in two places ({places[0][0]} and {places[1][0]}); keep only one",
                source=label,
                path=places[1][0],
            )
        if places:
            locations[key], data[key] = places[0]
    return data, locations


def _near_misses(document: Mapping[Any, Any], observability: Mapping[Any, Any]) -> list[str]:
    """Keys that look like a misspelt section of ours (``quality_gates:``): ignored as the workflow's own, which
    silently turns the gate or the alerts off, so they are warned about (other keys of a workflow config stay allowed)."""
    found = []
    for prefix, container, ours in (
        ("", document, ("observability", *_MOVABLE)),
        ("observability.", observability, ("mlflow", *_MOVABLE)),
    ):  # (under observability.mlflow a near miss is an error: _check_mlflow_typos)
        for key in container:
            if not isinstance(key, str) or key in ours or key in _UNUSED_MOVABLE or key in _OUR_MLFLOW_KEYS:
                continue
            close = suggest(key, ours, cutoff=0.8)
            if close is not None:
                found.append(f"{prefix}{key}: not a tracejudge section, so it is ignored; did you mean {prefix}{close}?")
    return found


def _check_mlflow_typos(mlflow: Mapping[Any, Any], label: str) -> None:
    for key in mlflow:
        if not isinstance(key, str) or key in _OUR_MLFLOW_KEYS or key in _THEIR_MLFLOW_KEYS:
            continue
        close = suggest(key, _OUR_MLFLOW_KEYS, cutoff=0.8)
        if close is not None:
            raise ConfigError(
                f"unknown key {key!r}; did you mean {close!r}?", source=label, path=f"{_MLFLOW}.{key}"
            )


def validate_judge_names(config: TraceJudgeConfig, known: Iterable[str]) -> None:
    """Check every referenced judge is in ``known`` or defined under ``judges.custom``.

    Raises ConfigError at the reference's path, with a did-you-mean.

    >>> validate_judge_names(load_config({"quality_gate": {"judges": ["relevance"]}}), ["relevance"])
    """
    allowed = set(known) | {judge.name for judge in config.judges.custom}
    judges = config.location("judges")
    references: list[tuple[str, str]] = []
    for index, ref in enumerate(config.judges.workflow_defaults):
        references.append((ref.name, f"{judges}.workflow_defaults{format_path([index])}.name"))
    for node, refs in config.judges.node_overrides.items():
        for index, ref in enumerate(refs):
            references.append((ref.name, f"{judges}.node_overrides.{node}{format_path([index])}.name"))
    for index, ref in enumerate(config.judges.sessions.judges):
        references.append((ref.name, f"{judges}.sessions.judges{format_path([index])}.name"))
    for section, names in (
        ("quality_gate", config.quality_gate.judges),
        ("quality_retry", config.quality_retry.judges),
    ):
        for index, name in enumerate(names):
            references.append((name, f"{config.location(section)}.judges{format_path([index])}"))
    for name, path in references:
        if name in allowed:
            continue
        close = suggest(name, allowed)
        listing = ", ".join(sorted(allowed)) or "none"
        problem = (
            f"unknown judge {name!r}; did you mean {close!r}? Known judges: {listing}"
            if close
            else f"unknown judge {name!r}; known judges: {listing}"
        )
        raise ConfigError(problem, source=config.source, path=path)


def config_warnings(config: TraceJudgeConfig) -> list[str]:
    """What in a valid config will not do what it seems to: keys accepted but not used, custom
    judges no target uses, ``quality_gate``/``quality_retry`` judges that run on no target.

    >>> config_warnings(load_config({"observability": {"mlflow": {"async_logging": True}}}))
    ['observability.mlflow.async_logging: accepted, not used by tracejudge']
    """
    warnings = [*config.misspelt_keys, *(f"{path}: {NOT_USED}" for path in config.unused_keys)]
    judges = config.location("judges")
    planned = {ref.name for ref in config.judges.workflow_defaults}
    for refs in config.judges.node_overrides.values():
        planned.update(ref.name for ref in refs)
    if not config.has_plan:
        from .models import DEFAULT_ROOT_JUDGES

        planned.update(DEFAULT_ROOT_JUDGES)
    in_sessions = {ref.name for ref in config.judges.sessions.judges}
    for index, judge in enumerate(config.judges.custom):
        if judge.name not in planned and judge.name not in in_sessions:
            warnings.append(
                f"{judges}.custom[{index}] ({judge.name}): no target uses this judge; "
                f"add it to {judges}.workflow_defaults or a node under {judges}.node_overrides"
            )
    for section, names, effect in (
        ("quality_gate", config.quality_gate.judges if config.gate_enabled else [], "every verdict will be error (GATE_JUDGE_NOT_RUN)"),
        ("quality_retry", config.quality_retry.judges if config.retry_enabled else [], "it can never ask for a retry"),
    ):
        for index, name in enumerate(names):
            if name not in planned:
                warnings.append(
                    f"{config.location(section)}.judges{format_path([index])} ({name}): this judge runs on no target, "
                    f"so {effect}; add it to {judges}.workflow_defaults or a node under {judges}.node_overrides"
                )
    return warnings


def dump_judge_config(config: TraceJudgeConfig) -> dict[str, Any]:
    """A JSON-safe dict of ``config`` (without ``source``) for task payloads.

    ``TraceJudgeConfig.model_validate`` reads it back.

    >>> cfg = load_config({"quality_gate": {"enabled": True}})
    >>> TraceJudgeConfig.model_validate(dump_judge_config(cfg)).quality_gate.enabled
    True
    """
    return config.model_dump(mode="json", exclude={"source"})


_reported_unused: set[tuple[str | None, str]] = set()


def log_unused_keys_once(config: TraceJudgeConfig, logger: Any) -> None:
    """Log each accepted-but-unused or misspelt key of ``config`` once per process (workers call this per task)."""
    for message in [*config.misspelt_keys, *(f"{path}: {NOT_USED}" for path in config.unused_keys)]:
        marker = (config.source, message)
        if marker in _reported_unused:
            continue
        _reported_unused.add(marker)
        logger.warning("config %s: %s", config.source or "<payload>", message)
