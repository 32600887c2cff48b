"""The application factory: nothing is built until `create_app` is called."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from cartd.api import events, watching
from cartd.api.cuts import quiet_purposeful_cuts
from cartd.api.routes import router
from cartd.api.views import error_body
from cartd.config import Settings
from cartd.errors import CartdError
from cartd.runtime import Runtime, build_runtime
from cartd.schemas import CallbackRule, order_json_schema

log = logging.getLogger(__name__)

#: Seconds a client is asked to wait (`Retry-After`) while the database cannot be reached.
DATABASE_RETRY_AFTER = 5


def allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes at the request's path. Starlette's own `Allow` names
    only the first route that matched the path, and each of ours takes one method. Our
    routes are read from our router itself (included without a prefix), since the app
    wraps an included router in a private type."""
    methods: set[str] = set()
    for route in (*app.router.routes, *router.routes, *watching.router.routes):
        if not getattr(route, "methods", None):
            continue
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _describe(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI description as cartd answers: a request FastAPI would refuse with 422
    gets a 400 here, and the order's body is `cartd.schemas.Order`, the model that
    validates it (the route reads the raw body, so FastAPI does not know it), with the
    callback hosts this server allows."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        order = order_json_schema(
            CallbackRule(settings.callback_hosts), ref_template="#/components/schemas/{model}"
        )
        components.update(order.pop("$defs", {}))
        components["Order"] = order
        for model in events.DATA_MODELS:  # what an event's `data` holds
            described = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(described.pop("$defs", {}))
            components[model.__name__] = described
        body = schema["paths"]["/{uid}"]["post"]["requestBody"]
        body["description"] = (
            f"the order, JSON in UTF-8, at most {settings.max_order_size} bytes"
            " (cartd.max_order_size); a larger body gets 413 without being read"
        )
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app. Without a `runtime`, one is built from `settings` at startup."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = runtime or build_runtime(settings)
        app.state.runtime = built
        built.runner.start()
        log.info("cartd is serving carts from %s", settings.volume_path)
        try:
            yield
        finally:
            built.close()

    quiet_purposeful_cuts()
    app = FastAPI(
        title="cartd",
        summary="Data carts for scientific archives; compatible with Pacifica Cartd.",
        lifespan=lifespan,
    )
    app.include_router(router)
    app.include_router(watching.router)
    app.openapi = lambda: _describe(app, settings)  # type: ignore[method-assign]

    @app.exception_handler(CartdError)
    async def cartd_error(_request: Request, exc: CartdError) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, exc.message), exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The exception's headers are part of the answer (a 405 must say `Allow`).
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request))
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)), exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        return JSONResponse(error_body(400, problems), 400)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        # The database restarting or unreachable (or, on MySQL, a deadlock): answered here
        # rather than by the handler of last resort below, which Starlette makes close the
        # client's connection after its answer.
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            getattr(exc, "orig", exc),
        )
        return JSONResponse(
            error_body(503, "the database cannot be reached just now; try again shortly"),
            503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected fault on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(error_body(500, "internal server error"), 500)

    return app
