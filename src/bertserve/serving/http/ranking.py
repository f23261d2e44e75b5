"""Scores of pair models for the rerank APIs (TEI, Cohere, KServe v2), and what they share:
which model a route serves, reading a query with its documents, the ranking."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from ..core.engine import VISIBLE
from ..core.info import ModelInfo

KIND = {"embed": "an embedder", "classify": "a classifier", "rerank": "a reranker (a cross-encoder)"}
ROUTES = {"embed": "POST /embed or /v1/embeddings", "classify": "POST /classify or /predict",
          "rerank": "POST /rerank, /v2/rerank or /predict"}


def require(info: ModelInfo, route: str, *tasks: str) -> None:
    """Refuse (422) a route that the served model's task does not answer, naming the ones it does."""
    if info.task is None or info.task in tasks:
        return
    wanted = " or ".join(KIND.get(t, t) for t in tasks)
    raise InputError(f"model {info.name!r} is {KIND.get(info.task, info.task)}; {route} needs {wanted}: "
                     f"use {ROUTES.get(info.task, 'another route')}")


def flag(body: dict[str, Any], name: str) -> bool:
    """An optional boolean field (absent or null: false)."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false")
    return value


def right_truncation(body: dict[str, Any]) -> None:
    """TEI's ``truncation_direction``: only right truncation is done here."""
    direction = body.get("truncation_direction")
    if direction is not None and direction not in ("right", "Right"):
        raise InputError(f"truncation_direction {direction!r} is not supported: only right "
                         "(a text too long for the model loses its end)")


def query_and_documents(body: dict[str, Any], field: str) -> tuple[str, list[str]]:
    """The ``query`` string and the ``field`` list of documents of a rerank body."""
    if "query" not in body:
        raise InputError('the body needs a "query" field: a string')
    query = body["query"]
    if not isinstance(query, str):
        raise InputError(f'"query" must be a string, not a {type(query).__name__}')
    if VISIBLE.search(query) is None:
        raise InputError('"query" is empty (nothing but white space)')
    if field not in body:
        raise InputError(f'the body needs a "{field}" field: a list of strings to rank against the query')
    docs = body[field]
    if not isinstance(docs, list):
        raise InputError(f'"{field}" must be a list of strings, not a {type(docs).__name__}')
    if not docs:
        raise InputError(f'"{field}" is empty: send at least one document')
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise InputError(f'"{field}"[{i}] is a {type(d).__name__}, not a string')
    return query, docs


def ranking(scores: np.ndarray) -> list[int]:
    """Indices by score, best first; ties keep input order."""
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]


def labels_of(info: ModelInfo, width: int) -> list[str]:
    """The head's labels; ``LABEL_i`` (Hugging Face's default names) where the model has none."""
    if len(info.labels) == width:
        return list(info.labels)
    return [f"LABEL_{i}" for i in range(width)]
