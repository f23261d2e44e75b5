"""Issue 20's served figures in one run: capacity at p99 ≤ 50 ms, low-load latency, 3× overload.

Three models by default (``--only``), each behind ``bertserve serve`` with two one-thread workers:

- ``l1-int8``: the bundled MiniLM cut to its first layer (``num_hidden_layers: 1``), exported
  INT8 — 6× less compute than the teacher, to show whether a cheaper model buys capacity;
- ``int8``: the bundled MiniLM exported INT8 (ONNX Runtime, dynamic per-channel);
- ``default``: ``bertserve serve`` as a user starts it (backend auto from the fp32 checkpoint);
- on request, ``ov-int8``: the bundled MiniLM quantised by NNCF to an OpenVINO INT8 IR
  (``bertserve quantize --method ov-int8``, calibrated on tweets).

For each, an open-loop Poisson sweep (one health tweet per request, real chat lengths) with
``--slo-ms 50``: the highest rate whose p99 ≤ 50 ms with no error (a 429 is an error), p50/p99
at 10 req/s, and the server's CPU per request (from ``bertserve_process_cpu_seconds_total``).
Then two overload runs: ``int8`` (or ``--overload-int8``) at 450 req/s with ``--slo-ms 50``,
and ``default`` at three times its measured capacity with the default SLO (100 ms): what the
accepted requests got, how fast the refused ones heard so, and the goodput (answers within the
SLO per second).

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/serving_path.py

The models are built once under ``benchmarks/.work/serving_path``. Writes
``benchmarks/results/NAME.{json,md,png}`` (``--name``, default ``serving_path``); ``--serve-args``
adds flags to every server (e.g. ``--serve-args="--worker-nice 0"``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from provenance import cores, free_port, header  # benchmarks/provenance.py, beside this script
from serving import served_run  # benchmarks/serving.py, beside this script

from bertserve.artifact import default_model_path
from bertserve.bench.markdown import run_markdown
from bertserve.bench.plots import plot_latency_vs_rate
from bertserve.bench.report import PhaseSummary, RunReport
from bertserve.bench.targets import make_target
from bertserve.bench.workload import TextSampler, Workload, poisson, sweep
from bertserve.data import health_tweets

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".work" / "serving_path"
SLO_MS = 50.0
DEFAULT_SLO_MS = 100.0  # bertserve serve's default
TARGETS = {"l1-int8": 450, "int8": 200, "ov-int8": 200, "default": 100}  # issue 20: capacity at p99 ≤ 50 ms


def bertserve(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bertserve.cli", *args], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})


def models(wanted: list[str]) -> dict[str, str]:
    """name → what ``bertserve serve`` is given, building the INT8 models once."""
    WORK.mkdir(parents=True, exist_ok=True)
    ov = WORK / "ov-int8"
    if "ov-int8" in wanted and not (ov / "bertserve.json").exists():
        bertserve("quantize", "default", str(ov), "--method", "ov-int8", "--corpus", "tweets", "--overwrite")
    int8 = WORK / "int8"
    if not (int8 / "bertserve.json").exists():
        bertserve("export", "default", str(int8), "--precision", "int8", "--overwrite")
    l1 = WORK / "l1-int8"
    if not (l1 / "bertserve.json").exists():
        ckpt = WORK / "l1-checkpoint"
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.copytree(default_model_path(), ckpt)
        config = json.loads((ckpt / "config.json").read_text())
        config["num_hidden_layers"] = 1  # the first layer's weights are used, the rest ignored
        (ckpt / "config.json").write_text(json.dumps(config, indent=1))
        bertserve("export", str(ckpt), str(l1), "--precision", "int8", "--overwrite")
    return {"l1-int8": str(l1), "int8": str(int8), "ov-int8": str(ov), "default": "default"}


def served(name: str, model: str, slo_ms: float, workload: Workload, extra: list[str]) -> RunReport:
    """Serve ``model`` (2 workers × 1 thread, SLO ``slo_ms``), run ``workload`` against it, stop."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bertserve.cli", "serve", model, "--port", str(port), "--workers", "2",
           "--threads", "1", "--slo-ms", f"{slo_ms:g}", *extra]
    return served_run(name, cmd, url + "/v2/health/ready", make_target("simple", url), workload,
                      slos=(slo_ms,), tag_runtime=True)


def fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def cpu(p: PhaseSummary | None) -> str:
    """Front / total server CPU ms per request of a phase."""
    if p is None or not p.server_cpu_ms:
        return "—"
    front, total = (p.server_cpu_ms.get(k, math.nan) for k in ("front", "total"))
    return f"{fmt(front, 2)} / {fmt(total, 2)}"


