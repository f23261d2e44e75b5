"""OpenAI-compatible API: ``POST /v1/embeddings``, ``GET /v1/models`` (the ``openai`` client works unchanged).

``input`` is a string or a list of strings (token arrays are refused: they would be another
tokenizer's ids). ``encoding_format`` ``float`` or ``base64`` (little-endian float32, what the
official client asks for by default). ``usage`` counts this model's tokens after truncation.
"""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InputError, NotFoundError, UnknownModelError
from ..core.engine import Engine
from .api_simple import request_options
from .bodies import read_json_object
from .encode import json_response

CREATED = int(time.time())


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "bertserve"}


def build_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(engine.name)]}

    @router.get("/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        if model_id != engine.name:
            raise NotFoundError(f"model {model_id!r} is not served here; this server serves {engine.name!r}")
        return model_card(engine.name)

    @router.post("/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await read_json_object(request)
        if "input" not in body:
            raise InputError('the body needs an "input" field: a string or a list of strings')
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise InputError('the body needs a "model" field naming the model (see GET /v1/models)')
        if name != engine.name:
            raise UnknownModelError(f"model {name!r} is not served here; this server serves {engine.name!r}")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise InputError(f'encoding_format must be "float" or "base64", not {fmt!r}')
        raw = body["input"]
        texts = [raw] if isinstance(raw, str) else raw
        if isinstance(texts, list) and texts and all(isinstance(t, int) for t in texts):
            raise InputError("token arrays are not supported: send the text itself")
        if isinstance(texts, list) and any(isinstance(t, list) for t in texts):
            raise InputError("token arrays are not supported: send the texts themselves")
        if not isinstance(texts, list):
            raise InputError(f'"input" must be a string or a list of strings, not a {type(raw).__name__}')
        dims = body.get("dimensions")
        if dims is not None and dims != engine.output_dim:
            raise InputError(f"dimensions={dims!r} is not available; this model gives {engine.output_dim}")
        if engine.manifest is not None and engine.manifest.task != "embed":
            raise InputError(f"model {engine.name!r} is a classifier; it has no embeddings")
        opts = request_options(engine, {k: body[k] for k in ("slo_ms", "truncate") if k in body}, request)
        out = await engine.infer(texts, **opts)
        vectors = out.outputs
        if fmt == "base64":
            data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            data = list(vectors)  # rows of a C-contiguous array: orjson writes them directly
        return json_response({
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": engine.name,
            "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
            "students": out.students,
        }, headers={"x-bertserve-students": str(out.students)})

    return router
