"""Tests for tracejudge.config: the design document's layouts, error messages, settings."""

from __future__ import annotations

import ast
import json
import pickle
import textwrap
from pathlib import Path

import pytest

from tracejudge.config import (
    config_warnings,
    ENVIRONMENT_THRESHOLDS,
    ConfigError,
    CustomJudgeConfig,
    ExecutionConfig,
    JudgeRef,
    Settings,
    TraceJudgeConfig,
    dump_judge_config,
    load_config,
    normalize_model,
    redact_url,
    template_variables,
    validate_judge_names,
)

FIXTURES = Path(__file__).parent / "fixtures"
DESIGN = FIXTURES / "design"
DESIGN_DOC = Path("/work/shared/reference/observability-design.md")
BUILTINS = [
    "relevance",
    "coherence",
    "groundedness",
    "harmfulness",
    "answer_correctness",
    "technical_accuracy",
    "citation_quality",
    "completeness",
]


def write(tmp_path: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str, **kwargs) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    err = info.value
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: ")
    return err


# --- the design document's blocks, unchanged ---------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in DESIGN.glob("*.yaml")))
def test_every_design_block_parses(name: str) -> None:
    config = load_config(DESIGN / name)
    assert config.source == str(DESIGN / name)


@pytest.mark.skipif(not DESIGN_DOC.exists(), reason="design document not available")
def test_fixtures_are_verbatim_copies_of_the_design_blocks() -> None:
    text = DESIGN_DOC.read_text(encoding="utf-8")
    for path in DESIGN.glob("*.yaml"):
        assert "```yaml\n" + path.read_text(encoding="utf-8") + "```" in text, path.name


def test_judge_configuration_block_section_4_4() -> None:
    config = load_config(DESIGN / "judges_config.yaml")
    assert config.enabled and config.enable_judges and config.judging_enabled
    defaults = config.judges.workflow_defaults
    assert [(j.name, j.threshold, j.model) for j in defaults] == [
        ("harmfulness", 0.8, "openai:/gpt-4o-mini"),
        ("coherence", 0.75, "openai:/gpt-4o-mini"),
    ]
    research = config.judges.node_overrides["research"]
    assert [(j.name, j.threshold) for j in research] == [
        ("relevance", 0.8),
        ("groundedness", 0.85),
        ("citation_quality", 0.75),
    ]
    assert [j.name for j in config.judges.node_overrides["write"]] == [
        "coherence",
        "technical_accuracy",
        "completeness",
    ]
    execution = config.judges.execution
    assert execution.mode == "async"
    assert execution.timeout_seconds == 30
    assert execution.retry_on_failure and execution.log_rationale
    assert execution.attempts == 3
    assert config.quality_gate.enabled is False
    assert config.judge_names() <= set(BUILTINS)
    validate_judge_names(config, BUILTINS)


def test_quality_gate_block_section_5_4() -> None:
    config = load_config(DESIGN / "quality_gate.yaml")
    gate = config.quality_gate
    assert gate.enabled and gate.threshold == 0.80 and gate.action == "block"
    assert gate.judges == ["coherence", "technical_accuracy", "harmfulness"]
    assert gate.on_error == "error"
    assert config.location("quality_gate") == "quality_gate"


def test_quality_retry_block_section_5_4() -> None:
    retry = load_config(DESIGN / "quality_retry.yaml").quality_retry
    assert retry.enabled and retry.threshold == 0.70 and retry.max_retries == 2
    assert retry.judges == ["relevance", "completeness"]


def test_optimization_block_is_read_and_used_by_tracejudge_optimize() -> None:
    config = load_config(DESIGN / "optimization.yaml")
    assert config.optimization.strategy == "BootstrapFewShot" and config.optimization.metric == "quality_score"
    assert config.unused_keys == [] and config_warnings(config) == []
    with pytest.raises(ConfigError, match="unknown strategy 'BootstrapFewShoot'; did you mean 'BootstrapFewShot'"):
        load_config({"optimization": {"strategy": "BootstrapFewShoot"}})


