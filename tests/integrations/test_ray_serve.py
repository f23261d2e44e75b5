"""bertserve on a real local Ray Serve: two replicas behind Ray's HTTP proxy answer like the runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from ports import free_port

NO_RAY = "the 'ray' extra is not installed (pip install 'bertserve[ray]')"
ray = pytest.importorskip("ray", reason=NO_RAY)
serve = pytest.importorskip("ray.serve", reason=NO_RAY)

pytestmark = [pytest.mark.ray, pytest.mark.slow]



@pytest.fixture(scope="module")
def ray_proxy(minilm_dir: Path) -> Iterator[str]:
    """A two-replica bertserve deployment on a fresh local Ray; yields the proxy's base URL."""
    from bertserve.config import ServerSettings
    from bertserve.integrations.ray_serve import RayServeOptions, deploy

    port = free_port()
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # One worker with one thread per replica; a small start-up profile keeps the test short;
        # a generous SLO so a slow CI machine gets answers, not 429s, for the concurrent flood.
        settings = ServerSettings(model=str(minilm_dir), backend="torch", workers=1, threads=1,
                                  max_batch_size=8, profile_max_tokens=128, profile_repeats=1,
                                  slo_ms=10_000)
        deploy(settings, RayServeOptions(name="bertserve-test", num_replicas=2, num_cpus=0.5))
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_two_replicas_answer_like_the_runtime(ray_proxy: str, minilm_dir: Path,
                                              sentences: list[str]) -> None:
    from bertserve import Encoder

    status = serve.status().applications["bertserve-test"]
    replicas = status.deployments["bertserve-test"].replica_states
    assert replicas.get("RUNNING") == 2

    texts = sentences[:24]
    with httpx.Client(base_url=ray_proxy, timeout=60) as client:
        assert client.get("/v2/health/ready").status_code == 200
        got = []
        for i in range(0, len(texts), 3):  # several requests, so both replicas get some
            r = client.post("/embed", json={"texts": texts[i : i + 3]})
            assert r.status_code == 200, r.text
            got.extend(r.json()["embeddings"])
        bad = client.post("/embed", json={"texts": []})
        assert bad.status_code == 422  # bertserve's own error mapping, through Ray's proxy

    expected = Encoder.load(minilm_dir, backend="torch", threads=1).embed(texts)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float32), expected, atol=1e-5)


def test_proxy_survives_many_concurrent_requests(ray_proxy: str, sentences: list[str]) -> None:
    """Requests in flight at once are all answered (Ray routes, bertserve batches)."""
    import asyncio

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=ray_proxy, timeout=60) as client:
            return await asyncio.gather(*(client.post("/embed", json={"texts": [t]})
                                          for t in sentences[:40]))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 40
    assert all(len(r.json()["embeddings"]) == 1 and r.json()["dim"] == 384 for r in responses)
