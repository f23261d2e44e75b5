"""Stop working for clients that have gone: an ASGI middleware for the inference routes.

Starlette keeps running a handler whose client hung up, so an abandoned request would still be
tokenised, queued and computed, and hold queue room other clients are refused for. Once the app
has read the whole body, a watcher waits for ``http.disconnect``; if it arrives before the
response starts, the handler's task is cancelled (the engine then drops the request's texts
that still wait) and the request is recorded with status 499, nginx's "client closed request".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLIENT_CLOSED = 499


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, watch: Callable[[str], bool]) -> None:
        self.app = app
        self.watch = watch  # which paths to watch (the cheap routes need no second task)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.watch(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        later: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        started = False
        gone = False

        async def app_receive() -> Message:
            if body_read.is_set():  # the watcher owns the channel now: share what it gets
                return await asyncio.shield(later)
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watcher() -> None:
            nonlocal gone
            await body_read.wait()
            message = await receive()
            later.set_result(message)
            if message["type"] == "http.disconnect" and not started and not handler.done():
                gone = True
                handler.cancel()

        watching = asyncio.ensure_future(watcher())
        try:
            await handler
        except asyncio.CancelledError:
            if not gone:  # the server cancelled us, not the client
                handler.cancel()
                raise
            # nobody reads this answer; it lets the metrics middleware count a 499 (a server may
            # refuse to send on a closed connection: that is fine too)
            with contextlib.suppress(Exception):
                await send({"type": "http.response.start", "status": CLIENT_CLOSED, "headers": []})
                await send({"type": "http.response.body", "body": b""})
        finally:
            watching.cancel()
