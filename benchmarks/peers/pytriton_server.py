"""PyTriton (NVIDIA Triton's Python front end) serving MiniLM with Triton's dynamic batcher.

KServe v2 API: POST /v2/models/minilm/infer with input ``text`` BYTES of shape [N, 1].
Needs LD_LIBRARY_PATH to include this Python's own lib folder (the runner sets it).

    python pytriton_server.py --port 8102 --max-batch 32 --delay-us 2000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

sys.path.insert(0, str(Path(__file__).parent))
from minilm import MiniLM  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8102)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--delay-us", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    model = MiniLM(threads=args.threads)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        texts = [t[0].decode("utf-8") for t in text]  # (B, 1) bytes
        return {"embedding": model.embed(texts).astype(np.float32)}

    config = TritonConfig(http_address="127.0.0.1", http_port=args.port, grpc_port=args.port + 1,
                          metrics_port=args.port + 2)
    with Triton(config=config) as triton:
        triton.bind(model_name="minilm", infer_func=infer,
                    inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="embedding", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=args.max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us)),
                    strict=False)
        triton.serve()


if __name__ == "__main__":
    main()
