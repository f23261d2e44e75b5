"""Adaptive student pruning under bursts: goodput with and without it, and what it costs.

One student-ensemble artifact is served several times on the same machine, with the same seeded
workload: with adaptive student pruning (the default: the batcher drops the last students of a
batch when the queue's SLO slack runs out; ``--policies`` runs one server per pair of thresholds)
and, last, with every student always running (``--no-adaptive-students``). The load is a base rate
near the full ensemble's capacity with bursts of ``--factor`` times that rate. Goodput = answers
within the SLO per second (a 429 or a late answer does not count). The quality cost is the share
of texts each student count served (``bertserve_texts_by_students_total``) times that prefix's
held-out quality, as ``benchmarks/students.py`` measured it (``results/students.json``).

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/students_burst.py

Writes ``benchmarks/results/students_burst.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx
from provenance import header  # benchmarks/provenance.py: command, machine, date
from serving import free_port, start, stop

from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.markdown import run_markdown
from bertserve.bench.runner import RunOptions, bench, run_async
from bertserve.bench.targets import make_target
from bertserve.bench.workload import TextSampler, bursts, sweep
from bertserve.data import health_tweets

ROOT = Path(__file__).resolve().parent
DEFAULT_ARTIFACT = ROOT / ".work" / "students" / "minilm-embed" / "stack-4x1"


def student_texts(url: str) -> dict[int, float]:
    """Texts served per student count, from the server's /metrics."""
    out: dict[int, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("bertserve_texts_by_students_total{"):
            k = int(line.split('students="')[1].split('"')[0])
            out[k] = float(line.split()[-1])
    return out


def prefix_quality(suite: str, layers: int) -> dict[int, float]:
    """Held-out quality of each prefix of the stack, from benchmarks/students.py's results."""
    path = ROOT / "results" / "students.json"
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get(suite, {}).get("rows", [])
    return {r["students"]: r["quality"] for r in rows if r["kind"] == "stack" and r["layers"] == layers}


def serve(artifact: Path, adaptive: bool, slo_ms: float, policy: tuple[float, float] | None = None):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "bertserve.cli", "serve", str(artifact), "--port", str(port),
           "--slo-ms", str(slo_ms), "--adaptive-students" if adaptive else "--no-adaptive-students"]
    if policy is not None:
        cmd += ["--student-cut", str(policy[0]), "--student-restore", str(policy[1])]
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return start(cmd, url + "/v2/health/ready", env), url


