"""What the engine costs the front process per request, without HTTP and without a model.

``benchmarks/serving_cost.py`` measures the whole front process (HTTP, JSON, engine, worker hop)
through a real server, where run-to-run noise is ±15 %. This script isolates the part between
the HTTP handler and the workers: a real :class:`~bertserve.serving.core.engine.Engine` with two
worker processes whose backend answers at once (or after ``--model-ms`` of busy CPU), driven
in-process by ``await engine.infer([tweet])``, one health tweet at a time with a pause between
requests (``--gap-ms``: the event loop sleeps between them, as in a server at low load).

It measures, in alternating blocks (so a noisy neighbour hits every mode alike), the front
process's CPU (``time.process_time``: every thread) per iteration of

- ``infer``: pause, then one ``Engine.infer`` (validation, tokenising, admission, batching, the
  pipe to a worker and back, the answer);
- ``tokenise``: pause, then the engine's tokenizer on the same text alone;
- ``pause``: the pause alone (the event loop's sleep and wake-up);
- ``tokenise-hot``: the tokenizer in a tight loop, no pause (warm caches);

and prints the medians and ranges over blocks, and the engine's own cost: infer − tokenise.
The tokenizer's cost on cold caches is tokenise − pause; ``tokenise-hot`` is the same call warm.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/engine_cost.py

Writes ``benchmarks/results/engine_cost.{md,json}`` (``--out``, stem ``--name``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import uvloop
from provenance import header  # benchmarks/provenance.py, beside this script

from bertserve.artifact import default_model_path
from bertserve.config import ServerSettings
from bertserve.data import health_tweets

ROOT = Path(__file__).resolve().parent
MODES = ("infer", "tokenise", "pause", "tokenise-hot")


class InstantBackend:
    """A worker backend that answers zeros of the MiniLM's width, after ``ms`` of busy CPU."""

    name = "instant"
    max_students = 1
    output_dim = 384

    def __init__(self, ms: float) -> None:
        self.seconds = ms / 1e3

    def run(self, batch: object) -> np.ndarray:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass
        return np.zeros((batch.input_ids.shape[0], self.output_dim), np.float32)  # type: ignore[attr-defined]


def instant_backend(spec: object) -> InstantBackend:
    """The workers' backend factory (``engine_cost:instant_backend``; spawned workers import it)."""
    return InstantBackend(float(os.environ.get("ENGINE_COST_MODEL_MS", "0")))


async def block(mode: str, engine: object, texts: list[str], n: int, gap_s: float) -> float:
    """CPU microseconds per iteration of ``mode`` over ``n`` iterations."""
    start = time.process_time()
    for i in range(n):
        if mode != "tokenise-hot":
            await asyncio.sleep(gap_s)
        text = texts[i % len(texts)]
        if mode == "infer":
            await engine.infer([text])  # type: ignore[attr-defined]
        elif mode.startswith("tokenise"):
            engine.tokenizer.encode([text])  # type: ignore[attr-defined]
    return (time.process_time() - start) / n * 1e6


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    from bertserve.serving.core.engine import Engine

    settings = ServerSettings(model=args.model, backend="torch", workers=2, threads=1, slo_ms=50)
    engine = Engine(settings, backend_factory=f"{Path(__file__).stem}:instant_backend")
    await engine.start()
    texts = health_tweets()[:500]
    try:
        for text in texts[:200]:  # warm: first calls allocate
            await engine.infer([text])
        out: dict[str, list[float]] = {m: [] for m in MODES}
        for _ in range(args.blocks):
            for mode in MODES:
                out[mode].append(await block(mode, engine, texts, args.per_block, args.gap_ms / 1e3))
        return out
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_path()), help="whose tokenizer the engine uses")
    parser.add_argument("--model-ms", type=float, default=0.0, help="busy CPU per batch in the workers")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause before each request")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--per-block", type=int, default=300)
    parser.add_argument("--name", default="engine_cost")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    os.environ["ENGINE_COST_MODEL_MS"] = str(args.model_ms)  # for the spawned workers
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs = uvloop.run(measure(args))  # the event loop bertserve serve runs on (uvicorn's choice)
    med = {m: statistics.median(v) for m, v in runs.items()}
    own = [a - b for a, b in zip(runs["infer"], runs["tokenise"], strict=True)]
    rows = [("infer (pause + Engine.infer)", runs["infer"]),
            ("tokenise (pause + tokenizer alone)", runs["tokenise"]),
            ("pause alone", runs["pause"]),
            ("tokenise-hot (tokenizer in a tight loop)", runs["tokenise-hot"]),
            ("engine beyond tokenising (infer − tokenise)", own)]
    lines = [
        "# Front-process CPU per request inside the engine (no HTTP, instant backend)",
        "",
        *header(),
        f"- Load: one health tweet per `Engine.infer`, a {args.gap_ms:g} ms pause before each; two worker "
        f"processes whose backend answers after {args.model_ms:g} ms of busy CPU; {args.blocks} blocks of "
        f"{args.per_block} per mode, modes alternating.",
        "",
        "| what | CPU µs per iteration, median | min | max |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {statistics.median(v):.0f} | {min(v):.0f} | {max(v):.0f} |" for name, v in rows],
        "",
    ]
    text = "\n".join(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.md").write_text(text)
    (out / f"{args.name}.json").write_text(json.dumps({"args": vars(args), "blocks": runs, "median": med},
                                                      indent=1))
    print(text)


if __name__ == "__main__":
    main()
