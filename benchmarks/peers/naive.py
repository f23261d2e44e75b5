"""The naive baseline: FastAPI + transformers, one forward pass per request, no batching.

What most people write first. Requests run in FastAPI's thread pool, so up to 40 forwards
compete for the two cores at once.

    python naive.py --port 8101
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).parent))
from minilm import MiniLM  # noqa: E402


class Texts(BaseModel):
    texts: list[str]


def build(threads: int | None) -> FastAPI:
    model = MiniLM(threads=threads)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/embed")
    def embed(req: Texts) -> dict:
        vectors = model.embed(req.texts)
        return {"model": "all-MiniLM-L6-v2", "dim": vectors.shape[1], "embeddings": vectors.tolist()}

    return app


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    uvicorn.run(build(args.threads), host="127.0.0.1", port=args.port, log_level="warning")
