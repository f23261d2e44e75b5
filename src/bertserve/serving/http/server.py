"""Run the app under uvicorn with a graceful SIGTERM: stop accepting, answer everything, exit 0.

uvicorn re-raises a caught SIGTERM after its shutdown, which makes the process exit with 143;
a server that drained cleanly should exit 0, so this server only records the signal.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Generator

import uvicorn

from ...config import ServerSettings
from ...errors import BertserveError
from ..core.engine import Engine
from .app import create_app


class GracefulServer(uvicorn.Server):
    """uvicorn.Server whose signal handling ends in a normal return."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def say(message: str) -> None:
    """A status line on stderr: what the server is doing, whatever uvicorn's log level."""
    print(f"bertserve: {message}", file=sys.stderr, flush=True)


def serve(settings: ServerSettings) -> None:
    """Serve until SIGTERM/SIGINT; raise BertserveError if the model could not be started."""
    fatal: list[str] = []
    server: GracefulServer | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    def on_ready(engine: Engine) -> None:
        workers, threads = settings.worker_layout()
        students = f", up to {engine.info.max_students} students" if engine.info.max_students > 1 else ""
        say(f"serving {engine.info.name} on http://{settings.host}:{settings.port} ({workers} worker(s) × "
            f"{threads} thread(s), SLO {settings.slo_ms:g} ms{students}); Ctrl-C to stop")

    keys = settings.api_keys()  # a missing key file fails now, before the model loads
    if not keys and settings.host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: listening on {settings.host} without API keys: anyone who can reach this port "
            "can use the model (--api-key or --api-key-file)")
    say(f"loading {settings.model or 'the bundled all-MiniLM-L6-v2'} (export, warm-up and the "
        "start-up profile can take a minute the first time)")
    app = create_app(settings, on_fatal=on_fatal, on_ready=on_ready)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=None, lifespan="on")
    server = GracefulServer(config)
    server.run()
    if fatal:
        raise BertserveError(f"the server could not start the model: {fatal[0]}")
