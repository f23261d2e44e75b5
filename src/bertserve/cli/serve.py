"""``bertserve serve``: the HTTP server."""

from __future__ import annotations

from typing import Annotated

import typer

from . import app
from .options import BackendOpt, DeviceOpt, PrecisionOpt, ThreadsOpt


@app.command()
def serve(
    model: Annotated[str | None, typer.Argument(help="Artifact or HF checkpoint (default: bundled).")] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Serve MODEL over HTTP (/embed, /classify, /v2/health/*)."""
    import uvicorn

    from ..config import ServerSettings
    from ..serving.app import create_app

    settings = ServerSettings(model=model, host=host, port=port, backend=backend,
                              precision=precision, device=device, threads=threads)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level)
