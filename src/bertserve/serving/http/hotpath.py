"""The inference routes served straight off ASGI, before FastAPI's stack.

On 2 cores the front process's CPU is capacity: FastAPI's routing, dependency solving, the
middleware chain (body cap, disconnect watch, metrics, error handling: each wraps ``send``
and ``receive`` once more) cost as much per request as tokenising and batching together
(``benchmarks/serving_cost.py``). The inference routes (``/embed``, ``/classify``,
``/v1/embeddings``, v2 ``infer``, TEI's ``/rerank`` and ``/predict``, Cohere's ``/v2/rerank``)
are served here instead, by the same handlers the FastAPI
routes call, with the same limits, errors and metrics; every other route, and the OpenAPI
document of all of them, stay with FastAPI.

Per request: the body is read with the size cap, one callback watches for the client hanging
up (the handler is then cancelled, the engine drops its queued texts, the request counts as 499),
errors become the API's error body, and the answer goes out as two ASGI messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ...errors import BertserveError, BodyTooLargeError
from ..core.engine import Engine
from . import api_cohere, api_openai, api_simple, api_tei, api_v2
from .access import REQUEST_ID, Access
from .encode import Reply
from .status import error_reply

log = logging.getLogger("bertserve.app")

CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, the metrics count it
HEADERS_READ = (b"x-slo-ms", api_v2.HEADER.encode())  # the only request headers handlers read

Handler = Callable[[bytes, dict[str, str]], Awaitable[Reply]]


class InferenceRoutes:
    """Match an inference route and serve it; ``None`` from :meth:`route` means "not mine"."""

    def __init__(self, engine: Engine, max_body_bytes: int, access: Access | None = None) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        self.access = access
        self.fixed: dict[str, tuple[str, Handler]] = {
            "/embed": ("simple", lambda raw, h: api_simple.embed(engine, raw, h)),
            "/classify": ("simple", lambda raw, h: api_simple.classify(engine, raw, h)),
            "/v1/embeddings": ("openai", lambda raw, h: api_openai.embeddings(engine, raw, h)),
            "/rerank": ("tei", lambda raw, h: api_tei.rerank(engine, raw, h)),
            "/predict": ("tei", lambda raw, h: api_tei.predict(engine, raw, h)),
            "/v2/rerank": ("cohere", lambda raw, h: api_cohere.rerank(engine, raw, h)),
        }
        metrics = engine.metrics
        self._requests = metrics.requests
        self._latency = {api: metrics.request_latency.labels(api)
                         for api in ("simple", "openai", "v2", "tei", "cohere")}
        self._counters: dict[tuple[str, int], Any] = {}

    def route(self, scope: Scope) -> tuple[str, Handler] | None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        hit = self.fixed.get(path)
        if hit is not None or not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return hit
        name, version = v2_model(path[len("/v2/models/"):-len("/infer")])
        if not name:
            return None  # FastAPI answers its 404
        engine = self.engine
        return "v2", lambda raw, h: api_v2.infer(engine, name, version, raw, h)

    def count(self, api: str, status: int, started: float) -> None:
        counter = self._counters.get((api, status))
        if counter is None:
            counter = self._counters[(api, status)] = self._requests.labels(api, str(status))
        counter.inc()
        if status == 200:
            self._latency[api].observe(time.perf_counter() - started)

    async def serve(self, api: str, handler: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        rid: str | None = scope.get(REQUEST_ID)
        headers: dict[str, str] = {}
        declared = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name in HEADERS_READ:
                headers[name.decode()] = value.decode("latin-1")
        if rid is not None:
            headers[api_cohere.RID] = rid  # the ID this server gave the request (Cohere's "id")
        status = 500
        try:
            try:
                raw = await self.read_body(receive, declared)
            except BodyTooLargeError as exc:
                status = await self.answer(send, error_reply(exc, path, request_id=rid), rid)
                return
            if raw is None:  # gone before it finished sending
                status = CLIENT_CLOSED
                return
            try:
                reply = await self.run(handler, raw, headers, receive, path, rid)
            except ClientGone:
                status = CLIENT_CLOSED
                return
            status = await self.answer(send, reply, rid)
        finally:
            self.count(api, status, started)
            if self.access is not None:
                self.access.logged(scope, status, started)

    async def run(self, handler: Handler, raw: bytes, headers: dict[str, str], receive: Receive,
                  path: str, rid: str | None = None) -> Reply:
        """The handler's reply; cancelled (CancelledError) if the client hangs up first."""
        task = asyncio.current_task()
        gone = done = False

        def hung_up(watch: asyncio.Future[Message]) -> None:
            nonlocal gone
            if not done and task is not None and not watch.cancelled() and watch.exception() is None \
                    and watch.result()["type"] == "http.disconnect":
                gone = True
                task.cancel()

        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(hung_up)
        try:
            return await handler(raw, headers)
        except BertserveError as exc:
            return error_reply(exc, path, request_id=rid)
        except asyncio.CancelledError:
            if not gone:
                raise  # the server cancelled us, not the client
            if task is not None:
                task.uncancel()
            raise ClientGone from None
        except Exception as exc:
            log.exception("unexpected error on %s", path)
            return error_reply(BertserveError(f"internal error: {type(exc).__name__}"), path, request_id=rid)
        finally:
            done = True
            if not watch.done():
                watch.cancel()

    async def read_body(self, receive: Receive, declared: int) -> bytes | None:
        limit = self.max_body_bytes
        too_big = BodyTooLargeError(f"the request body is larger than the limit of {limit} bytes")
        if declared > limit:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def answer(send: Send, reply: Reply, rid: str | None = None) -> int:
        headers = reply.raw_headers()
        if rid is not None:
            headers.append((b"x-request-id", rid.encode("ascii")))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return reply.status


def v2_model(part: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME/versions/V`` of a v2 path; a name may hold ``/`` (``org/model``)."""
    name, sep, version = part.rpartition("/versions/")
    if sep and name and version and "/" not in version:
        return name, version
    return part, None


class ClientGone(Exception):
    """The client hung up before its answer was ready."""