def capacity(artifact: Path, slo_ms: float, rates: list[float], sampler: TextSampler) -> float:
    """Highest swept rate the full ensemble serves with p99 within the SLO and no errors."""
    proc, url = serve(artifact, adaptive=False, slo_ms=slo_ms)
    try:
        workload = sweep(rates, 6.0, sampler, seed=1, min_requests=150)
        options = RunOptions(system="capacity probe", slo_ms=(slo_ms,), load=LoadOptions(warmup_s=2.0),
                             progress=False)
        report = run_async(bench(make_target("simple", url), workload, options))
    finally:
        stop(proc)
    for p in report.phases:
        print(f"   probe {p.offered_rate:6.0f}/s  p99 {p.latency_ms['p99']:7.1f} ms  errors {p.error_count}",
              flush=True)
    return float(report.capacity[f"{slo_ms:g}"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    ap.add_argument("--suite", default="minilm-embed", help="students.json suite for prefix quality")
    ap.add_argument("--layers", type=int, default=1, help="layers per student (to find the prefix rows)")
    ap.add_argument("--slo-ms", type=float, default=50.0)
    ap.add_argument("--base-rate", type=float, default=0.0, help="0: 0.8 × the measured capacity")
    ap.add_argument("--probe-rates", default="25,50,75,100,125,150,200,250")
    ap.add_argument("--factor", type=float, default=4.0)
    ap.add_argument("--policies", default="",
                    help="adaptive runs with these thresholds, cut/restore comma-separated "
                    "(e.g. 0.8/0.5,0.5/0.25); empty: the server's defaults")
    ap.add_argument("--burst-s", type=float, default=3.0)
    ap.add_argument("--period-s", type=float, default=12.0)
    ap.add_argument("--duration-s", type=float, default=48.0)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()
    if not (args.artifact / "bertserve.json").exists():
        sys.exit(f"{args.artifact} is not an artifact; train one with benchmarks/students.py train")
    sampler = TextSampler(health_tweets(), seed=0)
    cap = 0.0
    base = args.base_rate
    if base <= 0:
        cap = capacity(args.artifact, args.slo_ms, [float(r) for r in args.probe_rates.split(",")], sampler)
        base = max(5.0, 0.8 * cap)
        print(f"full-ensemble capacity at p99 ≤ {args.slo_ms:g} ms: {cap:g} req/s → base {base:g} req/s",
              flush=True)
    quality = prefix_quality(args.suite, args.layers)
    rows, reports = [], []
    try:
        policies = [(float(c), float(r)) for c, r in (p.split("/") for p in args.policies.split(",") if p)]
    except ValueError:
        ap.error(f"--policies takes cut/restore pairs such as 0.8/0.5,0.5/0.25, not {args.policies!r}")
    runs: list[tuple[str, bool, tuple[float, float] | None]] = [
        (f"adaptive pruning (cut {p[0]:g}, restore {p[1]:g})", True, p) for p in policies
    ] or [("adaptive pruning", True, None)]
    runs.append(("all students", False, None))
    for name, adaptive, policy in runs:
        proc, url = serve(args.artifact, adaptive, args.slo_ms, policy)  # type: ignore[arg-type]
        try:
            workload = bursts(base, args.factor, args.burst_s, args.period_s, args.duration_s, sampler,
                              seed=0)
            options = RunOptions(system=name, slo_ms=(args.slo_ms,), load=LoadOptions(warmup_s=3.0),
                                 progress=False)
            before = student_texts(url)
            report = run_async(bench(make_target("simple", url), workload, options))
            after = student_texts(url)
        finally:
            stop(proc)
        served = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        total = sum(served.values()) or 1.0
        share = {k: v / total for k, v in sorted(served.items()) if v > 0}
        mean_q = sum(quality.get(k, float("nan")) * s for k, s in share.items()) if quality else float("nan")
        phase = report.phases[0]
        rows.append({"system": name, "goodput": phase.goodput, "achieved": phase.achieved_rate,
                     "p50": phase.latency_ms["p50"], "p99": phase.latency_ms["p99"],
                     "errors": phase.error_count, "student_share": share, "mean_quality": mean_q})
        reports.append(report)
        print(f"== {name}: goodput {phase.goodput:.1f}/s, p99 {phase.latency_ms['p99']:.1f} ms, "
              f"errors {phase.error_count}, students {share}", flush=True)
    write(args, rows, reports, base, cap, quality)


def write(args: argparse.Namespace, rows: list[dict], reports: list, base: float, cap: float,
          quality: dict[int, float]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "students_burst.json").write_text(json.dumps(
        {"rows": rows, "base_rate": base, "capacity": cap, "prefix_quality": quality,
         "runs": [r.to_dict() for r in reports]}, indent=1))
    base_goodput = rows[-1]["goodput"]  # the all-students run comes last
    lines = [
        "# Adaptive student pruning under bursts",
        "",
        *header(),
        f"- Artifact: `{args.artifact.name}` (ONNX Runtime, default layout), SLO {args.slo_ms:g} ms",
        f"- Load: base {base:g} req/s" + (f" (0.8 × the full ensemble's measured capacity {cap:g} req/s)"
                                         if cap else "")
        + f", bursts ×{args.factor:g} for {args.burst_s:g} s every {args.period_s:g} s, "
        f"{args.duration_s:g} s, one health tweet per request, seeded (same arrivals for every run)",
        "",
        "| system | goodput/s (≤ SLO) | achieved/s | p50 ms | p99 ms | errors (429) | texts by students run "
        "| mean held-out quality |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        share = ", ".join(f"{k}: {v:.0%}" for k, v in r["student_share"].items())
        lines.append(f"| {r['system']} | {r['goodput']:.1f} | {r['achieved']:.1f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['errors']} | {share} | {r['mean_quality']:.3f} |")
    lines.append("")
    for r in rows[:-1]:
        ratio = r["goodput"] / base_goodput if base_goodput else float("inf")
        lines.append(f"Goodput of {r['system']} / all students: **{ratio:.2f}×**.")
    lines.append("")
    if quality:
        lines.append("Prefix quality (held-out, from `results/students.json`): "
                     + ", ".join(f"{k} students {q:.3f}" for k, q in sorted(quality.items())) + ".")
    lines += ["", *[run_markdown(r) for r in reports]]
    (args.out / "students_burst.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
