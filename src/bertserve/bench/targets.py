"""The HTTP APIs the load generator can drive: how to build a request body and read the answer.

One small class per API so any server can be measured with the same tool:

- ``simple``:   bertserve's ``POST /embed {"texts": [...]}`` → ``{"model", "dim", "embeddings"}``
- ``openai``:   ``POST /v1/embeddings {"model", "input": [...]}`` → ``{"data": [{"embedding"}]}``
- ``kserve``:   ``POST /v2/models/{name}/infer`` with one BYTES input of shape [N] (or [N, 1])
- ``template``: any JSON POST; ``{texts}`` / ``{text}`` in the template are replaced by the
  request's texts as JSON, and ``response_path`` (dotted, e.g. ``data.0.embedding``) says where
  the embeddings are, when quality is measured.

Rerank APIs take one query and its documents (a :class:`RankTarget`, fed by a rerank workload):

- ``rerank``:        TEI's (and bertserve's) ``POST /rerank {"query", "texts", "truncate"}`` →
  ``[{"index", "score"}, ...]`` sorted by score.
- ``cohere-rerank``: Cohere's ``POST /v2/rerank {"model", "query", "documents"[, "top_n"]}`` →
  ``{"results": [{"index", "relevance_score"}], "meta"}``.

Bodies are built before the run (the client only sends bytes); answers are only parsed for the
quality check, so parsing never costs the load loop time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ConfigError, TargetError

if TYPE_CHECKING:
    from .workload import Phase


class Target(Protocol):
    """Where to send, what to send, how to read embeddings out of the answer."""

    api: str
    url: str

    def body(self, texts: list[str]) -> bytes: ...

    def embeddings(self, answer: bytes) -> np.ndarray: ...  # (N, D)


class RankTarget(Protocol):
    """Where to send a query with its documents, and how to read their scores out of the answer."""

    api: str
    url: str

    def rerank_body(self, query: str, documents: list[str]) -> bytes: ...

    def scores(self, answer: bytes, n: int) -> np.ndarray: ...  # (n,) in document order; nan: not returned


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _matrix(rows: Any) -> np.ndarray:
    out = np.asarray(rows, dtype=np.float32)
    if out.ndim == 1:
        out = out[None, :]
    if out.ndim != 2:
        raise TargetError(f"expected a (N, D) list of embeddings, got shape {out.shape}")
    return out


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + path if not base.rstrip("/").endswith(path) else base.rstrip("/")


# a KServe v2 URL's own path: /v2, /v2/models, /v2/models/NAME[/versions/V][/infer]
KSERVE_TAIL = re.compile(r"/v2(/models(/(?P<name>[^/]+)(/versions/[^/]+)?(/infer)?)?)?/*$")


def kserve_url(url: str, model: str) -> str:
    """The infer URL for ``url``: a URL that names a model (``.../v2/models/NAME``, with or
    without ``/versions/V`` and ``/infer``) keeps its model and gets ``/infer``; otherwise
    ``url`` is the server's base (``/v2`` at its end dropped) and ``model`` is added."""
    url = url.rstrip("/")
    found = KSERVE_TAIL.search(url)
    if found is not None and found.group("name") is not None:
        return url if url.endswith("/infer") else url + "/infer"
    base = url[: found.start()] if found is not None else url
    return f"{base}/v2/models/{model}/infer"


@dataclass(frozen=True, slots=True)
class SimpleTarget:
    url: str
    api: str = "simple"

    def body(self, texts: list[str]) -> bytes:
        return _json({"texts": texts})

    def embeddings(self, answer: bytes) -> np.ndarray:
        return _matrix(json.loads(answer)["embeddings"])


@dataclass(frozen=True, slots=True)
class OpenAITarget:
    url: str
    model: str
    api: str = "openai"

    def body(self, texts: list[str]) -> bytes:
        return _json({"model": self.model, "input": texts})

    def embeddings(self, answer: bytes) -> np.ndarray:
        data = sorted(json.loads(answer)["data"], key=lambda d: d.get("index", 0))
        return _matrix([d["embedding"] for d in data])


@dataclass(frozen=True, slots=True)
class KServeTarget:
    url: str
    input_name: str = "text"
    output_name: str | None = None
    column: bool = False  # shape [N, 1] instead of [N] (Triton models with max_batch_size > 0)
    api: str = "kserve"

    def body(self, texts: list[str]) -> bytes:
        shape = [len(texts), 1] if self.column else [len(texts)]
        return _json({"inputs": [{"name": self.input_name, "shape": shape, "datatype": "BYTES",
                                  "data": texts}]})

    def embeddings(self, answer: bytes) -> np.ndarray:
        outputs = json.loads(answer)["outputs"]
        out = next((o for o in outputs if o["name"] == self.output_name), None) if self.output_name \
            else outputs[0]
        if out is None:
            raise TargetError(f"the answer has no output named {self.output_name!r}")
        arr = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])  # (N, D)
        return _matrix(arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr)


def dig(obj: Any, path: str) -> Any:
    """Follow a dotted path (``data.0.embedding``) into parsed JSON; '' is the whole answer."""
    for key in filter(None, path.split(".")):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


