"""Ray Serve serving MiniLM with @serve.batch, on the local machine (2 replicas × 1 thread).

max_ongoing_requests is raised (its default throttles how many requests reach the batcher).

    python ray_serve_server.py --port 8110 --max-batch 32 --wait-ms 2 --replicas 2 --threads 1
"""

import argparse
import signal
import sys
import time
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve

sys.path.insert(0, str(Path(__file__).parent))


class Texts(BaseModel):
    texts: list[str]


def build(max_batch: int, wait_s: float, threads: int | None, replicas: int):
    api = FastAPI()

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=512, ray_actor_options={"num_cpus": 1})
    @serve.ingress(api)
    class Embedder:
        def __init__(self) -> None:
            sys.path.insert(0, str(Path(__file__).parent))
            from minilm import MiniLM

            self.model = MiniLM(threads=threads)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=wait_s)
        async def _embed(self, batch: list[list[str]]) -> list[list[list[float]]]:
            flat = [t for texts in batch for t in texts]
            vectors = self.model.embed(flat).tolist()
            out, i = [], 0
            for texts in batch:
                out.append(vectors[i : i + len(texts)])
                i += len(texts)
            return out

        @api.get("/health")
        async def health(self) -> dict:
            return {"ok": True}

        @api.post("/embed")
        async def embed(self, req: Texts) -> dict:
            vectors = await self._embed(req.texts)
            return {"model": "all-MiniLM-L6-v2", "dim": len(vectors[0]), "embeddings": vectors}

    return Embedder.bind()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8104)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--wait-ms", type=float, default=2.0)
    # one torch thread per replica: a replica reserves one CPU, and two threads there run 3-10× slower
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--replicas", type=int, default=2)
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(build(args.max_batch, args.wait_ms / 1e3, args.threads, args.replicas), route_prefix="/")

    def stop(*_: object) -> None:  # take down the local Ray cluster this script started, nothing else
        serve.shutdown()
        ray.shutdown()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