def test_feature_flags_turn_judges_off() -> None:
    config = load_config(DESIGN / "feature_flags.yaml")
    assert config.enabled is True
    assert config.enable_judges is False
    assert config.judging_enabled is False


def test_artifact_config_keeps_defaults() -> None:
    config = load_config(DESIGN / "artifact_config.yaml")
    assert config.enabled and config.enable_judges and config.judges.workflow_defaults == []


# --- a complete user config ----------------------------------------------------


def test_full_config() -> None:
    config = load_config(FIXTURES / "full_config.yaml", known_judges=BUILTINS)
    assert config.judges.environment == "production"
    assert config.environment_threshold() == 0.80
    assert config.judges.workflow_defaults[1] == JudgeRef(name="coherence")
    assert [j.name for j in config.judges.node_overrides["write"]][-1] == "audience_fit"
    execution = config.judges.execution
    assert (execution.timeout_seconds, execution.max_attempts, execution.concurrency) == (20, 4, 16)
    assert (execution.max_input_chars, execution.trace_wait_seconds, execution.overall_timeout_seconds) == (
        12000,
        45,
        240,
    )
    accuracy, audience = config.judges.custom
    assert accuracy.name == "technical_accuracy"
    assert accuracy.template_variables() == ["output", "topic"]
    assert accuracy.parameters == {"temperature": 0.0}
    assert accuracy.aggregations == ["mean", "variance"]
    assert audience.template_variables() == ["audience", "output"]  # {{...}} is literal
    assert audience.threshold == 0.7
    assert config.quality_gate.enabled and config.location("quality_gate") == "quality_gate"
    assert config.quality_retry.enabled
    assert config.location("quality_retry") == "observability.mlflow.quality_retry"


def test_unrelated_keys_are_left_alone(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            nodes: [{id: research, prompt: "x"}]
            workflow: {name: w}
            optimization: {enabled: true, strategy: BootstrapFewShot}
            observability:
              tracing_backend: whatever
              mlflow:
                cost_management: {budget_alerts: {action: block}}
                artifacts: {inputs: true}
                artifact_level: full
                some_future_flag: 3
                enabled_features: [a, b]
                enable_judges: true
            """,
        )
    )
    # nothing outside observability.mlflow is ours; under it, what we do not act on is reported, not dropped silently
    assert config.judges == TraceJudgeConfig().judges and config.artifact_level == "full" and config.write_report
    assert config.unused_keys == [
        "observability.mlflow.cost_management",
        "observability.mlflow.some_future_flag",
        "observability.mlflow.enabled_features",
        "observability.mlflow.artifacts.inputs",
    ]
    assert config.optimization.strategy == "BootstrapFewShot"  # the design's block, read where users put it


def test_empty_document_and_no_source_give_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_config(write(tmp_path, "")).judging_enabled
    assert load_config(write(tmp_path, "# only a comment\n")).enable_judges is True
    monkeypatch.delenv("TRACEJUDGE_CONFIG", raising=False)
    assert load_config() == TraceJudgeConfig()


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "quality_gate: {enabled: true}\n")
    monkeypatch.setenv("TRACEJUDGE_CONFIG", str(path))
    config = load_config()
    assert config.quality_gate.enabled and config.source == str(path)


def test_mapping_input() -> None:
    config = load_config({"observability": {"mlflow": {"judges": {"workflow_defaults": ["relevance"]}}}})
    assert config.source == "<dict>"
    assert config.judges.workflow_defaults == [JudgeRef(name="relevance")]
    with pytest.raises(ConfigError) as info:
        load_config({"quality_gate": {"threshold": 2}})
    assert str(info.value) == "<dict>: quality_gate.threshold: must be between 0 and 1 (got 2)"


def test_string_judge_entries(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            observability:
              mlflow:
                judges:
                  workflow_defaults: [harmfulness, {name: coherence, threshold: 0.9}]
                  node_overrides:
                    research:
                      - relevance
            """,
        )
    )
    assert config.judges.workflow_defaults == [
        JudgeRef(name="harmfulness"),
        JudgeRef(name="coherence", threshold=0.9),
    ]
    assert config.judges.node_overrides["research"] == [JudgeRef(name="relevance")]


