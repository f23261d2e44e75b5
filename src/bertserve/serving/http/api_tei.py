"""Hugging Face text-embeddings-inference (TEI) compatible: ``POST /rerank`` and ``POST /predict``.

``/rerank`` ``{query, texts, raw_scores?, return_text?, truncate?}`` → ``[{index, score, text?}]``,
best first; ``score`` is sigmoid(logit) of the (query, text) pair, the logit itself with
``raw_scores``. A request of N texts is N pairs for the engine, batched with everyone else's.

``/predict`` ``{inputs, raw_scores?, truncate?}``: ``inputs`` is one sequence or a batch of them,
a sequence being ``[text, text_pair]`` for a pair model, a string (or ``[text]``) for a
single-text classifier. One sequence → ``[{score, label}]`` over the labels, best first; a batch
→ one such list per sequence. Scores are softmax over the labels (sigmoid for a one-logit
reranker), the logits with ``raw_scores``.

Errors come as TEI's ``{"error", "error_type"}`` (:mod:`.status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...errors import InputError
from ...postprocess import sigmoid, softmax
from ..core.engine import Engine, Outcome
from .api_simple import request_options
from .bodies import json_object
from .encode import Reply, json_reply
from .ranking import flag, labels_of, query_and_documents, ranking, require, right_truncation
from .schemas import INFER_ERRORS, TEIPredictResponse, TEIRerankResponse, errors, json_body

STUDENTS = "x-bertserve-students"


def options(engine: Engine, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
    right_truncation(body)
    return request_options(engine, {k: body[k] for k in ("slo_ms", "truncate") if k in body}, headers)


def answer(content: Any, out: Outcome) -> Reply:
    return json_reply(content, headers={STUDENTS: str(out.students)})


async def rerank(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    body = json_object(raw)
    query, texts = query_and_documents(body, "texts")
    raw_scores, return_text = flag(body, "raw_scores"), flag(body, "return_text")
    opts = options(engine, body, headers)
    require(engine.info, "POST /rerank", "rerank")
    out = await engine.infer([query] * len(texts), text_pairs=texts, **opts)
    logits = out.outputs[:, 0]
    scores = logits if raw_scores else sigmoid(logits)
    ranks = []
    for i in ranking(scores):
        rank: dict[str, Any] = {"index": i, "score": float(scores[i])}
        if return_text:
            rank["text"] = texts[i]
        ranks.append(rank)
    return answer(ranks, out)


def sequences(inputs: Any) -> tuple[list[list[str]], bool]:
    """TEI's ``inputs``: the sequences (each one text or a pair), and whether it was a batch."""
    if isinstance(inputs, str):
        return [[inputs]], False
    if not isinstance(inputs, list) or not inputs:
        raise InputError('"inputs" must be a sequence (a string, [text] or a pair [text, text_pair]) '
                         "or a non-empty batch of them ([[text, text_pair], ...])")
    if all(isinstance(x, str) for x in inputs):
        batch, seqs = False, [inputs]
    elif all(isinstance(x, list) for x in inputs):
        batch, seqs = True, inputs
    else:
        raise InputError('"inputs" mixes strings and lists: send one sequence, or a batch of sequences')
    for i, seq in enumerate(seqs):
        where = f"inputs[{i}]" if batch else "inputs"
        if not 1 <= len(seq) <= 2:
            raise InputError(f"{where} has {len(seq)} elements: a sequence is [text] or [text, text_pair]")
        for j, t in enumerate(seq):
            if not isinstance(t, str):
                raise InputError(f"{where}[{j}] is a {type(t).__name__}, not a string")
    return seqs, batch


def predictions(logits: np.ndarray, labels: list[str], raw_scores: bool) -> list[list[dict[str, Any]]]:
    scores = logits if raw_scores else softmax(logits) if logits.shape[1] > 1 else sigmoid(logits)
    return [[{"score": float(row[j]), "label": labels[j]} for j in ranking(row)] for row in scores]


async def predict(engine: Engine, raw: bytes, headers: Mapping[str, str]) -> Reply:
    body = json_object(raw)
    if "inputs" not in body:
        raise InputError('the body needs an "inputs" field: a pair [text, text_pair], a text, or a batch')
    seqs, batch = sequences(body["inputs"])
    raw_scores = flag(body, "raw_scores")
    opts = options(engine, body, headers)
    info = engine.info
    require(info, "POST /predict", "classify", "rerank")
    want = 2 if info.pairs else 1
    for i, seq in enumerate(seqs):
        if info.task is not None and len(seq) != want:
            where = f"inputs[{i}]" if batch else "inputs"
            raise InputError(f"{where} is a pair, but model {info.name!r} reads single texts" if want == 1
                             else f"{where} is one text, but model {info.name!r} reads text pairs: send "
                             "[text, text_pair]")
    pairs = [s[1] for s in seqs] if want == 2 else None
    out = await engine.infer([s[0] for s in seqs], text_pairs=pairs, **opts)
    found = predictions(out.outputs, labels_of(info, out.outputs.shape[1]), raw_scores)
    return answer(found if batch else found[0], out)


def build_router(engine: Engine) -> APIRouter:
    """The routes as OpenAPI documents them; :mod:`.hotpath` serves the same handlers first."""
    router = APIRouter()
    students = {STUDENTS: {"description": "ensemble students that ran", "schema": {"type": "string"}}}

    @router.post("/rerank", summary="Rerank texts against a query (TEI-compatible)",
                 openapi_extra=json_body("RerankRequest"),
                 responses={200: {"model": TEIRerankResponse, "headers": students,
                                  "description": "the texts, best first"}, **errors("tei", *INFER_ERRORS)})
    async def rerank_route(request: Request) -> Response:
        return (await rerank(engine, await request.body(), request.headers)).response()

    @router.post("/predict", summary="Classify sequences or text pairs (TEI-compatible)",
                 openapi_extra=json_body("PredictRequest"),
                 responses={200: {"model": TEIPredictResponse, "headers": students,
                                  "description": "per sequence, its labels, best first"},
                            **errors("tei", *INFER_ERRORS)})
    async def predict_route(request: Request) -> Response:
        return (await predict(engine, await request.body(), request.headers)).response()

    return router
