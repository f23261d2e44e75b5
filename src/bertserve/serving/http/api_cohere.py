"""Cohere-compatible ``POST /v2/rerank`` (the official ``cohere`` client's ``ClientV2.rerank`` works
unchanged against ``base_url="http://host:port"``).

``{model, query, documents, top_n?}`` → ``{id, results: [{index, relevance_score}], meta}``, best
first, ``relevance_score`` = sigmoid(logit) in [0, 1]. ``id`` is the request's ID
(``x-request-id``). ``max_tokens_per_doc`` and ``relevant_spans`` are accepted and not applied
(each pair is cut to the model's own token limit; no spans): ``meta.warnings`` says so.
``priority`` is checked and not applied (every request shares the one SLO-ordered queue). Errors
are Cohere's ``{"id", "message"}``; its client raises its own exception for each status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InputError
from ...postprocess import sigmoid
from ..core.engine import Engine
from .access import REQUEST_ID
from .api_simple import request_options
from .bodies import json_object
from .encode import Reply, json_reply
from .ranking import query_and_documents, ranking, require
from .schemas import INFER_ERRORS, CohereRerankResponse, errors, json_body

RID = "x-request-id"  # the handler's copy of the request's ID (set by the hot path, not the client)
SEARCH_UNIT = 100  # documents per Cohere "search unit"


def optional_int(body: dict[str, Any], name: str, least: int | None = 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():  # 3.0 is an integer to JSON Schema
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (least is not None and value < least):
        floor = f" of at least {least}" if least is not None else ""
        raise InputError(f"{name} must be an integer{floor}")
    return value


async def rerank(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    body = json_object(raw)
    info = engine.info
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise InputError('the body needs a "model" field naming the served model')
    opts = request_options(engine, body, headers)  # also: the model must be the one served (404)
    query, docs = query_and_documents(body, "documents")
    top_n = optional_int(body, "top_n")
    warnings = []
    if optional_int(body, "max_tokens_per_doc") is not None:
        warnings.append("max_tokens_per_doc is not applied: each (query, document) pair is cut to the "
                        "model's own token limit")
    spans = body.get("relevant_spans")
    if spans is not None and not isinstance(spans, dict):
        raise InputError("relevant_spans must be an object")
    if spans:
        warnings.append("relevant_spans is not supported: no spans are returned")
    optional_int(body, "priority", least=None)  # checked, not applied: requests share one queue
    require(info, "POST /v2/rerank", "rerank")
    out = await engine.infer([query] * len(docs), text_pairs=docs, **opts)
    scores = sigmoid(out.outputs[:, 0])
    order = ranking(scores)[:top_n]
    meta: dict[str, Any] = {"api_version": {"version": "2"},
                            "billed_units": {"search_units": math.ceil(len(docs) / SEARCH_UNIT)},
                            "tokens": {"input_tokens": out.tokens, "output_tokens": 0}}
    if warnings:
        meta["warnings"] = warnings
    return json_reply({"id": headers.get(RID),
                       "results": [{"index": i, "relevance_score": float(scores[i])} for i in order],
                       "meta": meta}, headers={"x-bertserve-students": str(out.students)})


def build_router(engine: Engine) -> APIRouter:
    """The route as OpenAPI documents it; :mod:`.hotpath` serves the same handler first."""
    router = APIRouter()
    students = {"x-bertserve-students": {"description": "ensemble students that ran",
                                         "schema": {"type": "string"}}}

    @router.post("/v2/rerank", summary="Rerank documents against a query (Cohere-compatible)",
                 openapi_extra=json_body("CohereRerankRequest"),
                 responses={200: {"model": CohereRerankResponse, "headers": students},
                            **errors("cohere", *INFER_ERRORS)})
    async def rerank_route(request: Request) -> Response:
        headers = {**request.headers, RID: request.scope.get(REQUEST_ID) or ""}
        return (await rerank(engine, await request.body(), headers)).response()

    return router