def test_empty_keys_mean_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
            observability:
              mlflow:
                judges:
                  workflow_defaults:
                    # - name: relevance
                  execution:
                    mode:
            quality_gate:
              threshold:
            """,
        )
    )
    assert config.judges.workflow_defaults == []
    assert config.judges.execution.mode == "async"
    assert config.quality_gate.threshold == 0.80


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("quality_gate: {enabled: true, threshold: 0.9}\n", "quality_gate"),
        ("observability: {quality_gate: {enabled: true, threshold: 0.9}}\n", "observability.quality_gate"),
        (
            "observability: {mlflow: {quality_gate: {enabled: true, threshold: 0.9}}}\n",
            "observability.mlflow.quality_gate",
        ),
    ],
)
def test_gate_placements(tmp_path: Path, text: str, location: str) -> None:
    config = load_config(write(tmp_path, text))
    assert config.quality_gate.enabled and config.quality_gate.threshold == 0.9
    assert config.location("quality_gate") == location


def test_gate_errors_use_the_users_path(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_gate: {threshold: 1.5}\n")
    assert err.path == "quality_gate.threshold"
    err = error_for(tmp_path, "observability: {mlflow: {quality_gate: {threshold: 1.5}}}\n")
    assert err.path == "observability.mlflow.quality_gate.threshold"


def test_gate_in_two_places(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        quality_gate: {enabled: true}
        observability:
          mlflow:
            quality_gate: {enabled: false}
        """,
    )
    assert "quality_gate" in err.problem and "observability.mlflow.quality_gate" in err.problem
    assert err.path == "observability.mlflow.quality_gate"


# --- bad input gives a specific message -----------------------------------------


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """\
        observability:
          mlflow:
            judges:
              workflow_defaults:
                - name: relevance
               threshold: 0.8
        """,
    )
    assert err.line == 6 and err.column is not None
    assert "invalid YAML at line 6, column" in err.problem
    assert "expected" in err.problem  # the parser's own words


