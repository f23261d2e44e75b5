"""One table from the exception tree to HTTP statuses, and the error body of each API.

Every route of every API raises :class:`~bertserve.errors.BertserveError` subclasses; the app
turns them into responses here and nowhere else. The three APIs differ only in the body's
shape: OpenAI ``{"error": {"message", "type", "code"}}``, KServe v2 ``{"error": "message"}``,
the simple JSON API ``{"error": {"type", "message"}}``.
"""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse

from ..errors import (
    ArtifactError,
    BackendError,
    BertserveError,
    BodyTooLargeError,
    ConfigError,
    InputError,
    MalformedBodyError,
    NotFoundError,
    OverloadedError,
    RequestTooLargeError,
    TextTooLongError,
    UnavailableError,
    UnknownModelError,
)

# Most specific first; the first class in an error's MRO found here decides its status.
STATUS: dict[type[BertserveError], int] = {
    MalformedBodyError: 400,
    BodyTooLargeError: 413,
    RequestTooLargeError: 413,
    UnknownModelError: 404,
    NotFoundError: 404,
    TextTooLongError: 413,
    InputError: 422,
    ConfigError: 400,
    OverloadedError: 429,
    UnavailableError: 503,
    BackendError: 500,
    ArtifactError: 500,
    BertserveError: 500,
}


def status_of(exc: BertserveError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def api_of(path: str) -> str:
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/v2"):
        return "v2"
    return "simple"


def error_response(exc: BertserveError, path: str) -> JSONResponse:
    status = status_of(exc)
    message = str(exc)
    api = api_of(path)
    if api == "openai":
        body: dict = {"error": {"message": message, "type": exc.kind, "param": None, "code": exc.kind}}
    elif api == "v2":
        body = {"error": message}
    else:
        body = {"error": {"type": exc.kind, "message": message}}
    headers = {}
    if isinstance(exc, OverloadedError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        headers["retry-after-ms"] = str(int(exc.retry_after_s * 1000))
    elif isinstance(exc, UnavailableError):
        headers["Retry-After"] = "1"
    return JSONResponse(body, status_code=status, headers=headers)
