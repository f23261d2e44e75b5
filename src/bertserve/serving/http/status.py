"""From the exception tree to HTTP responses: the status and the error body of each API.

Every route of every API raises :class:`~bertserve.errors.BertserveError` subclasses; the
status of each class is set here (:data:`STATUS`, found along the class's MRO, so a subclass
inherits its parent's) and nowhere else. The APIs differ only in the body's shape: OpenAI
``{"error": {"message", "type", "param", "code"}}`` (OpenAI's types, our kind as the code),
KServe v2 ``{"error": "message"}``, the simple JSON API ``{"error": {"type", "message"}}``,
TEI (``/rerank``, ``/predict``) ``{"error": "message", "error_type"}`` (TEI's types) and Cohere
(``/v2/rerank``) ``{"id", "message"}``.
"""

from __future__ import annotations

import math

from starlette.responses import Response

from ...errors import (
    BertserveError,
    BodyTooLargeError,
    ConfigError,
    InputError,
    MalformedBodyError,
    OverloadedError,
    RequestTooLargeError,
    TextTooLongError,
    UnavailableError,
    UnknownModelError,
)
from .encode import Reply, json_reply


class RouteNotFoundError(BertserveError):
    """No such route: an HTTP error, not a property of the input."""

    kind = "not_found"


class UnauthorizedError(BertserveError):
    """The server takes API keys and the request bears none of them."""

    kind = "unauthorized"


STATUS: dict[type[BertserveError], int] = {
    BertserveError: 500,  # ArtifactError, BackendError and anything unforeseen
    ConfigError: 400,
    InputError: 422,
    MalformedBodyError: 400,
    TextTooLongError: 413,
    BodyTooLargeError: 413,
    RequestTooLargeError: 413,  # never servable as sent, so not a 429
    UnknownModelError: 404,
    RouteNotFoundError: 404,
    UnauthorizedError: 401,
    OverloadedError: 429,
    UnavailableError: 503,
}


def status_of(exc: BertserveError) -> int:
    """The HTTP status of an error: that of the nearest class in :data:`STATUS`."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


TEI_ROUTES = frozenset({"/rerank", "/predict"})  # Hugging Face text-embeddings-inference's
COHERE_ROUTES = frozenset({"/v2/rerank"})


def api_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path in TEI_ROUTES:
        return "tei"
    if path in COHERE_ROUTES:
        return "cohere"
    if path.startswith("/v2"):
        return "v2"
    return "simple"


def openai_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status == 503:
        return "service_unavailable_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def tei_type(exc: BertserveError, status: int) -> str:
    """TEI's ``error_type``: its five, plus ``unauthorized`` (TEI sends a 401 without a body)."""
    if status == 401:
        return "unauthorized"
    if status == 429:
        return "overloaded"
    if status == 503:
        return "unhealthy"
    if status >= 500:
        return "backend"
    return "tokenizer" if isinstance(exc, TextTooLongError) else "validation"


def error_reply(exc: BertserveError, path: str, status: int | None = None,
                request_id: str | None = None) -> Reply:
    """The body and headers of an error in the shape of the API that ``path`` belongs to, with
    the request's ID in the body so a user can quote it (the ``x-request-id`` header is added
    where every answer is sent: ``hotpath.InferenceRoutes.answer``, ``access.Access.tagged``)."""
    status = status or status_of(exc)
    message = str(exc)
    api = api_of(path)
    if api == "openai":  # OpenAI's error types; our finer kind goes in "code"
        body: dict = {"error": {"message": message, "type": openai_type(status), "param": None,
                                "code": exc.kind}}
        if request_id:
            body["error"]["request_id"] = request_id
    elif api == "v2":
        body = {"error": message}
        if request_id:
            body["request_id"] = request_id
    elif api == "tei":
        body = {"error": message, "error_type": tei_type(exc, status)}
        if request_id:
            body["request_id"] = request_id
    elif api == "cohere":  # Cohere's: the call's id and a message (its client reads any JSON)
        body = {"id": request_id, "message": message}
    else:
        body = {"error": {"type": exc.kind, "message": message}}
        if request_id:
            body["error"]["request_id"] = request_id
    headers = {}
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = 'Bearer realm="bertserve"'

    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        headers["retry-after-ms"] = str(int(exc.retry_after_s * 1000))
    elif isinstance(exc, UnavailableError):
        headers["Retry-After"] = "1"
    return json_reply(body, status=status, headers=headers)


def error_response(exc: BertserveError, path: str, status: int | None = None,
                   request_id: str | None = None) -> Response:
    return error_reply(exc, path, status, request_id).response()
