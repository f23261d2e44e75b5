"""Reading request bodies safely: a size cap enforced while streaming, strict UTF-8 JSON.

The cap is a plain ASGI middleware so a huge body is refused from its ``Content-Length`` before
any of it is read, and a body without one is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...errors import BodyTooLargeError, InputError, MalformedBodyError
from .status import error_response


class BodyLimit:
    """Refuse request bodies above ``max_bytes`` with 413, whatever the route."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = BodyTooLargeError(f"the request body is larger than the limit of {self.max_bytes} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await error_response(too_big, scope.get("path", ""),
                                         request_id=scope.get("bertserve.request_id"))(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_big
            return message

        await self.app(scope, limited, send)


def parse_json(raw: bytes, what: str = "the request body") -> Any:
    """Strict UTF-8 JSON, or a 400 that says what is wrong with it.

    orjson parses the common case ~5× faster than ``json``; what it refuses (bad input, but also
    NaN, lone surrogates or huge integers, which ``json`` reads) goes to ``json`` for the same
    answer and an error message with line and column.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    if not raw:
        raise MalformedBodyError(f"{what} is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBodyError(f"{what} is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedBodyError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                 f"column {exc.colno}") from exc
    except RecursionError as exc:
        raise MalformedBodyError(f"{what} is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise MalformedBodyError(f"{what} is not usable JSON: {exc}") from exc


MAX_SLO_MS = 3_600_000.0  # an hour: past that a deadline is a mistake, not a target


def slo_of(value: object, where: str = "slo_ms") -> float | None:
    """A request's latency target in ms (body field or header): finite, positive, or None if absent."""
    if value is None:
        return None
    if isinstance(value, bool):  # JSON true is not 1 ms
        raise InputError(f"{where} must be a number of milliseconds, not {str(value).lower()}")
    try:
        ms = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{where} must be a number of milliseconds") from exc
    if not (math.isfinite(ms) and 0 < ms <= MAX_SLO_MS):
        raise InputError(f"{where} must be a number of milliseconds above 0 and at most {MAX_SLO_MS:.0f}")
    return ms


def json_object(raw: bytes) -> dict[str, Any]:
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise MalformedBodyError(f"the request body must be a JSON object, not a {type(data).__name__}")
    return data
