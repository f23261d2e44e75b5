"""``bertserve serve``: the HTTP server.

Its flags are generated from :class:`bertserve.config.ServerSettings`: one per field, each also
a ``BERTSERVE_*`` environment variable. A flag left out keeps the variable's value, else the
field's default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from . import app
from .options import with_settings

if TYPE_CHECKING:
    from ..config import ServerSettings


@app.command()
@with_settings
def serve(
    ray: Annotated[bool, typer.Option(help="Serve through Ray Serve (one replica, private local Ray; "
                                      "see serve-ray).")] = False,
    *,
    settings: ServerSettings,
) -> None:
    """Serve MODEL over HTTP: KServe v2, OpenAI /v1/embeddings, /embed, /classify, /metrics."""
    if ray:
        from ..integrations.ray_serve import serve_forever

        serve_forever(settings)
        return
    from ..serving.http.server import serve as run_server

    run_server(settings)
