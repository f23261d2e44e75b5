"""HTTP API (minimal): /embed, /classify and health, on one in-process encoder.

The full serving engine (length-aware buffer, SLO batching, workers) replaces the direct call.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..config import ServerSettings
from ..errors import BertserveError, InputError
from ..models import Encoder


class TextsRequest(BaseModel):
    texts: list[str] = Field(min_length=1)


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def create_app(settings: ServerSettings, encoder: Encoder | None = None) -> FastAPI:
    state: dict[str, Any] = {"encoder": encoder}
    lock = asyncio.Lock()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["encoder"] is None:
            state["encoder"] = await asyncio.to_thread(
                Encoder.load, settings.model, backend=settings.backend, precision=settings.precision,
                device=settings.device, threads=settings.threads,
            )
        yield

    app = FastAPI(title="bertserve", lifespan=lifespan)

    @app.exception_handler(BertserveError)
    async def on_error(_: Request, exc: BertserveError) -> JSONResponse:
        return error_response(exc.status_code, exc.kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        return error_response(422, "invalid_input", f"{where}: {first['msg']}")

    def check(texts: list[str]) -> None:
        if len(texts) > settings.max_texts_per_request:
            raise InputError(f"at most {settings.max_texts_per_request} texts per request")
        for i, t in enumerate(texts):
            if not t:
                raise InputError(f"texts[{i}] is empty")
            if len(t) > settings.max_chars_per_text:
                raise InputError(f"texts[{i}] has more than {settings.max_chars_per_text} characters")

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = state["encoder"] is not None
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.post("/embed")
    async def embed(req: TextsRequest) -> dict:
        check(req.texts)
        enc: Encoder = state["encoder"]
        async with lock:
            vectors = await asyncio.to_thread(enc.embed, req.texts)
        return {"model": enc.manifest.name, "dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}

    @app.post("/classify")
    async def classify(req: TextsRequest) -> dict:
        check(req.texts)
        enc: Encoder = state["encoder"]
        async with lock:
            preds = await asyncio.to_thread(enc.classify, req.texts)
        return {"model": enc.manifest.name, "results": [p.__dict__ if not hasattr(p, "__slots__") else
                {k: getattr(p, k) for k in p.__slots__} for p in preds]}

    return app