def capacity_table(reports: dict[str, RunReport]) -> str:
    lines = ["| model | served as | max rate p99 ≤ 50 ms, no error | target | p50 / p99 @ 10/s (ms) | "
             "server CPU ms/req @ that rate (front / all) | highest rate run: p99 ms, errors |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, r in reports.items():
        cap = r.capacity[f"{SLO_MS:g}"]
        low = r.phase_at(10.0)
        at = r.phase_at(cap) if cap else None
        top = max(r.phases, key=lambda p: p.offered_rate)
        p50, p99 = (low.latency_ms[k] if low else math.nan for k in ("p50", "p99"))
        lines.append(f"| {name} | {r.system} | {cap:g} | {TARGETS[name]} | {fmt(p50)} / {fmt(p99)} | "
                     f"{cpu(at)} | {top.offered_rate:g}/s: {fmt(top.latency_ms['p99'])}, {top.error_count} |")
    return "\n".join(lines)


def overload_table(rows: list[tuple[str, float, float, RunReport]]) -> str:
    lines = ["| model | server SLO ms | offered/s | requests | answered | refused (429) | other errors | "
             "answered p50 / p99 ms | 429 answered in p50 / p99 ms | goodput/s (≤ SLO) | "
             "capacity it should keep |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, slo, capacity, r in rows:
        p = r.phases[0]
        refused = p.errors.get("http_429", 0)
        other = p.error_count - refused
        ref = p.refusal_ms or {}
        lines.append(f"| {name} | {slo:g} | {p.offered_rate:g} | {p.requests} | {p.ok} | {refused} | "
                     f"{other} | "
                     f"{fmt(p.latency_ms['p50'])} / {fmt(p.latency_ms['p99'])} | "
                     f"{fmt(ref.get('p50', math.nan))} / {fmt(ref.get('p99', math.nan))} | "
                     f"{fmt(p.goodput)} | {capacity:g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="l1-int8,int8,default",
                        help="models to run, comma-separated")
    parser.add_argument("--rates-l1-int8", default="10,150,300,450,600,750,900")
    parser.add_argument("--rates-int8", default="10,100,150,200,250,300")
    parser.add_argument("--rates-ov-int8", default="10,100,150,200,250,300,400")
    parser.add_argument("--rates-default", default="10,50,100,150,200,250")
    parser.add_argument("--step-s", type=float, default=5.0)
    parser.add_argument("--min-requests", type=int, default=200)
    parser.add_argument("--overload-s", type=float, default=10.0)
    parser.add_argument("--int8-overload-rate", type=float, default=450.0)
    parser.add_argument("--overload-int8", default="int8", help="which INT8 model the overload run serves")
    parser.add_argument("--serve-args", default="",
                        help="extra `bertserve serve` flags, one string (--serve-args=--widen)")
    parser.add_argument("--name", default="serving_path", help="stem of the output files")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args()
    wanted = args.only.split(",")
    paths = models(wanted)
    extra = args.serve_args.split()
    sampler = TextSampler(health_tweets(), seed=0)
    reports: dict[str, RunReport] = {}
    for name in wanted:
        rates = [float(x) for x in getattr(args, f"rates_{name.replace('-', '_')}").split(",")]
        print(f"== {name}: sweep {rates}", flush=True)
        reports[name] = r = served(name, paths[name], SLO_MS,
                                   sweep(rates, args.step_s, sampler, seed=0, min_requests=args.min_requests),
                                   extra)
        for p in r.phases:
            lat = p.latency_ms
            print(f"   {p.offered_rate:6.0f}/s  p50 {lat['p50']:7.1f}  p99 {lat['p99']:7.1f} ms"
                  f"  errors {p.error_count}  cpu {cpu(p)}", flush=True)
    overloads: list[tuple[str, float, float, RunReport]] = []
    q = args.overload_int8
    if q in reports:
        cap = reports[q].capacity[f"{SLO_MS:g}"]
        load = poisson(args.int8_overload_rate, args.overload_s, sampler, seed=1)
        overloads.append((q, SLO_MS, cap, served(q, paths[q], SLO_MS, load, extra)))
    if "default" in reports:
        cap = reports["default"].capacity[f"{SLO_MS:g}"]
        if cap > 0:
            load = poisson(3 * cap, args.overload_s, sampler, seed=1)
            report = served("default", "default", DEFAULT_SLO_MS, load, extra)
            overloads.append(("default", DEFAULT_SLO_MS, cap, report))
    for name, slo, _, r in overloads:
        p = r.phases[0]
        print(f"== overload {name} at {p.offered_rate:g}/s, SLO {slo:g}: answered {p.ok}, p99 "
              f"{p.latency_ms['p99']:.1f} ms, errors {p.errors}, refusals {p.refusal_ms}, "
              f"goodput {p.goodput:.1f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(
        {"sweeps": {k: r.to_dict() for k, r in reports.items()},
         "overload": [{"model": n, "slo_ms": s, "capacity": c, "report": r.to_dict()}
                      for n, s, c, r in overloads]},
        indent=1))
    plot_latency_vs_rate(list(reports.values()), out / f"{args.name}.png")
    text = "\n".join([
        "# Served capacity, low-load latency and overload (issue 20)",
        "",
        *header(),
        f"- Servers: `bertserve serve MODEL --workers 2 --threads 1 --slo-ms {SLO_MS:g} {args.serve_args}` "
        "(the overload "
        f"run of `default` with the default SLO, {DEFAULT_SLO_MS:g} ms); each named with the runtime "
        "its /health reported.",
        f"- Load: open-loop Poisson, one health tweet per request; sweep steps of {args.step_s:g} s or "
        f"{args.min_requests} requests; overload runs {args.overload_s:g} s. A 429 counts as an error "
        f"in the sweeps; the client runs on the same {cores()} cores.",
        "",
        "## Capacity at p99 ≤ 50 ms",
        "",
        capacity_table(reports),
        "",
        f"![latency vs load]({args.name}.png)",
        "",
        "## Overload",
        "",
        overload_table(overloads),
        "",
        "## Per run",
        "",
        *[run_markdown(r) for r in reports.values()],
        *[run_markdown(r) for _, _, _, r in overloads],
    ])
    (out / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