@dataclass(frozen=True, slots=True)
class TemplateTarget:
    url: str
    template: str
    response_path: str = ""
    api: str = "template"

    def __post_init__(self) -> None:
        if "{texts}" not in self.template and "{text}" not in self.template:
            raise ConfigError("a body template needs a {texts} or {text} placeholder")

    def body(self, texts: list[str]) -> bytes:
        out = self.template.replace("{texts}", json.dumps(texts, ensure_ascii=False))
        out = out.replace("{text}", json.dumps(texts[0], ensure_ascii=False))
        return out.encode()

    def embeddings(self, answer: bytes) -> np.ndarray:
        return _matrix(dig(json.loads(answer), self.response_path))


def _scores(pairs: Sequence[tuple[Any, Any]], n: int) -> np.ndarray:
    out = np.full(n, np.nan, dtype=np.float32)
    for index, score in pairs:
        if not isinstance(index, int) or not 0 <= index < n:
            raise TargetError(f"the answer ranks document {index!r} of {n}")
        out[index] = float(score)
    return out


@dataclass(frozen=True, slots=True)
class TEIRerankTarget:
    """TEI's rerank API (bertserve serves the same): scores in the answer's order, by ``index``."""

    url: str
    truncate: bool = True  # a long document is cut, not refused: every request of the load is valid
    api: str = "rerank"

    def rerank_body(self, query: str, documents: list[str]) -> bytes:
        return _json({"query": query, "texts": documents, "truncate": self.truncate})

    def scores(self, answer: bytes, n: int) -> np.ndarray:
        rows = json.loads(answer)
        if not isinstance(rows, list):
            raise TargetError(f"expected a list of {{index, score}}, got {type(rows).__name__}")
        return _scores([(r["index"], r["score"]) for r in rows], n)


@dataclass(frozen=True, slots=True)
class CohereRerankTarget:
    url: str
    model: str
    top_n: int | None = None  # None: every document is ranked and returned
    api: str = "cohere-rerank"

    def rerank_body(self, query: str, documents: list[str]) -> bytes:
        body: dict[str, Any] = {"model": self.model, "query": query, "documents": documents}
        if self.top_n is not None:
            body["top_n"] = self.top_n
        return _json(body)

    def scores(self, answer: bytes, n: int) -> np.ndarray:
        rows = json.loads(answer)["results"]
        return _scores([(r["index"], r["relevance_score"]) for r in rows], n)


def is_rank_target(target: Target | RankTarget) -> bool:
    return target.api in RERANK_API_NAMES


def request_bodies(target: Target | RankTarget, phase: Phase) -> list[bytes]:
    """The bytes of each request of ``phase``: texts for an embedding API, a query and its
    documents for a rerank API; a phase that does not fit the API is a :class:`ConfigError`."""
    if is_rank_target(target):
        if phase.queries is None:
            raise ConfigError(f"the {target.api} API takes a query and documents: use a rerank workload "
                              "(--documents N, or a trace of {t, query, documents} lines)")
        rank: Any = target
        return [rank.rerank_body(q, docs) for q, docs in zip(phase.queries, phase.texts, strict=True)]
    if phase.queries is not None:
        raise ConfigError(f"a rerank workload needs a rerank API (--api {' | '.join(RERANK_API_NAMES)}), "
                          f"not {target.api}")
    embed: Any = target
    return [embed.body(t) for t in phase.texts]


def _join_v2(base: str, path: str) -> str:
    """``path`` (``/v2/...``) after a base that may already end in ``/v2`` or in ``path``."""
    base = base.rstrip("/")
    if base.endswith(path):
        return base
    return (base[:-3] if base.endswith("/v2") else base) + path


EMBED_API_NAMES = ("simple", "openai", "kserve", "template")
RERANK_API_NAMES = ("rerank", "cohere-rerank")
API_NAMES = EMBED_API_NAMES + RERANK_API_NAMES


def make_target(api: str, url: str, *, model: str = "default", input_name: str = "text",
                output_name: str | None = None, template: str | None = None,
                response_path: str = "", column: bool = False, top_n: int | None = None,
                truncate: bool = True) -> Target | RankTarget:
    """Build a target; ``url`` may be the server's base URL (the API's path is added) or a full URL.

    For ``kserve``, a URL that names a model is sent to that model (see :func:`kserve_url`).
    ``top_n`` is for ``cohere-rerank``, ``truncate`` for ``rerank``.
    """
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the URL must start with http:// or https://, got {url!r}")
    if api == "simple":
        return SimpleTarget(_join(url, "/embed"))
    if api == "openai":
        return OpenAITarget(_join(url, "/v1/embeddings"), model)
    if api == "kserve":
        return KServeTarget(kserve_url(url, model), input_name, output_name, column)
    if api == "template":
        if template is None:
            raise ConfigError("--api template needs --body-template, e.g. '{\"inputs\": {texts}}'")
        return TemplateTarget(url, template, response_path)
    if api == "rerank":
        return TEIRerankTarget(_join(url, "/rerank"), truncate)
    if api == "cohere-rerank":
        if top_n is not None and top_n < 1:
            raise ConfigError(f"top_n must be at least 1, got {top_n}")
        return CohereRerankTarget(_join_v2(url, "/v2/rerank"), model, top_n)
    raise ConfigError(f"unknown API {api!r}: use one of {', '.join(API_NAMES)}")
