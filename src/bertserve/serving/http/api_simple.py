"""The simple JSON API: ``POST /embed`` and ``POST /classify`` with ``{"texts": [...]}``.

Response shapes (other components rely on them):
``/embed`` → ``{"model", "dim", "embeddings", "usage", "students", "timing"}``;
``/classify`` → ``{"model", "results": [{"label", "score", "probabilities"}], ...}``; a pair
classifier's ``/classify`` takes ``"text_pairs"`` too, one second text per text.
Optional request fields: ``slo_ms`` (latency target for this request), ``truncate``, ``model``.

The handlers take the raw body and headers and return a :class:`~.encode.Reply`: the hot path
(:mod:`.hotpath`) calls them straight from ASGI, the FastAPI routes (for OpenAPI) wrap them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InputError, UnknownModelError
from ...postprocess import softmax
from ..core.engine import Engine, Outcome
from .bodies import json_object, slo_of
from .encode import Reply, json_reply
from .ranking import require
from .schemas import INFER_ERRORS, ClassifyResponse, EmbedResponse, errors, json_body


def request_options(engine: Engine, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    """Per-request options shared by the APIs: SLO (body ``slo_ms`` or header) and truncation."""
    if "slo_ms" in body:
        slo = slo_of(body["slo_ms"])
    else:
        slo = slo_of(headers.get("x-slo-ms"), "the x-slo-ms header")
    truncate = body.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise InputError("truncate must be true or false")
    model = body.get("model")
    name = engine.info.name
    if model is not None and model != name:
        raise UnknownModelError(f"model {model!r} is not served here; this server serves {name!r}")
    return {"slo_ms": slo, "truncate": truncate}


def meta(out: Outcome) -> dict[str, Any]:
    return {"usage": {"tokens": out.tokens, "truncated_texts": out.truncated},
            "students": out.students,
            "timing": {"queue_ms": round(out.queue_s * 1e3, 3), "compute_ms": round(out.compute_s * 1e3, 3)}}


def texts_of(body: dict[str, Any]) -> Any:
    if "texts" not in body:
        raise InputError('the body needs a "texts" field: a list of strings')
    texts = body["texts"]
    if not isinstance(texts, list):
        raise InputError(f'"texts" must be a list of strings, not a {type(texts).__name__}')
    return texts


def predictions(logits: np.ndarray, labels: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    probs = softmax(logits)
    out = []
    for row in probs:
        best = int(row.argmax())
        out.append({"label": labels[best], "score": float(row[best]),
                    "probabilities": {lab: float(p) for lab, p in zip(labels, row, strict=False)}})
    return out


async def run_texts(engine: Engine, raw: bytes, headers: Mapping[str, str], task: str) -> Outcome:
    """Parse a ``{"texts": [...]}`` body (a pair model's: with ``"text_pairs"``) and run it, if
    the served model has this ``task``."""
    body = json_object(raw)
    texts = texts_of(body)
    opts = request_options(engine, body, headers)
    info = engine.info
    require(info, f"POST /{task}", task)
    pairs = body.get("text_pairs")
    if pairs is not None and not isinstance(pairs, list):
        raise InputError(f'"text_pairs" must be a list of strings, not a {type(pairs).__name__}')
    if info.pairs and pairs is None:
        raise InputError(f'model {info.name!r} reads text pairs: send "text_pairs" too, one second text '
                         "per text")
    return await engine.infer(texts, text_pairs=pairs, **opts)


async def embed(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    out = await run_texts(engine, raw, headers, "embed")
    return json_reply({"model": engine.info.name, "dim": int(out.outputs.shape[1]), "embeddings": out.outputs,
                       **meta(out)})


async def classify(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    out = await run_texts(engine, raw, headers, "classify")
    return json_reply({"model": engine.info.name, "results": predictions(out.outputs, engine.info.labels),
                       **meta(out)})


def build_router(engine: Engine) -> APIRouter:
    """The routes as OpenAPI documents them; :mod:`.hotpath` serves the same handlers first."""
    router = APIRouter()

    @router.post("/embed", summary="Embed texts", openapi_extra=json_body("EmbedRequest"),
                 responses={200: {"model": EmbedResponse}, **errors("simple", *INFER_ERRORS)})
    async def embed_route(request: Request) -> Response:
        return (await embed(engine, await request.body(), request.headers)).response()

    @router.post("/classify", summary="Classify texts", openapi_extra=json_body("ClassifyRequest"),
                 responses={200: {"model": ClassifyResponse}, **errors("simple", *INFER_ERRORS)})
    async def classify_route(request: Request) -> Response:
        return (await classify(engine, await request.body(), request.headers)).response()

    return router
