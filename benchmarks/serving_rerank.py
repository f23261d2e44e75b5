"""Served reranking: documents/s at p99 ≤ 50 ms with 20 documents per request, in one run.

Each cross-encoder artifact given (``--model NAME=PATH``, e.g. the teacher and the INT8 student
``benchmarks/rerank.py`` writes) is served by ``bertserve serve`` and driven through the
TEI-compatible ``POST /rerank`` with open-loop Poisson arrivals at increasing rates: one real
headline × ``--documents`` real news sentences per request, at least ``--min-requests`` per
step. For each model: the highest request rate whose p99 stays under each SLO with no errors,
and the documents/s it served there. A system's sweep stops after its first saturated step.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/serving_rerank.py \\
        --model teacher=benchmarks/.work/rerank/teacher \\
        --model int8-student=benchmarks/.work/rerank/student-int8

Writes ``benchmarks/results/serving_rerank.{md,json}`` (``--stem`` renames them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from provenance import cores, free_port, header  # benchmarks/provenance.py, beside this script
from serving import served_run  # the same server start, load and stop as benchmarks/serving.py

from bertserve.bench.markdown import run_markdown
from bertserve.bench.ranking import DocumentCount, RerankSampler, news_titles
from bertserve.bench.report import RunReport
from bertserve.bench.targets import make_target
from bertserve.bench.workload import sweep
from bertserve.data import news_sentences

ROOT = Path(__file__).resolve().parent


def run(args: argparse.Namespace) -> list[RunReport]:
    reports = []
    for spec in args.model:
        name, _, path = spec.partition("=")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "bertserve.cli", "serve", path, "--port", str(port),
               "--workers", args.workers, "--threads", args.threads, "--slo-ms", str(args.slo_ms),
               *args.serve_flags.split()]
        print(f"== {name}: starting {' '.join(cmd[2:])}", flush=True)
        described = {"queries": "news headlines", "documents": "news sentences"}
        sampler = RerankSampler(news_titles(), news_sentences(), DocumentCount.parse(args.documents),
                                seed=0, describe=described)
        workload = sweep(args.rates, args.step_s, sampler, seed=0, min_requests=args.min_requests)
        reports.append(served_run(name, cmd, url + "/v2/health/ready", make_target("rerank", url), workload))
        report = reports[-1]
        for p in report.phases:
            lat = p.latency_ms
            print(f"   {p.offered_rate:6.1f} req/s  {p.documents_per_s:7.0f} docs/s  p50 {lat['p50']:7.1f}  "
                  f"p99 {lat['p99']:7.1f} ms  errors {p.error_count}", flush=True)
    return reports


def docs(report: RunReport, slo: str) -> float:
    """Documents/s at the capacity for ``slo``; 0 when no rate met it."""
    return report.documents_at_capacity(slo) if report.capacity.get(slo) else 0.0


def summary(reports: list[RunReport]) -> str:
    lines = ["| model | req/s at p99 ≤ 50 ms | docs/s at p99 ≤ 50 ms | req/s at p99 ≤ 100 ms | "
             "docs/s at p99 ≤ 100 ms | peak docs/s |", "|---|---:|---:|---:|---:|---:|"]
    for r in reports:
        lines.append(f"| {r.system} | {r.capacity['50']:g} | {docs(r, '50'):.0f} | "
                     f"{r.capacity['100']:g} | {docs(r, '100'):.0f} | "
                     f"{r.peak_documents_per_s:.0f} |")
    return "\n".join(lines)


def write(reports: list[RunReport], args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.stem}.json").write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    head = [
        "# Served reranking: documents/s at the SLO",
        "",
        *header(),
        f"- Models: {', '.join(args.model)}; `bertserve serve` with {args.workers} worker(s) × "
        f"{args.threads} thread(s), SLO {args.slo_ms:g} ms {args.serve_flags}".rstrip(),
        f"- Load: open-loop Poisson, `POST /rerank` with one news headline × {args.documents} news "
        f"sentences per request, at least {args.min_requests} requests per rate; latency from the "
        f"scheduled send time; a 429 counts as an error. The client runs on the same {cores()} cores.",
        "",
        "## Summary",
        "",
        summary(reports),
        "",
        "## Per run",
        "",
    ]
    (out / f"{args.stem}.md").write_text("\n".join(head) + "\n".join(run_markdown(r) for r in reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH of a rerank artifact")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[2, 4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50])
    parser.add_argument("--documents", default="20", help="documents per request (bertserve bench's spec)")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--slo-ms", type=float, default=50.0, help="the server's latency target")
    parser.add_argument("--serve-flags", default="", help="more flags for bertserve serve")
    parser.add_argument("--step-s", type=float, default=8.0)
    parser.add_argument("--min-requests", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--stem", default="serving_rerank", help="file name of the outputs, without suffix")
    args = parser.parse_args()
    reports = run(args)
    write(reports, args)
    print(summary(reports))


if __name__ == "__main__":
    main()
