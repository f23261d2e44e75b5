"""Compression benchmark: every technique and a combined recipe, side by side in one run.

For each variant of all-MiniLM-L6-v2: size on disk, batch-1 p50 at 16 tokens, batch-16
throughput on real tweets, and mean/min cosine to the original on held-out review snippets.
Torch-weight results (pruned, factorised, vocab-pruned) are exported to ONNX fp32 and timed
there, so every row runs on the same runtime as the baseline (bf16 and torch-int8 run on torch).

Timing: one intra-op thread, rounds interleaved across variants and the best round's median
kept, because this machine's two cores are shared (contention only ever adds time).

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/compression.py

(``--build-only`` makes the artifacts without timing anything, ``--reuse`` then times them.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertserve.artifact import load_manifest  # noqa: E402
from bertserve.compress import quality as q  # noqa: E402
from bertserve.compress.export import export_onnx  # noqa: E402
from bertserve.compress.lowrank import FactorizeConfig, factorize  # noqa: E402
from bertserve.compress.prune import PruneConfig, prune  # noqa: E402
from bertserve.compress.quantize import QuantizeConfig, quantize  # noqa: E402
from bertserve.compress.recipe import parse_recipe, run_recipe  # noqa: E402
from bertserve.compress.recover import RecoverConfig  # noqa: E402
from bertserve.compress.vocab import VocabConfig, prune_vocab  # noqa: E402


def timed_rows(variants: dict[str, Path], rounds: int, threads: int) -> dict[str, dict[str, float]]:
    """Interleaved rounds; per variant the best round's batch-1 median and batch-16 rate."""
    encs = {name: q.load_encoder(path, threads) for name, path in variants.items()}
    inputs = {name: q.speed_inputs(enc) for name, enc in encs.items()}
    b1: dict[str, list[float]] = {n: [] for n in encs}
    b16: dict[str, list[float]] = {n: [] for n in encs}
    for _ in range(rounds):
        for name, enc in encs.items():
            one, sixteen = inputs[name]
            enc.run_ids([one])
            ts = []
            for _ in range(20):
                t0 = time.perf_counter()
                enc.run_ids([one])
                ts.append(time.perf_counter() - t0)
            b1[name].append(statistics.median(ts) * 1e3)
            t0 = time.perf_counter()
            enc.run_ids(sixteen, max_batch=16)
            b16[name].append(len(sixteen) / (time.perf_counter() - t0))
    return {n: {"p50_ms_b1_16": round(min(b1[n]), 3), "b16_texts_per_s": round(max(b16[n]), 1)} for n in encs}


