"""Start a real bertserve server for integration tests: a subprocess, or uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from ports import free_port

READY_TIMEOUT_S = 180.0
FAST_START = {"BERTSERVE_PROFILE_MAX_TOKENS": "512", "BERTSERVE_PROFILE_REPEATS": "2",
              "BERTSERVE_LOG_LEVEL": "warning"}



def wait_ready(url: str, alive=lambda: True, timeout: float = READY_TIMEOUT_S,
               headers: dict[str, str] | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive():
            raise RuntimeError("the server exited while starting")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


class ServerProcess:
    """``bertserve serve MODEL --port P ARGS`` in a subprocess (real signals, real exit code)."""

    def __init__(self, model: Path | str, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **FAST_START, **(env or {})}
        # a file, not a pipe: a pipe nobody reads could block the server
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bertserve.cli", "serve", str(model), "--port", str(self.port), *args],
            env=full_env, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_ready(self.url, lambda: self.proc.poll() is None)
        except Exception:
            self.stop()
            raise RuntimeError(f"server failed to start:\n{self.output()}") from None

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ThreadServer:
    """uvicorn in a thread around an app built here (for fakes injected at the worker seam)."""

    def __init__(self, app, headers: dict[str, str] | None = None) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_ready(self.url, self.thread.is_alive, headers=headers)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def fake_server(model: Path | str, factory: str, env: dict[str, str] | None = None,
                **settings: object) -> Iterator[ThreadServer]:
    """The real app and real worker processes around a fake backend (``serving_fakes:<factory>``).

    ``env`` is set for the workers (the fakes read their knobs from it) and restored after;
    ``settings`` override small, fast defaults (one worker, one thread, a quick profile).
    """
    from bertserve.config import ServerSettings
    from bertserve.serving.core.engine import Engine
    from bertserve.serving.http.app import create_app

    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    s = ServerSettings(**{"model": str(model), "backend": "torch", "workers": 1, "threads": 1,
                          "profile_max_tokens": 128, "profile_repeats": 1, **settings})
    keys = s.api_keys()
    srv = ThreadServer(create_app(s, Engine(s, backend_factory=f"serving_fakes:{factory}")),
                       headers={"x-api-key": keys[0]} if keys else None)
    try:
        yield srv
    finally:
        srv.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def assert_documented(url: str, path: str, method: str, answer: httpx.Response) -> None:
    """The answer's JSON body matches the schema the server's /openapi.json gives for its status
    on ``path`` (a template, as the document names it)."""
    import jsonschema

    doc = httpx.get(f"{url}/openapi.json").json()
    documented = doc["paths"][path][method]["responses"]
    assert str(answer.status_code) in documented, f"{answer.status_code} undocumented on {method} {path}"
    schema = documented[str(answer.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(answer.json(), {**schema, "components": doc["components"]})
