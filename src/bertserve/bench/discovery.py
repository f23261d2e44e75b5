"""Which model a server serves, for the APIs whose requests name it (``openai``, ``kserve``,
``cohere-rerank``).

A request naming a model the server does not serve fails (404 on bertserve), so a bench run
without ``--model-name`` asks the server first:

- ``openai``: ``GET /v1/models`` (``{"data": [{"id": ...}]}``, the OpenAI list).
- ``kserve``: a model named in the URL itself (``/v2/models/NAME``, ``.../infer``); else the repository
  index (``POST /v2/repository/index``: Triton, MLServer; its ready models), ``GET /v2/models``
  (KServe's Python server: ``{"models": [...]}``), and ``GET /v1/models`` (bertserve, which serves
  the OpenAI API beside KServe v2, and other servers that do the same).
- ``cohere-rerank``: ``GET /v1/models`` (bertserve lists its model there, whatever the API).

The first answer that names at least one model wins; none (or no server) gives ``[]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .client import HttpSender
from .targets import KSERVE_TAIL as _KSERVE_TAIL

_OPENAI_TAIL = re.compile(r"/v1(/embeddings)?/*$")
_COHERE_TAIL = re.compile(r"/v2(/rerank)?/*$")


def base_url(api: str, url: str) -> str:
    """The server's root: ``url`` without the API's own path, when it was given in full."""
    tail = {"openai": _OPENAI_TAIL, "cohere-rerank": _COHERE_TAIL}.get(api, _KSERVE_TAIL)
    return tail.sub("", url.rstrip("/")) if tail.search(url) else url.rstrip("/")


def model_in_url(api: str, url: str) -> str | None:
    """The model a KServe URL names (``.../v2/models/NAME``, ``.../versions/V``, ``.../infer``), else None."""
    if api != "kserve":
        return None
    found = _KSERVE_TAIL.search(url)
    return found.group("name") if found else None


def _openai_ids(data: Any) -> list[str]:
    rows = data.get("data") if isinstance(data, dict) else None
    return [r["id"] for r in rows or [] if isinstance(r, dict) and isinstance(r.get("id"), str)]


def _repository_index(data: Any) -> list[str]:
    rows = [r for r in data if isinstance(r, dict) and isinstance(r.get("name"), str)] \
        if isinstance(data, list) else []
    ready = [r["name"] for r in rows if str(r.get("state", "")).upper() == "READY"]
    return ready or [r["name"] for r in rows if "state" not in r]


def _kserve_models(data: Any) -> list[str]:
    rows = data.get("models") if isinstance(data, dict) else None
    return [r for r in rows or [] if isinstance(r, str)]


Probe = tuple[str, bytes | None, Callable[[Any], list[str]]]  # path, POST body (None: GET), parser

PROBES: dict[str, list[Probe]] = {
    "openai": [("/v1/models", None, _openai_ids)],
    "kserve": [("/v2/repository/index", b"{}", _repository_index), ("/v2/models", None, _kserve_models),
               ("/v1/models", None, _openai_ids)],
    "cohere-rerank": [("/v1/models", None, _openai_ids)],
}


async def discover_models(api: str, url: str, sender: HttpSender) -> list[str]:
    """The names of the models the server at ``url`` serves (deduplicated, in its order); [] if unknown."""
    named = model_in_url(api, url)
    if named:
        return [named]
    base = base_url(api, url)
    for path, post, parse in PROBES.get(api, []):
        names = parse(await sender.get_json(base + path, post))
        if names:
            return list(dict.fromkeys(names))
    return []
