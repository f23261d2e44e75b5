"""bertserve on Ray Serve: the same app, engine and APIs in every replica, scaled by Ray.

Each replica builds bertserve's own FastAPI app with :func:`bertserve.serving.http.app.create_app`
(so the length-aware buffer, SLO batching and student pruning run inside it unchanged) and
Ray Serve's HTTP proxy routes requests to the replicas. Nothing here is re-implemented: Ray
adds placement, routing and autoscaling, bertserve keeps batching.

``ray[serve]`` is an optional extra (``pip install bertserve[ray]``); the core never imports
this module, and this module imports Ray only when a deployment is built.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from ..artifact import resolve
from ..config import ServerSettings
from ..errors import ArtifactError, ConfigError


def require_ray() -> Any:
    """Import ``ray.serve`` or fail with the install command (a clear line, not a traceback)."""
    try:
        from ray import serve
    except ImportError as exc:
        raise ConfigError("Ray Serve is not installed: pip install 'bertserve[ray]'") from exc
    return serve


class RayServeOptions(BaseModel):
    """How Ray places and scales bertserve replicas (the serving options stay in ServerSettings).

    A fixed ``num_replicas`` or autoscaling between ``min_replicas`` and ``max_replicas``:
    Ray adds a replica when the ongoing requests per replica exceed ``target_ongoing_requests``.
    """

    model_config = {"extra": "forbid"}

    name: str = Field("bertserve", description="Ray Serve application and deployment name")
    route_prefix: str = Field("/", description="path under which the proxy exposes the APIs")
    num_replicas: int | None = Field(1, ge=1, description="fixed replica count; None → autoscale")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per replica (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica (fractions allowed)")
    min_replicas: int = Field(1, ge=0, description="autoscaling floor (0 = scale to zero)")
    max_replicas: int = Field(4, ge=1, description="autoscaling ceiling")
    target_ongoing_requests: float = Field(
        16.0, gt=0, description="autoscaling target per replica; lower → more replicas, lower latency"
    )
    max_ongoing_requests: int = Field(
        256, ge=1,
        description="requests Ray lets into one replica at once; keep it well above the batch size, "
        "or Ray throttles the replica's own batching (bertserve does its back-pressure itself)",
    )

    @model_validator(mode="after")
    def _bounds(self) -> RayServeOptions:
        if self.num_replicas is None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self

    def deployment_options(self) -> dict[str, Any]:
        """Keyword arguments for ``serve.deployment(...).options``."""
        opts: dict[str, Any] = {
            "name": self.name,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.num_replicas is None:
            opts["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        else:
            opts["num_replicas"] = self.num_replicas
        return opts


# --- where a replica finds the artifact -----------------------------------------------------


def pack_folder(folder: Path) -> bytes:
    """An artifact folder as one uncompressed tar (weights barely compress; speed matters)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buf.getvalue()


def unpack_folder(data: bytes, root: Path) -> Path:
    """Extract a packed artifact under ``root/<digest>`` once; later calls reuse it.

    The ``data`` filter refuses absolute paths, ``..`` and links out of the folder: the bytes
    are untrusted input like any model folder.
    """
    target = root / hashlib.sha256(data).hexdigest()[:16]
    if (target / ".complete").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(target, filter="data")
    (target / ".complete").touch()
    return target


@dataclass(frozen=True)
class PathSource:
    """The artifact is a folder every node can read (shared disk or baked into the image)."""

    path: str

    def materialize(self) -> str:
        return self.path


@dataclass(frozen=True)
class ObjectStoreSource:
    """The artifact travels through Ray's object store: nodes need no shared disk.

    The driver puts the packed folder once; each replica gets it and unpacks it locally. The
    driver must stay connected while replicas start (Ray frees objects whose owner is gone).
    """

    ref: Any  # ray.ObjectRef of the packed bytes
    cache_dir: str | None = field(default=None)

    @classmethod
    def put(cls, folder: str | Path | None) -> ObjectStoreSource:
        import ray

        return cls(ray.put(pack_folder(resolve(folder))))

    def materialize(self) -> str:
        import ray

        root = Path(self.cache_dir or tempfile.gettempdir()) / "bertserve-artifacts"
        return str(unpack_folder(ray.get(self.ref), root))


ArtifactSource = PathSource | ObjectStoreSource


# --- the deployment -------------------------------------------------------------------------


