"""Where bertserve keeps what it can make again: ONNX exports, run-time profiles, teacher targets."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$BERTSERVE_CACHE``, else ``~/.cache/bertserve``."""
    return Path(os.environ.get("BERTSERVE_CACHE", Path.home() / ".cache" / "bertserve"))
