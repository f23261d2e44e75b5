"""Serving benchmark: bertserve against a naive transformers+FastAPI server, in one run.

Open-loop Poisson load (arrivals never wait for answers) of one real short text per request
(health tweets: chat-like lengths) at increasing rates, at least ``--min-requests`` per step;
a system's sweep stops after its first saturated step. For each system: the highest rate whose
p99 stays under 50 ms and under 100 ms with no errors (a 429 counts as an error), and p50/p99
at 10 requests/s. Uses the load generator of ``bertserve.bench``.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/serving.py

Writes ``benchmarks/results/serving.{md,json,png}`` (+ ``serving_cdf.png``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from provenance import cores, free_port, header  # benchmarks/provenance.py, beside this script

from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.markdown import compare_markdown, run_markdown
from bertserve.bench.plots import plot_cdf, plot_latency_vs_rate
from bertserve.bench.report import RunReport
from bertserve.bench.runner import RunOptions, bench, run_async
from bertserve.bench.targets import RankTarget, Target, make_target
from bertserve.bench.workload import TextSampler, Workload, sweep
from bertserve.data import health_tweets
from bertserve.optimize.capacity import stop

ROOT = Path(__file__).resolve().parent
SLOS = (50.0, 100.0)


def start(cmd: list[str], health: str, env: dict[str, str], timeout: float = 300.0) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
        try:
            if httpx.get(health, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"{' '.join(cmd)} not ready after {timeout:.0f} s")


def served_run(name: str, cmd: list[str], health: str, target: Target | RankTarget,
               workload: Workload, slos: tuple[float, ...] = SLOS,
               tag_runtime: bool | None = None) -> RunReport:
    """Start the server ``cmd``, drive ``workload`` at ``target`` once ``health`` answers, stop it.

    The run is named with the runtime ``/health`` reports when ``tag_runtime`` (by default: for a
    bertserve server, whose name starts with "bertserve").
    """
    proc = start(cmd, health, {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    try:
        runtime = served_runtime(health)
        if runtime and (name.startswith("bertserve") if tag_runtime is None else tag_runtime):
            name = f"{name} ({runtime})"
        options = RunOptions(system=name, slo_ms=slos, load=LoadOptions(warmup_s=3.0), progress=False)
        return run_async(bench(target, workload, options))
    finally:
        stop(proc)


def served_runtime(health: str) -> str:
    """'backend precision' the server runs (``backend auto`` chooses at start-up), from /health."""
    try:
        body = httpx.get(httpx.URL(health).copy_with(path="/health"), timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return ""
    runtime = body.get("runtime") or {}
    return " ".join(str(runtime[k]) for k in ("backend", "precision") if runtime.get(k))


def systems(args: argparse.Namespace) -> list[tuple[str, list[str], str, list[float]]]:
    """(name, command with {port}, health path, rates) of every server in the run."""
    out = []
    for layout in args.layouts.split(","):
        shape, *flags = layout.split(":")  # e.g. "2x1", "2x1:int8", "2x1:int8:cold"
        workers, threads = shape.split("x")
        switches = {"nowiden": ["--no-widen"], "widen": ["--widen"], "cold": ["--hot-spin-ms", "0"]}
        precision = next((f for f in flags if f not in switches), "")
        extra = ["--backend", "onnxruntime", "--precision", precision] if precision else []
        for f in flags:
            extra += switches.get(f, [])
        label = "".join(f" {f}" for f in flags)
        out.append((f"bertserve {workers}×{threads}{label}",
                    [sys.executable, "-m", "bertserve.cli", "serve", "--port", "{port}", "--workers", workers,
                     "--threads", threads, "--slo-ms", str(args.slo_ms), *extra],
                    "/v2/health/ready", args.rates))
    if not args.skip_naive:
        out.append(("naive (transformers + FastAPI)",
                    [sys.executable, str(ROOT / "naive_server.py"), "--port", "{port}"],
                    "/health", args.naive_rates))
    return out


def run(args: argparse.Namespace) -> list[RunReport]:
    sampler = TextSampler(health_tweets(), seed=0)
    reports = []
    for name, cmd, health, rates in systems(args):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"== {name}: starting", flush=True)
        workload = sweep(rates, args.step_s, sampler, seed=0, min_requests=args.min_requests)
        report = served_run(name, [c.replace("{port}", str(port)) for c in cmd], url + health,
                            make_target("simple", url), workload)
        reports.append(report)
        for p in report.phases:
            lat = p.latency_ms
            print(f"   {p.offered_rate:6.0f}/s  p50 {lat['p50']:7.1f}  p99 {lat['p99']:7.1f} ms"
                  f"  errors {p.error_count}", flush=True)
    return reports


def summary(reports: list[RunReport]) -> str:
    naive = next((r for r in reports if r.system.startswith("naive")), None)
    lines = []
    for r in reports:
        low = r.phase_at(10.0)
        p = "—" if low is None else f"p50 {low.latency_ms['p50']:.1f} ms, p99 {low.latency_ms['p99']:.1f} ms"
        line = (f"- **{r.system}**: {r.capacity['50']:g} req/s at p99 ≤ 50 ms, {r.capacity['100']:g} req/s "
                f"at p99 ≤ 100 ms; at 10 req/s {p}.")
        if naive is not None and r is not naive and naive.capacity["100"] > 0:
            line += f" {r.capacity['100'] / naive.capacity['100']:.1f}× the naive server's rate at 100 ms."
        lines.append(line)
    return "\n".join(lines)


def write(reports: list[RunReport], args: argparse.Namespace) -> None:
    import json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    plot_latency_vs_rate(reports, out / "serving.png")
    plot_cdf(reports, out / "serving_cdf.png", rate=10.0)
    head = [
        "# Serving: bertserve vs a naive server",
        "",
        *header(),
        "- Model: all-MiniLM-L6-v2 (bundled). bertserve: worker processes (layouts workers×threads), "
        "each run named with the runtime its server reported in /health: a layout without a "
        "precision runs the default (backend auto: the fastest lossless runtime, measured at "
        "start-up), a layout with one runs ONNX Runtime at it; "
        f"SLO {args.slo_ms:g} ms; naive: transformers eager, one forward pass "
        "per request, FastAPI thread pool.",
        "- Load: open-loop Poisson, one health tweet per request (real chat-like lengths), at least "
        f"{args.min_requests} requests per rate; latency from the scheduled send time (no coordinated "
        f"omission); a 429 counts as an error. The client runs on the same {cores()} cores.",
        "",
        "## Summary",
        "",
        summary(reports),
        "",
        "## Capacity and latency",
        "",
        compare_markdown(reports, low_rate=10, mid_rate=50),
        "![latency vs load](serving.png)",
        "",
        "## Per run",
        "",
    ]
    (out / "serving.md").write_text("\n".join(head) + "\n".join(run_markdown(r) for r in reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500])
    parser.add_argument("--naive-rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[5, 10, 15, 20, 25, 35, 50, 75, 100])
    parser.add_argument("--layouts", default="2x1,1x2",
                        help="bertserve workers×threads[:precision][:widen|nowiden][:cold], "
                        "comma-separated (cold: --hot-spin-ms 0), e.g. 2x1,2x1:int8,2x1:int8:cold")
    parser.add_argument("--slo-ms", type=float, default=100.0, help="bertserve's latency target")
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--min-requests", type=int, default=200)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    reports = run(args)
    write(reports, args)
    print(summary(reports))


if __name__ == "__main__":
    main()
