"""The HTTP application: five APIs on one port over one :class:`~..core.engine.Engine`.

Routes only parse, call ``engine.infer`` and encode; errors of every route become responses in
one place, :mod:`.status`. The inference routes are served from raw ASGI before FastAPI's
stack (:mod:`.hotpath`); FastAPI keeps the others and the OpenAPI document of all. The engine
starts in the background, so ``/v2/health/live`` answers at once while ``/v2/health/ready``
turns 200 only after the workers are loaded, warm and profiled. On shutdown (SIGTERM) uvicorn
stops accepting and waits for the requests in flight; the engine then finishes its queue and
stops its workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ...config import ServerSettings
from ...errors import BertserveError, InputError, MalformedBodyError
from ..core.engine import Engine
from ..core.metrics import CONTENT_TYPE
from . import api_cohere, api_openai, api_simple, api_tei, api_v2
from .access import AUTHORIZED, DOCS, HEALTH, REQUEST_ID, Access
from .bodies import BodyLimit
from .hotpath import InferenceRoutes
from .schemas import ERROR_MODEL, WHY, Health, request_models
from .status import RouteNotFoundError, UnauthorizedError, api_of, error_reply, error_response

log = logging.getLogger("bertserve.app")


PAIR_ROUTES = ("/rerank", "/v2/rerank")  # a reranker's (one relevance logit per pair)
UNUSED = {  # by the served model's task: the routes that refuse it (422), so are not offered
    "embed": ("/classify", "/predict", *PAIR_ROUTES),
    "classify": ("/embed", "/v1/embeddings", *PAIR_ROUTES),
    "rerank": ("/embed", "/v1/embeddings", "/classify"),
}


class BertserveApp(FastAPI):
    """FastAPI, with the inference routes served first from raw ASGI (:mod:`.hotpath`)."""

    hot: InferenceRoutes
    access: Access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if not self.access.admit(scope):
            started = time.perf_counter()
            refused = UnauthorizedError("this server needs an API key: send Authorization: Bearer KEY "
                                        "(or an x-api-key header)")
            rid = scope[REQUEST_ID]
            await self.hot.answer(send, error_reply(refused, scope["path"], request_id=rid), rid)
            self.access.logged(scope, 401, started)
            return
        hit = self.hot.route(scope)
        if hit is None:
            await super().__call__(scope, receive, self.access.tagged(scope, send))
        else:
            await self.hot.serve(*hit, scope, receive, send)


def create_app(settings: ServerSettings, engine: Engine | None = None,
               on_fatal: Callable[[str], None] | None = None,
               on_ready: Callable[[Engine], None] | None = None) -> FastAPI:
    """Build the app; ``on_fatal`` is called if the model cannot be loaded (the CLI reports it
    and exits), ``on_ready`` once it is loaded, warm and profiled."""
    engine = engine or Engine(settings)

    async def boot() -> None:
        try:
            await engine.start()
        except BertserveError as exc:
            engine.error = str(exc)
        except Exception as exc:  # report anything else too: a server that never gets ready is silent
            engine.error = f"{type(exc).__name__}: {exc}"
        if engine.error:
            if on_fatal is None:
                log.error("cannot start the model: %s", engine.error)
            else:
                on_fatal(engine.error)
        elif on_ready is not None:
            on_ready(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(boot())
        yield
        if not task.done():
            task.cancel()
        await engine.stop()

    app = BertserveApp(title="bertserve", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.engine = engine
    app.access = Access(settings.api_keys(), keys_for_health=settings.keys_for_health,
                        log_format=settings.request_log)
    app.hot = InferenceRoutes(engine, settings.max_body_bytes, app.access)

    def rid(request: Request) -> str | None:
        return request.scope.get(REQUEST_ID)

    @app.exception_handler(BertserveError)
    async def on_error(request: Request, exc: BertserveError) -> JSONResponse:
        return error_response(exc, request.url.path, request_id=rid(request))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"])
        return error_response(InputError(f"{where}: {first['msg']}"), request.url.path,
                              request_id=rid(request))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: BertserveError = RouteNotFoundError(f"no route {request.method} {request.url.path}")
        else:
            err = MalformedBodyError(f"{request.method} {request.url.path}: {exc.detail}")
        response = error_response(err, request.url.path, request_id=rid(request))
        response.status_code = exc.status_code
        for name, value in (exc.headers or {}).items():  # 405's Allow (RFC 9110)
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(BertserveError(f"internal error: {type(exc).__name__}"), request.url.path,
                              request_id=rid(request))

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/health", responses={200: {"model": Health},
                                   503: {"model": Health, "description": "not ready"}})
    async def health(request: Request) -> JSONResponse:
        ok = engine.ready and engine.accepting
        body: dict[str, Any] = {"ready": ok}
        if request.scope.get(AUTHORIZED, True):  # with keys on, details only to a caller with one
            body.update(error=engine.error, model=engine.info.name, workers=engine.worker_pids,
                        runtime=api_v2.runtime_of(engine.info))
        return JSONResponse(body, status_code=200 if ok else 503)

    app.include_router(api_v2.build_router(engine))
    app.include_router(api_openai.build_router(engine))
    app.include_router(api_simple.build_router(engine))
    app.include_router(api_tei.build_router(engine))
    app.include_router(api_cohere.build_router(engine))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    app.openapi = lambda: openapi_document(app, settings, engine)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI, settings: ServerSettings, engine: Engine) -> dict[str, Any]:
    """The OpenAPI document: FastAPI's, plus the request bodies the handlers read themselves
    (:mod:`.schemas`, with this server's limits and, once loaded, its model's width); made
    again when the model's description changes (it is loaded after the server starts)."""
    if app.openapi_schema is not None and getattr(app.state, "openapi_for", None) == engine.info:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="bertserve: KServe v2, OpenAI embeddings, TEI and Cohere reranking and a "
                      "simple JSON API over one model. Errors come in each API's own shape.")
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in request_models(settings, engine.info):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    if engine.info.task is not None:  # a route the served model does not answer is not offered
        for path in UNUSED.get(engine.info.task, ()):
            doc["paths"].pop(path, None)
    fastapi_422 = "#/components/schemas/HTTPValidationError"  # its validation error: never sent
    for operations in doc["paths"].values():
        for op in operations.values():
            body = op.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref") == fastapi_422:
                del op["responses"]["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    if app.access.on:  # API keys: every operation but the open ones needs one, else 401
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}
        for path, operations in doc["paths"].items():
            if path in DOCS or (path in HEALTH and not app.access.keys_for_health):
                continue
            for op in operations.values():
                op["security"] = [{"bearer": []}, {"apiKey": []}]
                shape = ERROR_MODEL[api_of(path)].__name__
                op["responses"]["401"] = {"description": WHY[401], "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{shape}"}}}}
    app.openapi_schema = doc
    app.state.openapi_for = engine.info
    return doc
