"""Reranking: a cross-encoder teacher, a shallow student distilled from it, and INT8 of both.

On the news ranking task of ``bertserve.data.ranking_splits`` (a headline is the query; its
article's lead is the one relevant passage among 30 candidates, the others leads of other
articles, about half of them sharing the headline's words; 300 held-out articles never seen in
training):

1. ``finetune --task rerank``: the bundled MiniLM (6 layers) as a cross-encoder, listwise loss;
2. ``distill`` (``--students 1``) or ``stack`` (``--students K``) a ``--layers``-layer student from
   it on the teacher's scores over the training pairs (distill: whole queries a batch, the MSE of
   the scores centred per query + a tenth of the plain MSE; stack: boosting on the plain MSE);
3. ``quantize --method dynamic-int8`` of the teacher and of the student (ONNX, per-channel INT8);
4. MRR@10 / nDCG@10 of every model on the held-out queries (all on onnxruntime, fp32 or INT8),
   the student's share of the teacher's MRR, and the latency of one rerank request (one query,
   ``--request`` passages) on ``--threads`` threads: interleaved rounds, each round's median,
   the best round kept (contention on a shared machine only ever adds time).

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/rerank.py      # the full run
    .venv/bin/python benchmarks/rerank.py --steps 20 --student-steps 20 --transfer-queries 64 \\
        --eval-queries 20 --no-timing --out /tmp/rerank-smoke                  # a smoke run

Results: ``results/rerank.md`` and ``results/rerank.json`` (``--out`` without suffix). Trained
models go to ``.work/rerank`` (``--reuse`` keeps those already there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from provenance import header, provenance  # benchmarks/provenance.py, beside this script

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent


def build(args: argparse.Namespace, splits: dict) -> dict[str, Path]:
    """Train (or reuse) the teacher and the student, quantise both; return the torch artifacts."""
    from bertserve.compress.distill import distill
    from bertserve.compress.finetune import RerankOptions, finetune_rerank
    from bertserve.compress.stacking import stack
    from bertserve.compress.transfer import TrainOptions

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    teacher, student = work / "teacher", work / "student"
    log: dict = {}
    if not (args.reuse and (teacher / "bertserve.json").exists()):
        shutil.rmtree(teacher, ignore_errors=True)
        opts = RerankOptions(max_steps=args.steps, epochs=100.0, batch_size=args.batch_size, lr=args.lr,
                             max_len=args.max_len, threads=args.train_threads, seed=args.seed,
                             eval_queries=min(50, args.eval_queries))
        t0 = time.perf_counter()
        _, report = finetune_rerank(None, teacher, splits["train"], opts=opts, eval_split=splits["test"])
        log["teacher"] = {"seconds": round(time.perf_counter() - t0, 1), "train_loss": report["train_loss"]}
        print(f"teacher: {report}", flush=True)
    if not (args.reuse and (student / "bertserve.json").exists()):
        shutil.rmtree(student, ignore_errors=True)
        train = splits["train"].head(args.transfer_queries)
        q, p, _ = train.pairs()
        opts = TrainOptions(max_steps=args.student_steps, epochs=100.0, batch_size=args.batch_size,
                            lr=args.student_lr, max_len=args.max_len, threads=args.train_threads,
                            hidden_weight=args.hidden_weight, seed=args.seed)
        t0 = time.perf_counter()
        if args.students == 1:
            _, report = distill(teacher, q, student, layers=args.layers, opts=opts, pairs=p,
                                groups=train.groups)  # whole queries a batch: the margins count
        else:
            _, report = stack(teacher, q, student, students=args.students, layers=args.layers, opts=opts,
                              pairs=p)
        log["student"] = {"seconds": round(time.perf_counter() - t0, 1), "transfer_pairs": len(q)}
        print(f"student: {log['student']}", flush=True)
    models = {"teacher": teacher, "student": student}
    for name in ("teacher", "student"):
        models[f"{name}-int8"] = quantized(models[name], work / f"{name}-int8", args.reuse)
    args.build_log = log
    return models


def quantized(src: Path, out: Path, reuse: bool) -> Path | None:
    """The dynamic-INT8 ONNX artifact of ``src`` (None, with the reason printed, if that fails)."""
    from bertserve.compress.quantize import QuantizeConfig, quantize

    if reuse and (out / "bertserve.json").exists():
        return out
    try:
        return quantize(src, out, QuantizeConfig(method="dynamic-int8"), overwrite=True)
    except Exception as exc:  # the pair export may be missing: the other rows still count
        print(f"INT8 of {src.name} failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def fp32_onnx(src: Path, work: Path, reuse: bool) -> Path | None:
    from bertserve.export.onnx import export_onnx

    out = work / f"{src.name}-onnx"
    if reuse and (out / "bertserve.json").exists():
        return out
    try:
        return export_onnx(src, out, precision="fp32", overwrite=True)
    except Exception as exc:
        print(f"ONNX export of {src.name} failed: {type(exc).__name__}: {exc}", flush=True)
        return None


def request_ms(encs: dict, query: str, passages: list[str], rounds: int, repeats: int) -> dict[str, float]:
    """Per model the best round's median time of ``enc.score(query, passages)`` (one request)."""
    times: dict[str, list[float]] = {n: [] for n in encs}
    for enc in encs.values():
        enc.score(query, passages)  # warm-up
    for _ in range(rounds):
        for name, enc in encs.items():
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                enc.score(query, passages, max_batch=len(passages))
                ts.append(time.perf_counter() - t0)
            times[name].append(statistics.median(ts) * 1e3)
    return {n: min(v) for n, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=HERE / ".work" / "rerank")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rerank")
    ap.add_argument("--steps", type=int, default=400, help="teacher fine-tuning steps")
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per step (4 queries × 8)")
    ap.add_argument("--lr", type=float, default=1e-4, help="teacher learning rate")
    ap.add_argument("--max-len", type=int, default=96, help="training truncation (pairs)")
    ap.add_argument("--students", type=int, default=1, help="1: distill; K > 1: stack K students")
    ap.add_argument("--layers", type=int, default=2, help="layers per student")
    ap.add_argument("--student-steps", type=int, default=1000)
    ap.add_argument("--student-lr", type=float, default=2e-4)
    ap.add_argument("--hidden-weight", type=float, default=0.0, help="distill: hidden-state matching")
    ap.add_argument("--transfer-queries", type=int, default=3364, help="training queries (× 8 pairs)")
    ap.add_argument("--eval-queries", type=int, default=300, help="held-out queries (× 30 pairs)")
    ap.add_argument("--request", type=int, default=20, help="passages in one timed rerank request")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (timing and evaluation)")
    ap.add_argument("--train-threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-timing", action="store_true", help="quality only (a smoke run)")
    ap.add_argument("--reuse", action="store_true", help="keep the trained models in --work")
    args = ap.parse_args()
    prov = provenance()  # before the run: the date it started
    t_start = time.perf_counter()

    from bertserve import Encoder
    from bertserve.artifact import folder_size
    from bertserve.compress.ranking import evaluate_artifact, random_mrr
    from bertserve.data import ranking_splits

    splits = ranking_splits()
    held_out = splits["test"].head(args.eval_queries)
    built = build(args, splits)
    graphs = {  # every row on onnxruntime: fp32 exports of the torch artifacts, the INT8 artifacts
        "teacher fp32": fp32_onnx(built["teacher"], args.work, args.reuse),
        "teacher INT8": built["teacher-int8"],
        "student fp32": fp32_onnx(built["student"], args.work, args.reuse),
        "student INT8": built["student-int8"],
    }
    rows = []
    for name, path in graphs.items():
        if path is None:
            rows.append({"model": name, "error": "no graph (see the log)"})
            continue
        metrics = evaluate_artifact(path, held_out, backend="onnxruntime", threads=args.threads)
        size = round(folder_size(path) / 1e6, 1)
        rows.append({"model": name, "path": str(path), "size_mb": size, **metrics})
        print(json.dumps(rows[-1]), flush=True)
    teacher_mrr = rows[0].get("mrr@10")
    for r in rows:
        if teacher_mrr and "mrr@10" in r:
            r["share_of_teacher_mrr"] = round(r["mrr@10"] / teacher_mrr, 4)
    if not args.no_timing:
        q = held_out.queries[0]
        passages = list(q.passages[: args.request])
        encs = {r["model"]: Encoder.load(r["path"], backend="onnxruntime", threads=args.threads)
                for r in rows if "path" in r}
        ms = request_ms(encs, q.query, passages, args.rounds, args.repeats)
        base = ms.get("teacher fp32")
        for r in rows:
            if r["model"] in ms:
                r["ms_per_request"] = round(ms[r["model"]], 3)
                r["ms_per_pair"] = round(ms[r["model"]] / len(passages), 3)
                r["speedup"] = round(base / ms[r["model"]], 2) if base else None
    payload = {"rows": rows, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                                      if k != "build_log"},
               "build": args.build_log, "random_mrr@10": round(random_mrr(30), 4),
               "seconds": round(time.perf_counter() - t_start), **prov}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    student = (f"{args.layers}-layer student (distill)" if args.students == 1
               else f"{args.students} × {args.layers}-layer students (stack)")
    lines = [
        "# Reranking: teacher, student, INT8",
        "",
        *header(prov),
        "",
        f"News ranking task: {len(held_out)} held-out headlines × 30 candidates (1 relevant); "
        f"random order MRR@10 {random_mrr(30):.4f}. Teacher: MiniLM-L6 cross-encoder, "
        f"{args.steps} steps × {args.batch_size} pairs; {student}, {args.student_steps} steps on "
        f"{sum(splits['train'].head(args.transfer_queries).groups)} teacher-scored pairs. "
        f"All rows on onnxruntime, {args.threads} thread(s).",
        "",
        "| model | size MB | MRR@10 | nDCG@10 | share of teacher MRR | ms / request | ms / pair | × faster |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | – | – | – | – | – | – | – |")
            continue
        timing = (f"{r['ms_per_request']:.2f} | {r['ms_per_pair']:.3f} | {r['speedup']:.2f}"
                  if "ms_per_request" in r and r.get("speedup") else "– | – | –")
        lines.append(f"| {r['model']} | {r['size_mb']:.1f} | {r['mrr@10']:.4f} | {r['ndcg@10']:.4f} "
                     f"| {r.get('share_of_teacher_mrr', float('nan')):.3f} | {timing} |")
    lines += ["", f"One request = one query and {args.request} passages; best of {args.rounds} interleaved "
              f"rounds of {args.repeats}. Full run took {payload['seconds']} s."
              if not args.no_timing else "Timing skipped (--no-timing)."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
