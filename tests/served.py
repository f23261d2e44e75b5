"""`bertserve serve` in its own process for the bench tests: yields its base URL once ready."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from ports import free_port

# a small start-up profile and one worker: these tests are about the HTTP path, not speed
FAST = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BERTSERVE_PROFILE_MAX_TOKENS": "64",
        "BERTSERVE_PROFILE_REPEATS": "1", "BERTSERVE_WORKERS": "1"}


@contextmanager
def bertserve_serving(*args: str, timeout_s: float = 180.0) -> Iterator[str]:
    """``bertserve serve ARGS --port P``; the URL once /v2/health/ready answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "bertserve.cli", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(command, env={**os.environ, **FAST}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bertserve serve exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bertserve serve did not become ready in {timeout_s:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