class ReadyGate:
    """ASGI wrapper: startup completes only once the engine is ready (or has failed).

    bertserve's app loads and profiles the model in the background so a plain server answers
    health checks at once; Ray instead routes traffic to a replica as soon as its ASGI startup
    completes, so the gate holds startup until the engine can answer, and fails it (Ray then
    retries the replica) when the model cannot be loaded.
    """

    def __init__(self, app: Any, engine: Any, *, timeout_s: float = 900.0, poll_s: float = 0.05) -> None:
        self.app = app
        self.engine = engine
        self.timeout_s = timeout_s
        self.poll_s = poll_s

    async def wait_ready(self) -> str | None:
        """None when ready, else why not."""
        import asyncio

        loop = asyncio.get_running_loop()
        end = loop.time() + self.timeout_s
        while not self.engine.ready and not self.engine.error:
            if loop.time() > end:
                return f"the model was not ready within {self.timeout_s:g} s"
            await asyncio.sleep(self.poll_s)
        return self.engine.error or None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def gated_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                error = await self.wait_ready()
                if error:
                    message = {"type": "lifespan.startup.failed", "message": error}
            await send(message)

        await self.app(scope, receive, gated_send)



def _replica_class() -> type:
    """The replica class, made once Ray is importable (the decorators need Ray)."""
    serve = require_ray()

    @serve.ingress()
    class BertserveReplica:
        """One Ray Serve replica: bertserve's own app, built from settings inside the replica."""

        def __init__(self, settings: dict[str, Any], source: ArtifactSource) -> None:
            self.settings = ServerSettings.model_validate({**settings, "model": source.materialize()})

        def __serve_build_asgi_app__(self) -> Any:
            from ..serving.http.app import create_app

            app = create_app(self.settings)
            engine = getattr(app.state, "engine", None)
            return app if engine is None else ReadyGate(app, engine)

    return BertserveReplica


def replica_settings(settings: ServerSettings, num_cpus: float | None = None) -> dict[str, Any]:
    """The options a replica builds its app from; host/port belong to Ray's proxy, not here.

    Workers and threads left unset are sized to the replica's reserved CPUs, not to the whole
    node: a replica that takes every core of a shared node slows its neighbours down.
    """
    out = settings.model_dump(exclude={"host", "port", "model"}, exclude_unset=False)
    if num_cpus is not None:
        cores = max(1, int(num_cpus))
        workers = out.get("workers") or cores
        out["workers"] = workers
        out["threads"] = out.get("threads") or max(1, cores // workers)
    return out


def build_app(
    settings: ServerSettings,
    options: RayServeOptions | None = None,
    *,
    via_object_store: bool = False,
) -> Any:
    """A bound Ray Serve application serving ``settings.model`` with ``options``' placement.

    With ``via_object_store`` the artifact is shipped through Ray's object store (needs a
    connected Ray); otherwise every replica loads it from the same path.
    """
    serve = require_ray()
    options = options or RayServeOptions()
    folder = resolve(settings.model)
    if not folder.is_dir():
        raise ArtifactError(f"model folder {folder} does not exist")
    source: ArtifactSource = ObjectStoreSource.put(folder) if via_object_store else PathSource(str(folder))
    deployment = serve.deployment(_replica_class()).options(**options.deployment_options())
    return deployment.bind(replica_settings(settings, options.num_cpus), source)


def deploy(
    settings: ServerSettings,
    options: RayServeOptions | None = None,
    *,
    via_object_store: bool = False,
    blocking: bool = False,
) -> Any:
    """Deploy on the connected Ray cluster and wait until every replica is ready.

    Returns the application's handle. Start Serve first (``serve.start(http_options=...)``)
    to choose the proxy's host and port; otherwise Ray's defaults apply (127.0.0.1:8000).
    """
    serve = require_ray()
    options = options or RayServeOptions()
    app = build_app(settings, options, via_object_store=via_object_store)
    return serve.run(app, name=options.name, route_prefix=options.route_prefix, blocking=blocking)


def serve_forever(
    settings: ServerSettings,
    options: RayServeOptions | None = None,
    *,
    address: str | None = None,
    via_object_store: bool = False,
    on_ready: Any = None,
) -> None:
    """Join (or start) Ray, deploy, keep serving until Ctrl-C, then remove the deployment.

    The proxy binds ``settings.host``/``settings.port``. ``address`` None starts a private local
    Ray (shut down on exit); ``"auto"`` or ``"ray://head:10001"`` joins a running cluster (left
    running). ``on_ready(url)`` is called once every replica is up.
    """
    import time

    import ray

    serve = require_ray()
    options = options or RayServeOptions()
    ray.init(address=address, include_dashboard=False if address is None else None)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        deploy(settings, options, via_object_store=via_object_store)
        if on_ready is not None:
            on_ready(f"http://{settings.host}:{settings.port}{options.route_prefix}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.delete(options.name)
    finally:
        if address is None:
            serve.shutdown()
            ray.shutdown()