def test_unclosed_bracket(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_gate:\n  judges: [a, b\n")
    assert err.line is not None and "invalid YAML at line" in str(err)


def test_misspelled_key_did_you_mean(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              node_overrides:
                research:
                  - name: relevance
                  - name: groundedness
                    threshhold: 0.85
        """,
    )
    assert err.path == "observability.mlflow.judges.node_overrides.research[1].threshhold"
    assert err.problem == "unknown key 'threshhold'; did you mean 'threshold'?"


def test_unknown_key_lists_allowed(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_retry: {enabled: true, banana: 3}\n")
    assert err.path == "quality_retry.banana"
    assert "allowed keys: enabled, threshold, max_retries, judges" in err.problem


def test_threshold_out_of_range(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              node_overrides:
                research:
                  - name: relevance
                  - name: groundedness
                    threshold: 1.5
        """,
    )
    assert err.path == "observability.mlflow.judges.node_overrides.research[1].threshold"
    assert err.problem == "must be between 0 and 1 (got 1.5)"


def test_unknown_mode(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability: {mlflow: {judges: {execution: {mode: fast}}}}\n")
    assert err.path == "observability.mlflow.judges.execution.mode"
    assert err.problem == "must be one of async, sync, disabled (got 'fast')"


def test_mode_off_is_explained(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability: {mlflow: {judges: {execution: {mode: off}}}}\n")
    assert "(got false)" in err.problem and "YAML reads off/no as false" in err.problem


def test_not_a_number(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_gate: {threshold: high}\n")
    assert err.problem == "must be a number (got 'high')"
    err = error_for(tmp_path, "quality_gate: {threshold: true}\n")
    assert err.problem == "must be a number (got true)"


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("timeout_seconds", 0, "greater than 0 (got 0)"),
        ("overall_timeout_seconds", -1, "greater than 0 (got -1)"),
        ("trace_wait_seconds", -0.5, "0 or more (got -0.5)"),
        ("max_attempts", 0, "1 or more (got 0)"),
        ("concurrency", 0, "1 or more (got 0)"),
        ("max_input_chars", 50, "100 or more (got 50)"),
        ("max_attempts", 2.5, "must be a whole number (got 2.5)"),
    ],
)
def test_execution_limits(tmp_path: Path, key: str, value: object, words: str) -> None:
    err = error_for(tmp_path, f"observability: {{mlflow: {{judges: {{execution: {{{key}: {value}}}}}}}}}\n")
    assert err.path == f"observability.mlflow.judges.execution.{key}"
    assert words in err.problem


def test_unknown_judge_with_known_judges(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              node_overrides:
                research:
                  - relevance
                  - groundedness
                  - name: citaton_quality
        """,
        known_judges=BUILTINS,
    )
    assert err.path == "observability.mlflow.judges.node_overrides.research[2].name"
    assert err.problem.startswith("unknown judge 'citaton_quality'; did you mean 'citation_quality'? Known judges: ")
    assert "answer_correctness" in err.problem


def test_unknown_gate_judge_path(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_gate: {judges: [coherence, harmfulnes]}\n", known_judges=BUILTINS)
    assert err.path == "quality_gate.judges[1]"
    assert "did you mean 'harmfulness'?" in err.problem


def test_custom_judges_count_as_known(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        quality_retry: {judges: [tone]}
        observability:
          mlflow:
            judges:
              custom:
                - {name: tone, grading_prompt: "Rate the tone of {output}"}
        """,
    )
    assert load_config(path, known_judges=[]).judges.custom[0].name == "tone"
    with pytest.raises(ConfigError, match="unknown judge 'tone'"):
        validate_judge_names(load_config(path).model_copy(update={"judges": TraceJudgeConfig().judges}), [])


def test_validate_judge_names_on_a_built_config() -> None:
    config = TraceJudgeConfig.model_validate({"quality_retry": {"judges": ["relevence"]}})
    with pytest.raises(ConfigError) as info:
        validate_judge_names(config, BUILTINS)
    assert info.value.path == "quality_retry.judges[0]"
    assert "did you mean 'relevance'?" in info.value.problem


def test_custom_judge_undeclared_variable(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              custom:
                - name: technical_accuracy
                  grading_prompt: "Content: {output}\\nTopic: {topic}"
                  variables: [output]
        """,
    )
    assert err.path == "observability.mlflow.judges.custom[0].variables"
    assert "{topic}" in err.problem and "add 'topic' to variables" in err.problem


def test_custom_judge_stray_brace(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              custom:
                - name: j
                  grading_prompt: 'Reply with {"score": 1}'
        """,
    )
    assert err.path == "observability.mlflow.judges.custom[0].grading_prompt"
    assert "'{{'" in err.problem


def test_custom_judge_bad_name_and_missing_prompt(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability: {mlflow: {judges: {custom: [{name: 'my judge', grading_prompt: x}]}}}\n")
    assert err.path == "observability.mlflow.judges.custom[0].name"
    assert "must start with a letter" in err.problem
    err = error_for(tmp_path, "observability: {mlflow: {judges: {custom: [{name: j}]}}}\n")
    assert err.path == "observability.mlflow.judges.custom[0].grading_prompt"
    assert err.problem == "is required"


def test_duplicate_custom_names(tmp_path: Path) -> None:
    err = error_for(
        tmp_path,
        """
        observability:
          mlflow:
            judges:
              custom:
                - {name: tone, grading_prompt: "a {output}"}
                - {name: style, grading_prompt: "b {output}"}
                - {name: tone, grading_prompt: "c {output}"}
        """,
    )
    assert err.path == "observability.mlflow.judges.custom[2].name"
    assert "duplicate custom judge name 'tone'" in err.problem and "custom[0]" in err.problem


def test_custom_judge_may_shadow_a_builtin() -> None:
    config = load_config(
        {"observability": {"mlflow": {"judges": {"custom": [{"name": "relevance", "grading_prompt": "{output}"}]}}}}
    )
    assert config.judges.custom[0].name == "relevance"


def test_duplicate_judge_in_one_list(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability: {mlflow: {judges: {workflow_defaults: [coherence, coherence]}}}\n")
    assert err.path == "observability.mlflow.judges.workflow_defaults[1].name"
    assert "listed twice" in err.problem


def test_enable_judges_typo_under_mlflow(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability:\n  mlflow:\n    enabled: true\n    enable_judgs: true\n")
    assert err.path == "observability.mlflow.enable_judgs"
    assert err.problem == "unknown key 'enable_judgs'; did you mean 'enable_judges'?"


def test_top_level_list(tmp_path: Path) -> None:
    err = error_for(tmp_path, "- quality_gate\n- judges\n")
    assert err.path is None
    assert "top level must be a mapping" in err.problem and "(got a list)" in err.problem


def test_mlflow_section_not_a_mapping(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability:\n  mlflow: yes\n")
    assert err.path == "observability.mlflow"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: config file not found"


def test_several_problems_are_all_kept(tmp_path: Path) -> None:
    err = error_for(tmp_path, "quality_gate: {threshold: 2, action: stop}\n")
    assert err.path == "quality_gate.threshold"
    assert [e.path for e in err.additional] == ["quality_gate.action"]


def test_config_error_survives_pickle_and_rebuild() -> None:
    err = ConfigError("must be between 0 and 1 (got 2)", source="a.yaml", path="quality_gate.threshold")
    again = pickle.loads(pickle.dumps(err))
    assert (again.source, again.path, str(again)) == (err.source, err.path, str(err))
    assert str(ConfigError(*err.args)) == str(err)  # how Celery rebuilds exceptions
    assert isinstance(err, ValueError)


# --- models ---------------------------------------------------------------------


def test_dump_round_trip() -> None:
    config = load_config(FIXTURES / "full_config.yaml")
    data = dump_judge_config(config)
    assert "source" not in data
    again = TraceJudgeConfig.model_validate(json.loads(json.dumps(data)))
    assert dump_judge_config(again) == data
    assert again.judges.custom == config.judges.custom


def test_model_validate_raises_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        TraceJudgeConfig.model_validate({"judges": {"execution": {"concurrency": 0}}})
    assert str(info.value) == "<dict>: judges.execution.concurrency: must be a whole number, 1 or more (got 0)"


def test_environment_thresholds() -> None:
    assert ENVIRONMENT_THRESHOLDS == {"production": 0.80, "development": 0.70, "experimental": 0.60}
    config = TraceJudgeConfig.model_validate({"judges": {"environment": "experimental"}})
    assert config.environment_threshold() == 0.60
    assert config.environment_threshold("development") == 0.70
    assert TraceJudgeConfig().environment_threshold() == 0.80
    with pytest.raises(ConfigError):
        config.environment_threshold("staging")


def test_judging_enabled_switches() -> None:
    assert TraceJudgeConfig().judging_enabled
    assert not TraceJudgeConfig(enabled=False).judging_enabled
    assert not TraceJudgeConfig(enable_judges=False).judging_enabled
    disabled = TraceJudgeConfig.model_validate({"judges": {"execution": {"mode": "disabled"}}})
    assert not disabled.judging_enabled


def test_attempts() -> None:
    assert ExecutionConfig(max_attempts=5).attempts == 5
    assert ExecutionConfig(max_attempts=5, retry_on_failure=False).attempts == 1


def test_judge_names() -> None:
    config = load_config(FIXTURES / "full_config.yaml")
    assert config.judge_names() == {
        "harmfulness",
        "coherence",
        "relevance",
        "groundedness",
        "citation_quality",
        "technical_accuracy",
        "completeness",
        "audience_fit",
    }


def test_template_variables() -> None:
    assert template_variables("{a} {b} {a} {{c}} }}") == ["a", "b"]
    judge = CustomJudgeConfig(name="j", grading_prompt="{output}", variables=["output", "extra"])
    assert judge.template_variables() == ["output"]
    with pytest.raises(ValueError, match="stray"):
        template_variables("{not closed")


# --- settings -------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.llm_base_url is None and settings.llm_api_key is None
    assert settings.default_model == "gpt-4o-mini"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.result_backend_url == settings.redis_url
    assert settings.environment is None and settings.config_path is None


def test_settings_precedence() -> None:
    env = {
        "TRACEJUDGE_LLM_BASE_URL": "http://vllm:8000/v1",
        "OPENAI_BASE_URL": "https://other.example/v1",
        "OPENAI_API_BASE": "https://older.example/v1",
        "TRACEJUDGE_LLM_API_KEY": "sk-tracejudge",
        "OPENAI_API_KEY": "sk-openai",
        "TRACEJUDGE_JUDGE_MODEL": "gpt-4o",
        "TRACEJUDGE_REDIS_URL": "redis://:pw@cache:6379/1",
        "TRACEJUDGE_RESULT_BACKEND": "redis://cache:6379/2",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "TRACEJUDGE_ENVIRONMENT": "Development",
        "TRACEJUDGE_CONFIG": "/etc/workflow.yaml",
    }
    settings = Settings.from_env(env)
    assert settings.llm_base_url == "http://vllm:8000/v1"
    assert settings.require_llm_key() == "sk-tracejudge"
    assert settings.default_model == "gpt-4o"
    assert settings.result_backend_url == "redis://cache:6379/2"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.environment == "development"
    assert settings.config_path == "/etc/workflow.yaml"

    fallback = Settings.from_env(
        {"OPENAI_BASE_URL": "", "OPENAI_API_BASE": "https://older.example/v1", "OPENAI_API_KEY": "sk-openai"}
    )
    assert fallback.llm_base_url == "https://older.example/v1"
    assert fallback.require_llm_key() == "sk-openai"


def test_settings_bad_environment() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TRACEJUDGE_ENVIRONMENT": "prod"})
    assert info.value.path == "TRACEJUDGE_ENVIRONMENT" and info.value.source == "environment"


@pytest.mark.parametrize(
    "url", ["http://localhost:11434/v1", "http://127.0.0.1:8000/v1", "http://[::1]:8000/v1", "http://127.0.0.2/v1"]
)
def test_loopback_needs_no_key(url: str) -> None:
    assert Settings.from_env({"TRACEJUDGE_LLM_BASE_URL": url}).require_llm_key() == "sk-no-key-needed"


@pytest.mark.parametrize(
    ("env", "host"),
    [({}, "api.openai.com"), ({"OPENAI_BASE_URL": "https://llm.example.com/v1"}, "llm.example.com")],
)
def test_real_endpoint_needs_a_key(env: dict[str, str], host: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env).require_llm_key()
    err = info.value
    assert (err.source, err.path) == ("environment", "TRACEJUDGE_LLM_API_KEY")
    assert err.problem == f"no API key for {host}: set TRACEJUDGE_LLM_API_KEY (or OPENAI_API_KEY)"


def test_secrets_never_shown() -> None:
    settings = Settings.from_env(
        {
            "TRACEJUDGE_LLM_API_KEY": "sk-very-secret",
            "TRACEJUDGE_REDIS_URL": "redis://user:redispw@cache:6379/0",
            "MLFLOW_TRACKING_URI": "postgresql://mlflow:dbpw@db/mlflow",
        }
    )
    for text in (repr(settings), str(settings), json.dumps(settings.redacted())):
        assert "sk-very-secret" not in text
        assert "redispw" not in text
        assert "dbpw" not in text
    redacted = settings.redacted()
    assert redacted["llm_api_key"] == "***"
    assert redacted["redis_url"] == "redis://user:***@cache:6379/0"
    assert redacted["result_backend_url"] == "redis://user:***@cache:6379/0"
    assert settings.redis_url == "redis://user:redispw@cache:6379/0"  # still usable
    assert Settings.from_env({}).redacted()["llm_api_key"] is None


def test_redact_url_variants() -> None:
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("sentinel://:a@h1:26379;sentinel://:b@h2:26379") == "sentinel://:***@h1:26379;sentinel://:***@h2:26379"
    assert redact_url("rediss://h/0?password=pw&ssl_cert_reqs=none") == "rediss://h/0?password=***&ssl_cert_reqs=none"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("openai:/gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("azure:/my-deploy", "my-deploy"),
        ("  gpt-4o  ", "gpt-4o"),
        ("llama3:8b", "llama3:8b"),
        ("ollama:/llama3:8b", "llama3:8b"),
    ],
)
def test_normalize_model(given: str, expected: str) -> None:
    assert normalize_model(given) == expected


@pytest.mark.parametrize("bad", ["", "   ", "openai:/"])
def test_normalize_model_rejects_empty(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_model(bad)


def test_config_package_imports_nothing_else_from_tracejudge() -> None:
    package = Path(__file__).parents[1] / "src" / "tracejudge" / "config"
    for module in package.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("tracejudge"), module.name
            elif isinstance(node, ast.Import):
                assert not any(alias.name.startswith("tracejudge") for alias in node.names), module.name


def test_judge_entry_of_the_wrong_kind(tmp_path: Path) -> None:
    err = error_for(tmp_path, "observability: {mlflow: {judges: {workflow_defaults: [relevance, 5]}}}\n")
    assert err.path == "observability.mlflow.judges.workflow_defaults[1]"
    assert err.problem.startswith("must be a judge name or a mapping like {name: relevance")


# --- design settings that tracejudge acts on (issue 8, item 9) ----------------------------------------


@pytest.mark.parametrize(
    ("mlflow", "written"),
    [
        ({}, True),
        ({"artifact_level": "standard"}, True),
        ({"artifact_level": "minimal"}, False),
        ({"log_artifacts": False}, False),
        ({"artifacts": {"quality": False}}, False),
        ({"artifact_level": "minimal", "artifacts": {"quality": True}}, True),
    ],
)
def test_artifact_settings_decide_whether_the_report_is_written(mlflow, written) -> None:
    assert load_config({"observability": {"mlflow": mlflow}}).write_report is written


def test_design_artifact_config_writes_the_report_and_reports_the_other_switches() -> None:
    config = load_config(DESIGN / "artifact_config.yaml")
    assert config.write_report and config.artifact_level == "standard"
    assert "observability.mlflow.artifacts.inputs" in config.unused_keys
    assert "observability.mlflow.artifacts.quality" not in config.unused_keys


def test_artifact_level_typo_is_an_error_at_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"observability": {"mlflow": {"artifact_level": "verbose"}}})
    assert "observability.mlflow.artifact_level" in str(err.value) and "minimal" in str(err.value)


def test_quality_based_workflows_false_turns_gate_and_retry_off() -> None:
    data = {"quality_gate": {"enabled": True}, "quality_retry": {"enabled": True}}
    assert load_config(data).gate_enabled and load_config(data).retry_enabled
    off = load_config({**data, "observability": {"mlflow": {"quality_based_workflows": False}}})
    assert not off.gate_enabled and not off.retry_enabled
    assert load_config(DESIGN / "feature_flags.yaml").gate_enabled is False


def test_workers_log_each_unused_key_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tracejudge.config import log_unused_keys_once

    import uuid

    flag = f"future_flag_{uuid.uuid4().hex[:8]}"  # a key no other test logged in this process
    config = load_config({"observability": {"mlflow": {flag: True, "async_logging": True}}})
    logger = logging.getLogger("tracejudge.test.unused")
    with caplog.at_level(logging.WARNING, logger="tracejudge.test.unused"):
        for _ in range(3):
            log_unused_keys_once(config, logger)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all("accepted, not used by tracejudge" in line for line in lines)
    assert any("async_logging" in line for line in lines) and any(flag in line for line in lines)
