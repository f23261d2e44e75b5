"""Who may call, and what each call is called: API keys, request IDs, the access log.

One pass over a request's headers finds its key and its ``x-request-id`` (kept if it is a sane
token, else one is made); both go in the ASGI scope, so the hot path and the FastAPI routes
answer with the same ID in the ``x-request-id`` header, in error bodies and in the log line.
Keys are compared in constant time against every configured key (no early exit).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from starlette.types import Message, Scope, Send

REQUEST_ID = "bertserve.request_id"  # scope keys
AUTHORIZED = "bertserve.authorized"
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})  # the contract is public
HEALTH = frozenset({"/health", "/v2/health/live", "/v2/health/ready", "/metrics"})
MAX_ID = 128

log = logging.getLogger("bertserve.access")


def sane_id(value: bytes) -> bool:
    return 0 < len(value) <= MAX_ID and all(0x21 <= b <= 0x7E for b in value)


class Access:
    """API keys and request IDs for every request, and the access log if one is asked for."""

    def __init__(self, keys: Sequence[str], *, keys_for_health: bool = False,
                 log_format: str = "off") -> None:
        self.keys = [k.encode() for k in keys]
        self.keys_for_health = keys_for_health
        self.log_format = log_format
        if log_format != "off" and not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False

    @property
    def on(self) -> bool:
        return bool(self.keys)

    def admit(self, scope: Scope) -> bool:
        """Give the request its ID (in the scope); whether it may go on (False: answer 401)."""
        rid: bytes | None = None
        presented: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value
            elif name == b"authorization":
                scheme, _, token = value.partition(b" ")
                presented = token.strip() if scheme.lower() == b"bearer" else None
            elif name == b"x-api-key":
                presented = value.strip()
        scope[REQUEST_ID] = rid.decode("ascii") if rid is not None and sane_id(rid) else os.urandom(8).hex()
        authorized = self.valid(presented)
        scope[AUTHORIZED] = authorized
        path: str = scope["path"]
        return authorized or path in DOCS or (path in HEALTH and not self.keys_for_health)

    def valid(self, presented: bytes | None) -> bool:
        if not self.keys:
            return True
        if presented is None:
            return False
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(key, presented)
        return ok

    def logged(self, scope: Scope, status: int, started: float) -> None:
        if self.log_format == "off":
            return
        ms = (time.perf_counter() - started) * 1e3
        method, path, rid = scope["method"], scope["path"], scope.get(REQUEST_ID)
        client = scope.get("client")
        peer = f"{client[0]}:{client[1]}" if client else "-"
        if self.log_format == "json":
            log.info(json.dumps({"time": round(time.time(), 3), "request_id": rid, "method": method,
                                 "path": path, "status": status, "ms": round(ms, 3), "client": peer}))
        else:
            log.info("%s %s %s %d %.1f ms %s", peer, method, path, status, ms, rid)

    def tagged(self, scope: Scope, send: Send) -> Send:
        """``send`` with the request ID on the answer and, once it is sent, its log line."""
        rid = scope[REQUEST_ID].encode("ascii")
        started = time.perf_counter()
        status = 500

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.logged(scope, status, started)

        return tagged_send
