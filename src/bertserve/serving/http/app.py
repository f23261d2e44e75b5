"""The HTTP application: three APIs on one port over one :class:`~.engine.Engine`.

Routes only parse, call ``engine.infer`` and encode; errors of every route become responses in
one place, :mod:`.status`. The engine starts in the background, so ``/v2/health/live``
answers at once while ``/v2/health/ready`` turns 200 only after the workers are loaded, warm
and profiled. On shutdown (SIGTERM) uvicorn stops accepting and waits for the requests in
flight; the engine then finishes its queue and stops its workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...config import ServerSettings
from ...errors import BertserveError, InputError, MalformedBodyError, NotFoundError
from ..core.engine import Engine
from ..core.metrics import CONTENT_TYPE, Metrics
from . import api_openai, api_simple, api_v2
from .bodies import BodyLimit
from .disconnect import CLIENT_CLOSED, CancelOnDisconnect
from .status import api_of, error_response

log = logging.getLogger("bertserve.app")

INFER_PATHS = ("/embed", "/classify", "/v1/embeddings")


def is_inference(path: str) -> bool:
    return path in INFER_PATHS or (path.startswith("/v2/models/") and path.endswith("/infer"))


class RequestMetrics:
    """Count and time inference requests by API and status (ASGI middleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not is_inference(path):
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            api = api_of(path)
            self.metrics.requests.labels(api, str(status)).inc()
            if status == 200:
                self.metrics.request_latency.labels(api).observe(time.perf_counter() - t0)


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

    app = FastAPI(title="bertserve", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.engine = engine

    @app.exception_handler(BertserveError)
    async def on_error(request: Request, exc: BertserveError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"])
        return error_response(InputError(f"{where}: {first['msg']}"), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: BertserveError = NotFoundError(f"no route {request.method} {request.url.path}")
        else:
            err = MalformedBodyError(f"{request.method} {request.url.path}: {exc.detail}")
        response = error_response(err, request.url.path)
        response.status_code = exc.status_code
        return response

    @app.exception_handler(ClientDisconnect)
    async def on_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the metrics count a 499

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(BertserveError(f"internal error: {type(exc).__name__}"), request.url.path)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/health")
    async def health() -> JSONResponse:
        ok = engine.ready and engine.accepting
        return JSONResponse({"ready": ok, "error": engine.error, "model": engine.name,
                             "workers": engine.worker_pids}, status_code=200 if ok else 503)

    app.include_router(api_v2.build_router(engine))
    app.include_router(api_openai.build_router(engine))
    app.include_router(api_simple.build_router(engine))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # type: ignore[arg-type]
    app.add_middleware(CancelOnDisconnect, watch=is_inference)  # type: ignore[arg-type]
    app.add_middleware(RequestMetrics, metrics=engine.metrics)  # type: ignore[arg-type]
    return app
