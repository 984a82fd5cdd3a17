"""The docs' references are generated from the code: these fail when a committed page is stale,
when a config key, CLI option or environment variable is missing from them, and when the shipped
examples do not validate against the config's JSON Schema."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tracejudge import reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REGENERATE = "run `.venv/bin/python -m tracejudge.reference --write docs` and commit the result"


@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_committed_reference_pages_are_what_the_code_generates(page: str) -> None:
    committed = DOCS / page
    assert committed.exists(), f"docs/{page} is missing: {REGENERATE}"
    assert committed.read_text(encoding="utf-8") == reference.PAGES[page](), f"docs/{page} is stale: {REGENERATE}"


def test_every_config_key_is_in_the_reference_with_a_description() -> None:
    page = reference.config_reference()
    keys = list(reference.iter_config_keys())
    assert len(keys) > 80
    for path, model, name in keys:
        assert f"| `{path}` |" in page, path
        assert reference.describe_field(model, name), f"{model.__name__}.{name} ({path}) has no '#:' comment saying what it does"
    assert "(undocumented)" not in page


def test_every_cli_command_and_option_is_in_the_reference() -> None:
    page = reference.cli_reference()
    commands = reference._parsers()
    assert {"tracejudge gate", "tracejudge backfill", "tracejudge config-schema", "tracejudge alerts check"} <= {
        name for name, _ in commands
    }
    for name, parser in commands:
        if name == "tracejudge":
            continue
        assert f"## `{name}`" in page, name
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in page, f"{name} {flag}"


def test_every_environment_variable_settings_reads_is_in_the_reference() -> None:
    page = reference.environment_reference()
    source = (ROOT / "src/tracejudge/config/settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"((?:TRACEJUDGE|MLFLOW|OPENAI)_[A-Z_]+)"', source))
    assert {"TRACEJUDGE_REDIS_URL", "OPENAI_API_KEY", "MLFLOW_TRACKING_URI"} <= names
    for name in names:
        assert f"`{name}`" in page, name


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((DOCS / "tracejudge.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize(
    "path",
    ["examples/tracejudge.yaml", "tests/fixtures/full_config.yaml", *sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tests/fixtures/design").glob("*.yaml")
    )],
)
def test_shipped_configs_validate_against_the_schema(path: str) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(yaml.safe_load((ROOT / path).read_text()))]
    assert errors == [], errors


def test_the_schema_catches_a_misspelt_key_inside_our_sections() -> None:
    validator = _validator()
    assert list(validator.iter_errors({"quality_gate": {"threshhold": 0.9}}))
    assert list(validator.iter_errors({"observability": {"mlflow": {"judges": {"workflow_defaults": [{"name": "x", "threshold": 2}]}}}}))
    assert not list(validator.iter_errors({"my_workflow": {"anything": 1}, "quality_gate": {"threshold": 0.9}}))


def test_config_schema_command_prints_the_shipped_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tracejudge", "config-schema"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert json.loads(out) == json.loads((DOCS / "tracejudge.schema.json").read_text(encoding="utf-8"))
