"""The HTTP side of the load generator: one pooled aiohttp session, errors sorted into kinds.

aiohttp rather than httpx: on two shared cores its per-request CPU cost is several times lower,
and the client must never be what limits the measured rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..errors import ConfigError, UnavailableError

# No compression asked for: it would cost the server and the client CPU on every answer.
JSON_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


class HttpError(Exception):
    """A non-2xx answer; ``kind`` is ``http_<status>``."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        self.status = status
        self.kind = f"http_{status}"


def error_kind(exc: BaseException) -> str:
    """A short, stable name for what went wrong, used to count errors by kind."""
    if isinstance(exc, HttpError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "bad_payload"
    if isinstance(exc, aiohttp.ClientError):
        return "client_error"
    return type(exc).__name__


def describe(exc: BaseException) -> str:
    """One line for a user: the error's kind, and its message when it has one."""
    text = " ".join(str(exc).split())
    if isinstance(exc, HttpError) or not text:
        return text or error_kind(exc)  # an HttpError's text starts with its status
    return f"{error_kind(exc)}: {text}"


async def check_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`UnavailableError` when nothing accepts a TCP connection at ``url``'s host and port.

    Checked once before a run, so a wrong URL fails at once with one clear line instead of
    after a whole workload of ``connect`` errors.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"{url} has no valid port: {exc}") from exc
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError as exc:
        raise UnavailableError(f"nothing answers at {url}: no connection to {host}:{port} within "
                               f"{timeout_s:g} s") from exc
    except socket.gaierror as exc:
        raise UnavailableError(f"nothing answers at {url}: unknown host {host!r}") from exc
    except OSError as exc:
        # 'localhost' is tried on ::1 and 127.0.0.1: asyncio then joins the refusals in one OSError
        refused = isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc)
        reason = "refused (is the server running, on this port?)" if refused else f"failed: {exc}"
        raise UnavailableError(f"nothing answers at {url}: the connection to {host}:{port} {reason}") \
            from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class HttpSender:
    """POST a prepared JSON body to one URL; returns the answer's bytes or raises.

    ``max_connections`` bounds open sockets (keep-alive, reused); requests beyond it wait for a
    free connection inside aiohttp, which the scheduling lag then shows.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, max_connections: int = 1024) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0,
                                         enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            headers=JSON_HEADERS)
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __call__(self, body: bytes) -> bytes:
        if self._session is None:
            raise RuntimeError("use HttpSender as an async context manager")
        async with self._session.post(self.url, data=body) as resp:
            answer = await resp.read()
            if resp.status >= 300:
                raise HttpError(resp.status, answer)
            return answer

    async def get_ok(self, url: str) -> bool:
        """True when GET ``url`` answers 2xx (health checks)."""
        if self._session is None:
            raise RuntimeError("use HttpSender as an async context manager")
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                await resp.read()
                return resp.status < 300
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def get_json(self, url: str, post: bytes | None = None) -> Any:
        """GET ``url`` (or POST ``post`` to it) and parse a 2xx JSON answer; None for anything else."""
        if self._session is None:
            raise RuntimeError("use HttpSender as an async context manager")
        timeout = aiohttp.ClientTimeout(total=min(self.timeout_s, 10.0))
        try:
            if post is None:
                request = self._session.get(url, timeout=timeout)
            else:
                request = self._session.post(url, data=post, timeout=timeout)
            async with request as resp:
                answer = await resp.read()
                if resp.status >= 300:
                    return None
            return json.loads(answer)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
