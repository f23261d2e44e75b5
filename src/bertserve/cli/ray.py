"""``bertserve serve-ray``: deploy bertserve on a Ray cluster (Ray Serve) and keep it running."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from . import app
from .options import with_settings

if TYPE_CHECKING:
    from ..config import ServerSettings

out = Console()


@app.command("serve-ray")
@with_settings
def serve_ray(
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join ('auto' = the one started with `ray start`); default: a new local Ray.",
    )] = None,
    replicas: Annotated[int | None, typer.Option(
        min=1,
        help="Fixed number of replicas; leave out to autoscale between --min-replicas and --max-replicas.",
    )] = None,
    min_replicas: Annotated[int, typer.Option(min=0, help="Autoscaling floor.")] = 1,
    max_replicas: Annotated[int, typer.Option(min=1, help="Autoscaling ceiling.")] = 4,
    target_ongoing: Annotated[float, typer.Option(
        help="Autoscaling target: requests in flight per replica.")] = 16.0,
    num_cpus: Annotated[float, typer.Option(help="CPUs per replica (fractions allowed).")] = 1.0,
    num_gpus: Annotated[float, typer.Option(help="GPUs per replica (fractions allowed).")] = 0.0,
    object_store: Annotated[bool, typer.Option(
        "--object-store/--shared-path",
        help="Ship the artifact through Ray's object store (no shared disk needed) or load it by path.",
    )] = False,
    name: Annotated[str, typer.Option(help="Ray Serve application name.")] = "bertserve",
    *,
    settings: ServerSettings,
) -> None:
    """Deploy MODEL on Ray Serve with bertserve's batching inside every replica; Ctrl-C removes it.

    Each replica runs bertserve's own engine with the server's settings (--host and --port: the
    Ray Serve proxy); give it as many cores as its workers × threads.
    """
    from ..artifact import load_manifest
    from ..integrations.ray_serve import RayServeOptions, require_ray, serve_forever

    require_ray()
    model = settings.model
    options = RayServeOptions(
        name=name, num_replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus,
        min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing_requests=target_ongoing,
    )
    load_manifest(settings.model)  # a wrong path fails now, not after starting Ray
    scale = f"{replicas} replicas" if replicas else f"autoscaling {min_replicas}..{max_replicas} replicas"

    def ready(url: str) -> None:
        out.print(f"[green]serving[/green] on {url} ({scale}, {num_cpus:g} CPU / {num_gpus:g} GPU each); "
                  "Ctrl-C to stop")

    out.print(f"deploying {model or 'the bundled model'} on Ray Serve...")
    serve_forever(settings, options, address=address, via_object_store=object_store, on_ready=ready)
