"""Connection settings (LLM endpoint and key, Redis, MLflow) from environment variables.

Where things run and the secrets to reach them differ per machine, so they come
from the environment, never from the YAML that users share and commit. Secrets
never show in ``repr``/``str`` or in ``redacted()`` (the form to log).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from .errors import ConfigError, show

__all__ = ["Settings", "normalize_model", "redact_url", "DEFAULT_LLM_BASE_URL", "NO_KEY_PLACEHOLDER"]

DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
NO_KEY_PLACEHOLDER = "sk-no-key-needed"
_ENVIRONMENTS = ("production", "development", "experimental")
_URL_FIELDS = ("llm_base_url", "redis_url", "broker_url", "result_backend_url", "mlflow_tracking_uri", "mlflow_ui_url")
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp")
#: Schemes of the Redis URLs (``TRACEJUDGE_REDIS_URL``, ``TRACEJUDGE_RESULT_BACKEND``): TCP, TLS and a Unix socket.
_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+socket")


class Settings(BaseModel):
    """Where tracejudge connects; build it with ``Settings.from_env()``.

    >>> s = Settings.from_env({"TRACEJUDGE_REDIS_URL": "redis://:hunter2@cache:6379/0"})
    >>> "hunter2" in repr(s)
    False
    """

    model_config = ConfigDict(extra="forbid")

    #: The OpenAI-compatible endpoint judges call (default OpenAI's).
    llm_base_url: str | None = None
    #: The endpoint's API key (not needed on loopback); never logged.
    llm_api_key: SecretStr | None = None
    #: The judge model when a judge names none.
    default_model: str = "gpt-4o-mini"
    #: Redis for coordination, caches and (by default) the task queue and results; `rediss://` and passwords work.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: the task queue; the Redis URL unless ``TRACEJUDGE_BROKER_URL`` names another (``amqp://`` for RabbitMQ)
    broker_url: str | None = None
    #: Where verdicts are kept for callers waiting on them (default: the Redis URL).
    result_backend_url: str | None = None
    #: The MLflow tracking store judged traces are read from and written to.
    mlflow_tracking_uri: str | None = None
    #: The environment whose default threshold applies (production, development, experimental).
    environment: Literal["production", "development", "experimental"] | None = None
    #: The YAML config workers and commands use by default.
    config_path: str | None = None
    #: A prefix for every Redis key tracejudge and Celery write, to share one Redis (``TRACEJUDGE_KEY_PREFIX``).
    key_prefix: str = ""
    #: Modules to import at worker start so their judges register (``TRACEJUDGE_JUDGE_MODULES``, comma-separated).
    judge_modules: tuple[str, ...] = ()
    #: MLflow writes in flight at once per process (``TRACEJUDGE_WRITE_CONCURRENCY``); None: the store's default,
    #: 2 on a local store (sqlite file, file store), 8 on a tracking server (``TraceStore.write_concurrency``).
    write_concurrency: int | None = Field(default=None, ge=1, le=256)
    #: Write results to an http(s) tracking server through its REST API on the worker's event loop (``TRACEJUDGE_REST_WRITER``;
    #: false: through MLflow's client, as for local stores).
    rest_writer: bool = True
    #: How long Celery keeps a verdict in the result backend (``TRACEJUDGE_RESULT_EXPIRES_HOURS``).
    result_expires_hours: float = Field(default=24, gt=0)
    #: Seconds before an unacknowledged task is delivered again (``TRACEJUDGE_VISIBILITY_TIMEOUT``).
    visibility_timeout: int = Field(default=15, ge=1)
    #: The MLflow UI that reports, the dashboard and alerts link to (``MLFLOW_UI_URL``).
    mlflow_ui_url: str | None = None
    #: The experiment monitoring watches when none is given (``MLFLOW_EXPERIMENT_ID``, else ``MLFLOW_EXPERIMENT_NAME``).
    experiment: str | None = None
    #: Bearer token the dashboard requires (``TRACEJUDGE_DASHBOARD_TOKEN``); never shown.
    dashboard_token: SecretStr | None = None
    #: Port of each worker's ``/metrics``, ``/healthz`` and ``/readyz`` (``TRACEJUDGE_METRICS_PORT``); None: no server.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    #: Address that server listens on (``TRACEJUDGE_METRICS_HOST``; all interfaces, for Prometheus on another machine).
    metrics_host: str = "0.0.0.0"
    #: A worker whose event loop is blocked this long turns ``/healthz`` 503, stops renewing its messages'
    #: lease and exits, so its supervisor restarts it and its messages are delivered again (``TRACEJUDGE_LOOP_BLOCK_SECONDS``).
    loop_block_seconds: float = Field(default=30.0, gt=0)
    #: Where worker processes keep their metrics for the one server (``PROMETHEUS_MULTIPROC_DIR``, prometheus_client's
    #: own variable); ``tracejudge worker`` makes and removes a temporary one when it runs several processes.
    metrics_dir: str | None = None

    @model_validator(mode="after")
    def _backend_defaults_to_redis(self) -> Settings:
        if self.result_backend_url is None:
            self.result_backend_url = self.redis_url
        if self.broker_url is None:
            self.broker_url = self.redis_url
        return self

    @property
    def broker_is_redis(self) -> bool:
        """Whether the task queue is on Redis (else RabbitMQ).

        >>> Settings.from_env({"TRACEJUDGE_BROKER_URL": "amqp://guest:guest@rabbit:5672//"}).broker_is_redis
        False
        """
        return urlsplit(self.broker_url or self.redis_url).scheme.startswith("redis")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``); empty values count as unset.

        >>> Settings.from_env({"OPENAI_API_KEY": "sk-a", "TRACEJUDGE_LLM_API_KEY": "sk-b"}).require_llm_key()
        'sk-b'
        """
        env = os.environ if environ is None else environ

        def first(*names: str) -> str | None:
            for name in names:
                value = (env.get(name) or "").strip()
                if value:
                    return value
            return None

        environment = first("TRACEJUDGE_ENVIRONMENT")
        if environment is not None:
            environment = environment.lower()
            if environment not in _ENVIRONMENTS:
                raise ConfigError(
                    f"must be one of {', '.join(_ENVIRONMENTS)} (got {show(environment)})",
                    source="environment",
                    path="TRACEJUDGE_ENVIRONMENT",
                )
        values: dict[str, Any] = {
            "llm_base_url": first("TRACEJUDGE_LLM_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE"),
            "llm_api_key": first("TRACEJUDGE_LLM_API_KEY", "OPENAI_API_KEY"),
            "default_model": first("TRACEJUDGE_JUDGE_MODEL"),
            "redis_url": _url(first("TRACEJUDGE_REDIS_URL"), "TRACEJUDGE_REDIS_URL", _REDIS_SCHEMES),
            "broker_url": _url(first("TRACEJUDGE_BROKER_URL"), "TRACEJUDGE_BROKER_URL", _BROKER_SCHEMES),
            "result_backend_url": _url(first("TRACEJUDGE_RESULT_BACKEND"), "TRACEJUDGE_RESULT_BACKEND", _REDIS_SCHEMES),
            "mlflow_tracking_uri": first("MLFLOW_TRACKING_URI"),
            "environment": environment,
            "config_path": first("TRACEJUDGE_CONFIG"),
            "key_prefix": first("TRACEJUDGE_KEY_PREFIX"),
            "judge_modules": _names(first("TRACEJUDGE_JUDGE_MODULES")),
            "write_concurrency": first("TRACEJUDGE_WRITE_CONCURRENCY"),
            "rest_writer": first("TRACEJUDGE_REST_WRITER"),
            "result_expires_hours": first("TRACEJUDGE_RESULT_EXPIRES_HOURS"),
            "visibility_timeout": first("TRACEJUDGE_VISIBILITY_TIMEOUT"),
            "mlflow_ui_url": first("MLFLOW_UI_URL"),
            "experiment": first("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"),
            "dashboard_token": first("TRACEJUDGE_DASHBOARD_TOKEN"),
            "metrics_port": first("TRACEJUDGE_METRICS_PORT"),
            "metrics_host": first("TRACEJUDGE_METRICS_HOST"),
            "loop_block_seconds": first("TRACEJUDGE_LOOP_BLOCK_SECONDS"),
            "metrics_dir": first("PROMETHEUS_MULTIPROC_DIR"),
        }
        try:
            return cls(**{key: value for key, value in values.items() if value is not None})
        except ValidationError as exc:
            error = exc.errors()[0]
            name = ENVIRONMENT_VARIABLES.get(str(error["loc"][0]), str(error["loc"][0])) if error.get("loc") else "environment"
            raise ConfigError(
                f"{error['msg']} (got {show(error.get('input'))})", source="environment", path=name
            ) from None

    @property
    def llm_endpoint(self) -> str:
        """The LLM base URL in use (OpenAI's when none is set)."""
        return self.llm_base_url or DEFAULT_LLM_BASE_URL

    def require_llm_key(self) -> str:
        """The API key; a placeholder for a loopback endpoint; else ConfigError.

        >>> Settings(llm_base_url="http://localhost:11434/v1").require_llm_key()
        'sk-no-key-needed'
        """
        if self.llm_api_key is not None:
            return self.llm_api_key.get_secret_value()
        host = urlsplit(self.llm_endpoint).hostname or self.llm_endpoint
        if _is_loopback(host):
            return NO_KEY_PLACEHOLDER
        raise ConfigError(
            f"no API key for {host}: set TRACEJUDGE_LLM_API_KEY (or OPENAI_API_KEY)",
            source="environment",
            path="TRACEJUDGE_LLM_API_KEY",
        )

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: key as ``***``, URL passwords as ``***``.

        >>> Settings(llm_api_key="sk-secret").redacted()["llm_api_key"]
        '***'
        """
        data = self.model_dump()
        data["llm_api_key"] = "***" if self.llm_api_key is not None else None
        data["dashboard_token"] = "***" if self.dashboard_token is not None else None
        for name in _URL_FIELDS:
            if data[name] is not None:
                data[name] = redact_url(data[name])
        return data

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and isinstance(value, str):
                value = redact_url(value)
            yield name, value


#: The environment variable behind each setting (docs/reference/environment.md, generated, lists them all).
ENVIRONMENT_VARIABLES = {
    "llm_base_url": "TRACEJUDGE_LLM_BASE_URL",
    "llm_api_key": "TRACEJUDGE_LLM_API_KEY",
    "default_model": "TRACEJUDGE_JUDGE_MODEL",
    "redis_url": "TRACEJUDGE_REDIS_URL",
    "broker_url": "TRACEJUDGE_BROKER_URL",
    "result_backend_url": "TRACEJUDGE_RESULT_BACKEND",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "environment": "TRACEJUDGE_ENVIRONMENT",
    "config_path": "TRACEJUDGE_CONFIG",
    "key_prefix": "TRACEJUDGE_KEY_PREFIX",
    "judge_modules": "TRACEJUDGE_JUDGE_MODULES",
    "write_concurrency": "TRACEJUDGE_WRITE_CONCURRENCY",
    "rest_writer": "TRACEJUDGE_REST_WRITER",
    "result_expires_hours": "TRACEJUDGE_RESULT_EXPIRES_HOURS",
    "visibility_timeout": "TRACEJUDGE_VISIBILITY_TIMEOUT",
    "mlflow_ui_url": "MLFLOW_UI_URL",
    "experiment": "MLFLOW_EXPERIMENT_ID",
    "dashboard_token": "TRACEJUDGE_DASHBOARD_TOKEN",
    "metrics_port": "TRACEJUDGE_METRICS_PORT",
    "metrics_host": "TRACEJUDGE_METRICS_HOST",
    "loop_block_seconds": "TRACEJUDGE_LOOP_BLOCK_SECONDS",
    "metrics_dir": "PROMETHEUS_MULTIPROC_DIR",
}
#: Variables read when the one above is unset (``Settings.from_env``), shown by the docs' reference.
FALLBACK_VARIABLES = {
    "llm_base_url": ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
    "llm_api_key": ("OPENAI_API_KEY",),
    "experiment": ("MLFLOW_EXPERIMENT_NAME",),
}


@contextmanager
def openai_environment(settings: Settings) -> Iterator[None]:
    """``OPENAI_API_BASE``/``OPENAI_API_KEY`` set to the judges' endpoint and key while a library that reads only
    those runs (MLflow's prompt optimizers, through its gateway adapter or LiteLLM); restored afterwards."""
    wanted = {"OPENAI_API_BASE": settings.llm_endpoint, "OPENAI_API_KEY": settings.require_llm_key()}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _url(url: str | None, variable: str, schemes: tuple[str, ...]) -> str | None:
    """``url`` when Celery and redis-py can use it, else a one-line :class:`ConfigError` naming ``variable``
    (a misspelt scheme or a port that is not a number otherwise ends in a traceback deep in kombu).

    >>> _url("redis://:pw@cache:6380/1", "TRACEJUDGE_REDIS_URL", _REDIS_SCHEMES)
    'redis://:pw@cache:6380/1'
    >>> _url("redis://:pw@cache:63a0/1", "TRACEJUDGE_REDIS_URL", _REDIS_SCHEMES)
    Traceback (most recent call last):
    ...
    tracejudge.config.errors.ConfigError: environment: TRACEJUDGE_REDIS_URL: the port must be a number from 1 to 65535 (got 'redis://:***@cache:63a0/1')
    """
    if url is None:
        return None
    shown = show(redact_url(url))
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in schemes)
        raise ConfigError(f"must be a {allowed} URL (got {shown})", source="environment", path=variable)
    if scheme in ("unix", "redis+socket"):
        if not parts.path:
            raise ConfigError(f"a {scheme}:// URL needs the socket's path (got {shown})", source="environment", path=variable)
        return url
    host_port = parts.netloc.rsplit("@", 1)[-1]
    try:
        port_ok = parts.port != 0 and (parts.port is not None or ":" not in host_port.rsplit("]", 1)[-1])
    except ValueError:  # not a number, or out of range
        port_ok = False
    if not port_ok:
        raise ConfigError(f"the port must be a number from 1 to 65535 (got {shown})", source="environment", path=variable)
    if not parts.hostname:
        raise ConfigError(f"names no host (got {shown}); e.g. {schemes[0]}://127.0.0.1", source="environment", path=variable)
    if scheme.startswith("redis") and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigError(
            f"the database after the host must be a number, e.g. /0 (got {shown})", source="environment", path=variable
        )
    return url


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:@/;\s]*):(?P<password>[^@/;\s]*)@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|token|access_token|api_key|apikey)=)[^&;#\s]*", re.I)


def redact_url(url: str) -> str:
    """Hide passwords in a URL (or ``;``-separated URLs, as Celery allows).

    >>> redact_url("redis://:s3cret@redis:6379/0")
    'redis://:***@redis:6379/0'
    >>> redact_url("postgresql://mlflow:pw@db/mlflow?sslmode=require")
    'postgresql://mlflow:***@db/mlflow?sslmode=require'
    """
    url = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", url)


def normalize_model(model: str) -> str:
    """The model name the OpenAI-compatible endpoint expects.

    Drops an MLflow-style ``provider:/`` prefix and surrounding whitespace.

    >>> normalize_model("openai:/gpt-4o-mini"), normalize_model(" gpt-4o-mini "), normalize_model("azure:/my-deploy")
    ('gpt-4o-mini', 'gpt-4o-mini', 'my-deploy')
    >>> normalize_model("ollama:/llama3:8b")
    'llama3:8b'
    """
    name = model.strip()
    match = re.match(r"^[A-Za-z][A-Za-z0-9_.-]*:/+", name)
    if match:
        name = name[match.end():].strip()
    if not name:
        raise ValueError(f"empty model name (got {model!r}); use e.g. 'gpt-4o-mini' or 'openai:/gpt-4o-mini'")
    return name
