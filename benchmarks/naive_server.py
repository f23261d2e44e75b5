"""The naive baseline: the unmodified model in plain transformers behind FastAPI.

One forward pass per request, no batching across requests, torch's default threads: what a
first deployment usually looks like. Same simple JSON API as bertserve (``POST /embed``
``{"texts": [...]}`` → ``{"model", "dim", "embeddings"}``), so one load generator drives both.

    python benchmarks/naive_server.py --port 8001 [--model PATH]
"""

from __future__ import annotations

import argparse
import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModel, AutoTokenizer


class EmbedRequest(BaseModel):
    texts: list[str]


def create_app(model_dir: str, max_length: int = 256) -> FastAPI:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/embed")
    def embed(req: EmbedRequest) -> dict:  # a sync endpoint: FastAPI runs it in its thread pool
        enc = tokenizer(req.texts, padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors = torch.nn.functional.normalize(pooled, dim=-1)
        return {"model": "naive", "dim": int(vectors.shape[1]), "embeddings": vectors.tolist()}

    return app


def main() -> None:
    from bertserve.artifact import default_model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", default=None, help="HF checkpoint folder (default: bundled MiniLM)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app = create_app(args.model or str(default_model_path()))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