def onnx_of(path: Path, work: Path) -> Path:
    """The artifact itself if it is ONNX, else its fp32 ONNX export (same runtime as baseline)."""
    _, m = load_manifest(path)
    if m.backend == "onnxruntime" or m.precision in ("bf16", "int8"):
        return path
    return export_onnx(path, work / (path.name + "-onnx"), precision="fp32", overwrite=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=Path("benchmarks/.work/compression"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/compression"))
    ap.add_argument("--recover-steps", type=int, default=150)
    ap.add_argument("--eval-texts", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--build-only", action="store_true", help="make the artifacts, time nothing")
    ap.add_argument("--reuse", action="store_true", help="reuse artifacts already in --work")
    args = ap.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    rec = RecoverConfig(steps=args.recover_steps)
    src = None  # the bundled all-MiniLM-L6-v2

    made: dict[str, tuple[Path, str]] = {}  # name -> (artifact, note)

    def build(name: str, folder: str, make, note: str) -> None:  # type: ignore[no-untyped-def]
        """Make one variant, or reuse it from an earlier --build-only run (timing comes later)."""
        path = work / folder
        made[name] = (path if args.reuse and (path / "bertserve.json").exists() else make(path), note)

    ow = {"overwrite": True}
    QC, PC, FC = QuantizeConfig, PruneConfig, FactorizeConfig  # noqa: N806 - short names
    build("ONNX fp32 (baseline)", "fp32", lambda p: export_onnx(src, p, **ow), "fused graph")
    build("ONNX dynamic INT8", "dyn8", lambda p: quantize(src, p, QC(method="dynamic-int8"), **ow),
          "per-channel, weight MatMuls + int8 word table")
    build("ONNX static INT8", "static8", lambda p: quantize(src, p, QC(method="static-int8"), **ow),
          "MinMax on 256 tweets, scales frozen into integer MatMuls")
    build("ONNX static INT8 (QDQ)", "qdq8", lambda p: quantize(src, p, QuantizeConfig(
        method="static-int8", format="qdq", calibration="percentile"), **ow),
        "QDQ; ORT 1.31 fuses it to weight-only MatMulNBits")
    build("torch bf16", "bf16", lambda p: quantize(src, p, QuantizeConfig(method="bf16"), **ow),
          "AVX-512-BF16, torch eager")
    build("torch dynamic INT8", "tint8", lambda p: quantize(src, p, QC(method="torch-int8"), **ow),
          "fallback backend, torch eager")
    build("heads -25%", "heads0", lambda p: prune(src, p, PruneConfig(heads=0.25), **ow),
          "18 of 72 heads, activation importance, no recovery")
    build("heads -25% + recovery", "heads", lambda p: prune(src, p, PC(heads=0.25, recover=rec), **ow),
          f"+{args.recover_steps} distillation steps (batch 16)")
    build("FFN -25%", "ffn", lambda p: prune(src, p, PruneConfig(ffn=0.25), **ow),
          "384 of 1536 neurons per layer, no recovery")
    build("magnitude 50%", "mag", lambda p: prune(src, p, PruneConfig(magnitude=0.5), **ow),
          "dense storage/kernels: no gain expected")
    build("vocab 10k rows", "vocab", lambda p: prune_vocab(src, p, VocabConfig(max_size=10_000), **ow),
          "tweets + review train split; char fallback")
    build("vocab (all seen tokens)", "vocabfull", lambda p: prune_vocab(src, p, VocabConfig(), **ow),
          "coverage 1.0 of tweets + review train split")
    build("low-rank FFN r=192", "lowrank", lambda p: factorize(src, p, FC(rank=192, energy=None), **ow),
          "SVD of both FFN linears, no recovery")

    recipe = parse_recipe({
        "eval_texts": args.eval_texts, "measure_speed": False,
        "steps": [
            {"prune": {"heads": 0.25, "recover": {"steps": args.recover_steps}}},
            {"prune-vocab": {"max_size": 10_000}},
            {"prune-vocab": {}},
            {"quantize": {"method": "static-int8"}},
        ],
    })
    if not (args.reuse and (work / "combined" / "bertserve.json").exists()):
        run_recipe(src, work / "combined", recipe, max_quality_drop=0.02, overwrite=True)
    _, combined = load_manifest(work / "combined")
    gate = [{"step": r["kind"], "params": r["params"], "accepted": r["accepted"],
             "cosine": round(r["quality"]["mean"], 4)} for r in combined.provenance["recipe"]["steps"]]
    made["combined recipe"] = (work / "combined", " → ".join(
        f"{g['step']}{'' if g['accepted'] else ' (rolled back)'}" for g in gate))
    if args.build_only:
        return

    texts = q.eval_texts(args.eval_texts)
    reference = q.outputs(src, texts)
    runnable = {name: onnx_of(path, work) for name, (path, _) in made.items()}
    speed = timed_rows(runnable, args.rounds, args.threads)
    base = speed["ONNX fp32 (baseline)"]
    base_size = q.size_mb(made["ONNX fp32 (baseline)"][0])
    rows = []
    for name, (path, note) in made.items():
        qual = q.compare(reference, q.outputs(path, texts), "embed")
        size = q.size_mb(runnable[name])
        _, m = load_manifest(path)
        steps = m.provenance.get("steps") or [{}]
        extra = steps[-1].get("sparsity") or steps[-1].get("rows") or ""
        rows.append({
            "variant": name, "size_mb": size, "smaller": round(base_size / size, 2),
            **speed[name], "speedup_b1": round(base["p50_ms_b1_16"] / speed[name]["p50_ms_b1_16"], 2),
            "speedup_b16": round(speed[name]["b16_texts_per_s"] / base["b16_texts_per_s"], 2),
            "cosine_mean": round(qual.mean, 4), "cosine_min": round(qual.min, 4),
            "note": note + (f" {json.dumps(extra)}" if extra else ""),
        })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"rows": rows, "gate": gate, "threads": args.threads, "eval_texts": len(texts),
               "recover_steps": args.recover_steps, "seconds": round(time.time() - t_start)}
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        "| variant | size MB | × smaller | b1 p50 ms (16 tok) | × faster b1 | b16 texts/s | × faster b16 "
        "| cosine mean | cosine min | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['size_mb']:.1f} | {r['smaller']:.2f} | {r['p50_ms_b1_16']:.2f} "
                     f"| {r['speedup_b1']:.2f} | {r['b16_texts_per_s']:.0f} | {r['speedup_b16']:.2f} "
                     f"| {r['cosine_mean']:.4f} | {r['cosine_min']:.4f} | {r['note']} |")
    lines += ["", f"Quality gate (max drop 0.02) on the combined recipe: {json.dumps(gate)}",
              f"{len(texts)} held-out review snippets; {args.threads} thread; best of {args.rounds} "
              f"interleaved rounds; run took {payload['seconds']} s."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
