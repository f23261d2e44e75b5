"""``bertserve serve-ray``: deploy bertserve on a Ray cluster (Ray Serve) and keep it running."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from . import app
from .options import BackendOpt, DeviceOpt, PrecisionOpt, ThreadsOpt

out = Console()


@app.command("serve-ray")
def serve_ray(
    model: Annotated[str | None, typer.Argument(help="Artifact or HF checkpoint (default: bundled).")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join ('auto' = the one started with `ray start`); default: a new local Ray.",
    )] = None,
    host: Annotated[str, typer.Option(help="Ray Serve proxy bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Ray Serve proxy port.")] = 8000,
    replicas: Annotated[int | None, typer.Option(
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
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Deploy MODEL on Ray Serve with bertserve's batching inside every replica; Ctrl-C removes it."""
    from ..config import ServerSettings
    from ..integrations.ray_serve import RayServeOptions, deploy, require_ray

    serve = require_ray()
    import ray

    settings = ServerSettings(model=model, backend=backend, precision=precision, device=device,
                              threads=threads)
    options = RayServeOptions(
        name=name, num_replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus,
        min_replicas=min_replicas, max_replicas=max_replicas, target_ongoing_requests=target_ongoing,
    )
    ray.init(address=address, include_dashboard=False if address is None else None)
    serve.start(http_options={"host": host, "port": port})
    with out.status(f"deploying {settings.model or 'the bundled model'} on Ray Serve..."):
        deploy(settings, options, via_object_store=object_store)
    scale = f"{replicas} replicas" if replicas else f"autoscaling {min_replicas}..{max_replicas} replicas"
    out.print(f"[green]serving[/green] on http://{host}:{port}{options.route_prefix} ({scale}, "
              f"{num_cpus} CPU / {num_gpus} GPU each); Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        out.print("removing the deployment...")
        serve.delete(name)
        if address is None:
            serve.shutdown()
            ray.shutdown()
