"""Batch-1 latency of each backend/precision vs the unmodified model in plain transformers.

Every system runs the same token ids (real review snippets cut to each length) in one process,
interleaved round-robin in blocks so machine noise hits all systems alike; ratios are what to
compare. ``--threads 1`` is what one serving worker runs with (2 workers × 1 thread).
Quality: cosine of each system's embeddings to sentence-transformers' encode() on 200 texts.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/latency.py --out benchmarks/results/latency.md
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from provenance import header  # benchmarks/provenance.py, beside this script

from bertserve import Encoder
from bertserve.artifact import default_model_path
from bertserve.data import rotten_tomatoes
from bertserve.export.onnx import export_onnx
from bertserve.runtime import Batch

LENGTHS = (8, 16, 32, 64, 128)
BLOCK, WARMUP = 25, 5


def plain_transformers(model_dir: Path, threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The baseline a user would write: AutoModel + mean pooling + normalise, fp32, eager."""
    from transformers import AutoModel

    torch.set_num_threads(threads)
    model = AutoModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = torch.from_numpy(mask)
        h = model(input_ids=torch.from_numpy(ids), attention_mask=m).last_hidden_state
        e = (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        return torch.nn.functional.normalize(e, dim=-1).numpy()

    return run


def bertserve_runner(enc: Encoder) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    lengths = np.zeros(1, dtype=np.int64)
    return lambda ids, mask: enc.backend.run(Batch(ids, mask, lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=300, help="timed calls per system and length")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-openvino", action="store_true", help="leave the OpenVINO rows out")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_table.md"))
    args = parser.parse_args()

    model_dir = default_model_path()
    texts = rotten_tomatoes()[0][::60][:200]
    work = Path(tempfile.mkdtemp(prefix="bertserve-latency-"))
    encoders = {
        "bertserve torch fp32": Encoder.load(None, backend="torch", threads=args.threads),
        "bertserve torch bf16": Encoder.load(None, backend="torch", precision="bf16", threads=args.threads),
        "bertserve ORT fp32": Encoder.load(export_onnx(model_dir, work / "fp32"), backend="onnxruntime",
                                           threads=args.threads),  # not auto: that may pick OpenVINO
        "bertserve ORT int8": Encoder.load(
            export_onnx(model_dir, work / "int8", precision="int8"), backend="onnxruntime",
            threads=args.threads),
    }
    if importlib.util.find_spec("openvino") is not None and not args.no_openvino:
        from bertserve.compress.quantize import QuantizeConfig, quantize

        fp32 = work / "fp32"
        encoders["bertserve OpenVINO fp32"] = Encoder.load(fp32, backend="openvino", precision="fp32",
                                                          threads=args.threads)
        encoders["bertserve OpenVINO bf16"] = Encoder.load(fp32, backend="openvino", precision="bf16",
                                                          threads=args.threads)
        quantize(None, work / "ov-int8", QuantizeConfig(method="ov-int8", calibration_texts=200))
        encoders["bertserve OpenVINO int8"] = Encoder.load(work / "ov-int8", threads=args.threads)
        quantize(None, work / "ov-int8-mixed", QuantizeConfig(method="ov-int8", calibration_texts=200,
                                                              preset="mixed"))
        encoders["bertserve OpenVINO int8 (mixed preset)"] = Encoder.load(work / "ov-int8-mixed",
                                                                          threads=args.threads)
    systems = {"transformers (plain, fp32)": plain_transformers(model_dir, args.threads)}
    systems |= {name: bertserve_runner(enc) for name, enc in encoders.items()}

    # Quality: cosine to sentence-transformers' own encode() of the same model.
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(model_dir), device="cpu").encode(texts, normalize_embeddings=True)
    tok = next(iter(encoders.values())).tokenizer
    # the baseline embeds each text alone (batch 1, no padding), cut to the model's limit like the others
    plain = systems["transformers (plain, fp32)"]
    plain_emb = np.concatenate([plain(np.array([row], dtype=np.int64), np.ones((1, len(row)), dtype=np.int64))
                                for row in tok.encode(texts).ids])
    quality = {"transformers (plain, fp32)": float((plain_emb * ref).sum(1).mean())}
    for name, enc in encoders.items():
        quality[name] = float((enc.embed(texts) * ref).sum(1).mean())

    # Real text at exact lengths: joined snippets' word pieces between [CLS] and [SEP].
    stream = [t for ids in tok.encode(texts).ids for t in ids[1:-1]]
    cls_id, sep_id = tok.encode(["x"]).ids[0][0], tok.encode(["x"]).ids[0][-1]
    results: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in systems}
    for length in LENGTHS:
        inputs = [
            np.array([[cls_id, *stream[k * 97 : k * 97 + length - 2], sep_id]], dtype=np.int64)
            for k in range(50)
        ]
        mask = np.ones_like(inputs[0])
        times: dict[str, list[float]] = {name: [] for name in systems}
        # Round-robin in blocks: noise drifts over every system alike, while each block's
        # first calls (discarded) absorb the previous system's thread pool still spinning.
        for block in range(args.iters // BLOCK):
            for name, run in systems.items():
                for i in range(BLOCK + WARMUP):
                    ids = inputs[(block * BLOCK + i) % len(inputs)]
                    t0 = time.perf_counter()
                    run(ids, mask)
                    if i >= WARMUP:
                        times[name].append(time.perf_counter() - t0)
        for name, ts in times.items():
            ms = np.array(ts) * 1e3
            results[name][length] = (float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))
        print(f"length {length}: " + ", ".join(f"{n} {results[n][length][0]:.2f} ms" for n in systems))

    base = results["transformers (plain, fp32)"]
    lines = [
        *header(),
        "",
        f"Batch-1 latency, ms (p50 / p99), {args.iters} calls per cell, {args.threads} intra-op threads; "
        f"cosine to ST: mean over {len(texts)} texts of each system's embeddings to sentence-transformers' "
        "encode().",
        "",
        "| system | " + " | ".join(f"{n} tok" for n in LENGTHS) + " | speed-up at 16 tok | cosine to ST |",
        "|---|" + "---|" * (len(LENGTHS) + 2),
    ]
    for name in systems:
        cells = " | ".join(f"{results[name][n][0]:.2f} / {results[name][n][1]:.2f}" for n in LENGTHS)
        speedup = base[16][0] / results[name][16][0]
        lines.append(f"| {name} | {cells} | {speedup:.2f}× | {quality[name]:.5f} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
