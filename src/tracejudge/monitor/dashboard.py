"""``tracejudge dashboard``: the page and its JSON API on a Starlette app served by uvicorn.

Routes (all behind the bearer token when one is set):

* ``GET /`` the page; ``GET /static/...`` its script, styles and the vendored Chart.js (no CDN);
* ``GET /api/summary?experiment=&workflow=&environment=&since=7d&until=&bucket=day|hour&source=auto|mlflow|redis``
  the :class:`QualitySummary` the charts draw from; a bad parameter is ``400 {"error": "..."}``, an unknown
  experiment ``404``, an unreachable MLflow ``503``; never a stack trace;
* ``GET /api/health``.

With a token (``--token`` or ``TRACEJUDGE_DASHBOARD_TOKEN``) every request needs ``Authorization: Bearer <token>``;
a browser opens ``/?token=<token>`` once and gets it as an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hmac
import logging
from importlib import resources
from typing import Any, Callable

from pydantic import ValidationError

from tracejudge.monitor.window import BadQuery, MonitorQuery

log = logging.getLogger(__name__)

TOKEN_ENV = "TRACEJUDGE_DASHBOARD_TOKEN"
COOKIE = "tracejudge_token"
PARAMS = ("experiment", "workflow", "environment", "since", "until", "bucket", "source")


def create_app(
    *,
    default_experiment: str | None = None,
    token: str | None = None,
    summarise: Callable[[MonitorQuery], Any] | None = None,
) -> Any:
    """The ASGI app. ``summarise`` defaults to :func:`tracejudge.monitor.summarise_quality` with the environment's
    MLflow and Redis."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    summarise = summarise or _default_summarise()
    static_dir = str(resources.files("tracejudge.monitor").joinpath("static"))

    async def index(request: Request) -> Response:
        page = resources.files("tracejudge.monitor").joinpath("static", "index.html").read_text(encoding="utf-8")
        response = HTMLResponse(page)
        if token and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def summary(request: Request) -> Response:
        params = dict(request.query_params)
        params.pop("token", None)
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            return _error(400, f"unknown query parameter {unknown[0]!r}; allowed: {', '.join(PARAMS)}")
        if not params.get("experiment"):
            if not default_experiment:
                return _error(400, "experiment: give an experiment id or name (?experiment=1)")
            params["experiment"] = default_experiment
        try:
            query = MonitorQuery(**{k: v for k, v in params.items() if v != ""})
        except ValidationError as exc:
            return _error(400, _validation_message(exc))
        except BadQuery as exc:
            return _error(400, str(exc))
        from starlette.concurrency import run_in_threadpool

        from tracejudge.mlflow_io.query import ExperimentNotFound
        from tracejudge.mlflow_io.reader import MlflowUnavailable

        try:
            result = await run_in_threadpool(summarise, query)
        except BadQuery as exc:
            return _error(400, str(exc))
        except ExperimentNotFound as exc:
            return _error(404, str(exc))
        except MlflowUnavailable as exc:
            return _error(503, str(exc))
        return JSONResponse(result.model_dump(mode="json"))

    class TokenMiddleware:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or not token:
                return await self.app(scope, receive, send)
            request = Request(scope)
            given = ""
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            given = given or request.cookies.get(COOKIE, "") or (request.query_params.get("token", "") if scope["path"] == "/" else "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                response = _error(401, "a bearer token is required (Authorization: Bearer <token>, or open /?token=<token>)")
                response.headers["WWW-Authenticate"] = "Bearer"
                return await response(scope, receive, send)
            return await self.app(scope, receive, send)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("dashboard request failed: %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such page: {request.url.path}")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/summary", summary),
            Route("/api/health", health),
            Mount("/static", StaticFiles(directory=static_dir), name="static"),
        ],
        middleware=[Middleware(TokenMiddleware)],
        exception_handlers={Exception: server_error, 404: not_found},
    )


def _error(status: int, message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "query"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "literal_error":
            message = f"{message} (got {err.get('input')!r})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _default_summarise() -> Callable[[MonitorQuery], Any]:
    from tracejudge.monitor.collect import summarise_quality

    redis = _redis()

    def run(query: MonitorQuery) -> Any:
        return summarise_quality(query, redis=redis)

    return run


def _redis() -> Any:
    """A Redis client for the rollups, or None when none answers (MLflow then serves everything)."""
    import redis as redis_lib

    from tracejudge.config import Settings

    settings = Settings.from_env()
    client = redis_lib.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    try:
        client.ping()
    except Exception as exc:
        log.warning("no Redis for rollups (%s); summaries read MLflow", exc)
        return None
    return client


def serve(*, host: str = "127.0.0.1", port: int = 8050, token: str | None = None, default_experiment: str | None = None) -> None:
    """Run the dashboard until interrupted (uvicorn)."""
    import uvicorn

    app = create_app(default_experiment=default_experiment, token=token)
    uvicorn.run(app, host=host, port=port, log_level="warning")
