"""OpenAI-compatible API: ``POST /v1/embeddings``, ``GET /v1/models`` (the ``openai`` client works unchanged).

``input`` is a string or a list of strings (token arrays are refused: they would be another
tokenizer's ids). ``encoding_format`` ``float`` or ``base64`` (little-endian float32, what the
official client asks for by default). ``usage`` counts this model's tokens after truncation.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InputError, UnknownModelError
from ..core.engine import Engine
from .api_simple import request_options
from .bodies import json_object
from .encode import Reply, json_reply
from .ranking import require
from .schemas import INFER_ERRORS, EmbeddingsResponse, ModelCard, ModelList, errors, json_body

CREATED = int(time.time())


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "bertserve"}


async def embeddings(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    body = json_object(raw)
    info = engine.info
    if "input" not in body:
        raise InputError('the body needs an "input" field: a string or a list of strings')
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InputError('the body needs a "model" field naming the model (see GET /v1/models)')
    if name != info.name:
        raise UnknownModelError(f"model {name!r} is not served here; this server serves {info.name!r}")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise InputError(f'encoding_format must be "float" or "base64", not {fmt!r}')
    raw_input = body["input"]
    texts = [raw_input] if isinstance(raw_input, str) else raw_input
    if isinstance(texts, list) and texts and all(isinstance(t, int) for t in texts):
        raise InputError("token arrays are not supported: send the text itself")
    if isinstance(texts, list) and any(isinstance(t, list) for t in texts):
        raise InputError("token arrays are not supported: send the texts themselves")
    if not isinstance(texts, list):
        raise InputError(f'"input" must be a string or a list of strings, not a {type(raw_input).__name__}')
    dims = body.get("dimensions")
    if dims is not None and dims != info.dim:
        raise InputError(f"dimensions={dims!r} is not available; this model gives {info.dim}")
    require(info, "POST /v1/embeddings", "embed")
    opts = request_options(engine, {k: body[k] for k in ("slo_ms", "truncate") if k in body}, headers)
    out = await engine.infer(texts, **opts)
    vectors = out.outputs
    if fmt == "base64":
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = list(vectors)  # rows of a C-contiguous array: orjson writes them directly
    return json_reply({
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
        "model": info.name,
        "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
        "students": out.students,
    }, headers={"x-bertserve-students": str(out.students)})


def build_router(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models", responses={200: {"model": ModelList}})
    async def models() -> dict:
        return {"object": "list", "data": [model_card(engine.info.name)]}

    @router.get("/models/{model_id:path}", responses={200: {"model": ModelCard}, **errors("openai", 404)})
    async def model(model_id: str) -> dict:
        name = engine.info.name
        if model_id != name:
            raise UnknownModelError(f"model {model_id!r} is not served here; this server serves {name!r}")
        return model_card(name)

    @router.post("/embeddings", summary="Create embeddings (OpenAI-compatible)",
                 openapi_extra=json_body("EmbeddingsRequest"),
                 responses={200: {"model": EmbeddingsResponse}, **errors("openai", *INFER_ERRORS)})
    async def embeddings_route(request: Request) -> Response:
        return (await embeddings(engine, await request.body(), request.headers)).response()

    return router
