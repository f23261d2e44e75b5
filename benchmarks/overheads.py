"""Small costs on the serving path, measured: response encoding, ORT thread spinning, attention fusion.

1. Encoding one 384-d embedding response: ``json`` (Starlette's JSONResponse of ``tolist()``)
   vs orjson with the numpy array written directly (what the server does), and the client's
   ``json.loads`` of each body.
2. Batch-1 MiniLM runs 50 ms apart (a quiet server): wall time and CPU time per run for
   1 intra-op thread, 2 threads (what ``--widen`` runs) and 2 threads with
   ``session.force_spinning_stop``. CPU beyond the wall time is the pool threads spinning after
   the run, taken from the other worker and the event loop.
3. The ONNX export with attention left as MatMul/Softmax (SDPA traced) vs fused into one
   ``Attention`` op per layer (eager attention traced, what ``bertserve export`` does), fp32 and
   dynamic INT8: graph nodes, batch-1 latency on real tweets (1 thread, interleaved rounds) and
   cosine to the unfused fp32 graph.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/overheads.py

Writes ``benchmarks/results/overheads.md``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from provenance import header  # benchmarks/provenance.py, beside this script

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent


def encoding(rows: int = 500) -> list[str]:
    from starlette.responses import JSONResponse

    from bertserve.serving.http.encode import dumps

    x = (np.random.default_rng(0).random((1, 384), dtype=np.float32) - 0.5) * 0.2

    def timed(fn) -> float:
        t0 = time.perf_counter()
        for _ in range(rows):
            fn()
        return (time.perf_counter() - t0) / rows * 1e3

    plain = timed(lambda: JSONResponse({"model": "m", "embeddings": x.tolist()}).body)
    fast = timed(lambda: dumps({"model": "m", "embeddings": x}))
    a = JSONResponse({"model": "m", "embeddings": x.tolist()}).body
    b = dumps({"model": "m", "embeddings": x})
    parse_a = timed(lambda: json.loads(a))
    parse_b = timed(lambda: json.loads(b))
    return ["| encoder | encode ms | body bytes | client json.loads ms |", "|---|---:|---:|---:|",
            f"| json (JSONResponse of tolist) | {plain:.3f} | {len(a)} | {parse_a:.3f} |",
            f"| orjson, numpy direct (server) | {fast:.3f} | {len(b)} | {parse_b:.3f} |"]


def spinning(runs: int = 50, gap_s: float = 0.05, tokens: int = 40) -> list[str]:
    import onnxruntime as ort

    from bertserve.artifact import load_manifest
    from bertserve.export.prepare import exported_copy

    folder, manifest = load_manifest(None)
    onnx = exported_copy(folder, manifest, "fp32") / "model.onnx"
    ids = np.random.default_rng(0).integers(1000, 2000, (1, tokens), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    lines = ["| session | wall p50 ms | wall p90 ms | CPU per run ms |", "|---|---:|---:|---:|"]
    for name, threads, stop in (("1 thread", 1, False), ("2 threads", 2, False),
                                ("2 threads, force_spinning_stop", 2, True)):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        if stop:
            so.add_session_config_entry("session.force_spinning_stop", "1")
        sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        for _ in range(5):
            sess.run(None, feed)
        walls = []
        cpu0 = time.process_time()
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feed)
            walls.append(time.perf_counter() - t0)
            time.sleep(gap_s)
        cpu = (time.process_time() - cpu0) / runs * 1e3
        w = np.sort(walls) * 1e3
        lines.append(f"| {name} | {np.percentile(w, 50):.2f} | {np.percentile(w, 90):.2f} | {cpu:.2f} |")
    return lines


def attention_fusion(rounds: int = 4, texts: int = 100) -> list[str]:
    import tempfile

    import onnx

    from bertserve.artifact import load_manifest
    from bertserve.data import health_tweets
    from bertserve.export.onnx import export_onnx
    from bertserve.runtime.onnx_backend import make_session
    from bertserve.tokenizer import TextTokenizer

    folder, manifest = load_manifest(None)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    rows = tok.encode(health_tweets()[-texts:]).ids  # real chat lengths
    feeds = [{"input_ids": np.array([r], np.int64), "attention_mask": np.ones((1, len(r)), np.int64)}
             for r in rows]
    variants = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "int8"):
            for fused in (False, True):
                out = export_onnx(folder, Path(tmp) / f"{precision}-{fused}", precision=precision,
                                  fuse_attention=fused)
                nodes = len(onnx.load(str(out / "model.onnx")).graph.node)
                variants[(precision, fused)] = (nodes, make_session(out / "model.onnx", threads=1))
        reference = np.concatenate([variants[("fp32", False)][1].run(None, f)[0] for f in feeds])
        times: dict = {k: [] for k in variants}
        for _ in range(rounds):
            for key, (_, sess) in variants.items():
                for f in feeds:
                    t0 = time.perf_counter()
                    sess.run(None, f)
                    times[key].append(time.perf_counter() - t0)
        lines = ["| graph | nodes | b1 p50 ms | b1 p90 ms | cosine to unfused fp32 |",
                 "|---|---:|---:|---:|---:|"]
        for (precision, fused), (nodes, sess) in variants.items():
            out = np.concatenate([sess.run(None, f)[0] for f in feeds])
            cos = float(np.mean(np.sum(out * reference, 1) / np.linalg.norm(out, axis=1)
                                / np.linalg.norm(reference, axis=1)))
            t = np.array(times[(precision, fused)]) * 1e3
            name = f"{precision}, attention {'fused (Attention op)' if fused else 'unfused (MatMul/Softmax)'}"
            lines.append(f"| {name} | {nodes} | {np.percentile(t, 50):.2f} | {np.percentile(t, 90):.2f} "
                         f"| {cos:.4f} |")
    mean_tokens = np.mean([len(r) for r in rows])
    return [*lines, "", f"{texts} tweets (mean {mean_tokens:.0f} tokens), {rounds} interleaved rounds."]


def main() -> None:
    prov = header()  # before the runs: the date they started
    out = ["# Serving-path overheads", "", *prov, "",
           "## Response encoding (one 384-d embedding)", "", *encoding(), "",
           "## ONNX Runtime thread spinning (all-MiniLM-L6-v2 fp32, batch 1, 40 tokens, runs 50 ms apart)",
           "", *spinning(), "",
           "## Attention fusion in the ONNX export (all-MiniLM-L6-v2, batch 1, 1 thread)", "",
           *attention_fusion(), ""]
    text = "\n".join(out)
    (ROOT / "results" / "overheads.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
