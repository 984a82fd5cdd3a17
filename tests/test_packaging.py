"""The files users run besides the package: docker-compose, the env example, the example config."""

from __future__ import annotations

from pathlib import Path

import yaml

from tracejudge.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_docker_compose_has_the_promised_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "mlflow", "worker", "beat", "flower", "rabbitmq", "postgres", "mlflow-postgres", "prometheus"}
    # exactly one beat (pick-up, deferred releases and alert checks); a PostgreSQL-backed MLflow and Prometheus on request
    assert "deploy" not in services["beat"] or services["beat"]["deploy"].get("replicas", 1) == 1
    assert services["postgres"]["profiles"] == services["mlflow-postgres"]["profiles"] == ["postgres"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    # RabbitMQ only on request (`--profile rabbitmq`), and the workers wait for it only when it runs
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert services["worker"]["depends_on"]["rabbitmq"]["required"] is False
    assert "TRACEJUDGE_BROKER_URL" in services["worker"]["environment"]
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any("--gunicorn-opts=--workers" in part for part in services["mlflow"]["command"])
    worker = services["worker"]
    # scalable with --scale worker=N: no fixed name, no host port
    assert "container_name" not in worker and "ports" not in worker
    assert worker["environment"]["TRACEJUDGE_REDIS_URL"].startswith("redis://redis:")
    # the bundled server unless COMPOSE_MLFLOW_URI points workers (and beat) at the PostgreSQL profile's
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == services["beat"]["environment"]["MLFLOW_TRACKING_URI"] == "${COMPOSE_MLFLOW_URI:-http://mlflow:5000}"
    assert worker["command"][:2] == ["tracejudge", "worker"]
    assert "flower" in services["flower"]["command"]


def test_env_example_names_the_settings_we_read():
    from tracejudge.config import Settings

    lines = [line for line in (ROOT / ".env.example").read_text().splitlines() if line and not line.startswith("#")]
    environ = dict(line.split("=", 1) for line in lines)
    settings = Settings.from_env(environ)
    assert settings.llm_base_url == environ["TRACEJUDGE_LLM_BASE_URL"]
    assert settings.llm_api_key is not None and settings.default_model == environ["TRACEJUDGE_JUDGE_MODEL"]


def test_example_config_is_the_demo_config_and_valid():
    from tracejudge.demo import DEMO_CONFIG

    assert (ROOT / "examples" / "tracejudge.yaml").read_text() == DEMO_CONFIG
    config = load_config(ROOT / "examples" / "tracejudge.yaml")
    assert config.quality_gate.enabled and config.judges.node_overrides["write"][1].name == "technical_accuracy"
