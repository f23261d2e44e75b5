"""Does the capacity planner predict the real server's p99? Measure one machine and compare.

1. The profile: the server's own (`engine_profile` measures the engine's grid with the engine's
   worker code and saves it where `bertserve serve` looks, so server and planner share it).
2. A real `bertserve serve` (same settings) on loopback.
3. The per-request overhead outside batching (HTTP, tokenising, pipe hand-offs), from an idle
   probe at a low rate: median of (latency - the profile's batch-1 time for that text).
   And the CPU per request spent beside the workers (server front end + this client, which
   shares the cores here), from /proc during a short probe at a moderate rate.
4. For each rate: open-loop Poisson load of real tweets with `bertserve.bench`'s load generator;
   measured p50/p99 (a refused or failed request counts as a miss), against the planner's
   prediction for one replica: its simulation of the engine's batcher on a fresh seeded schedule
   with corpus lengths (what `bertserve plan --overhead-ms --front-cpu-ms` computes; the
   primary figure), the same without the CPU share (profile only), and on the exact schedule
   that was sent.

Run it alone on the machine (`flock /tmp/bertserve-heavy.lock python benchmarks/planner.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertserve.bench.client import HttpSender  # noqa: E402
from bertserve.bench.loadgen import Clock, LoadOptions, run_phase, warm_up  # noqa: E402
from bertserve.bench.targets import SimpleTarget  # noqa: E402
from bertserve.bench.workload import TextSampler, poisson  # noqa: E402
from bertserve.config import ServerSettings  # noqa: E402
from bertserve.data import corpus  # noqa: E402
from bertserve.models.tokenizer import TextTokenizer  # noqa: E402
from bertserve.planner import Arrivals, EngineConfig, corpus_lengths, engine_profile, simulate  # noqa: E402
from bertserve.planner.plan import Scenario, arrivals_for, cpu_slowdown  # noqa: E402
from bertserve.runtime.loader import cache_root  # noqa: E402
from bertserve.serving.engine import resolve_artifact  # noqa: E402

ROOT = Path(__file__).resolve().parent


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TICK = os.sysconf("SC_CLK_TCK")
SHARED_CORES = 0.25  # other processes' CPU above which a phase does not measure this server alone


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all processes, all users)."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts[:8]) - idle) / TICK


class CpuMeter:
    """CPU used during a phase by the server's front process, its workers, this client and the rest."""

    def __init__(self, server: int) -> None:
        self.server = server
        self.workers = children(server)

    def snap(self) -> tuple[float, float, float, float, float]:
        return (cpu_s(self.server), sum(cpu_s(w) for w in self.workers), time.process_time(),
                machine_busy_s(), time.monotonic())

    @staticmethod
    def delta(a: tuple[float, ...], b: tuple[float, ...], requests: int) -> dict[str, float]:
        front, workers, client, busy, wall = (y - x for x, y in zip(a, b, strict=True))
        return {"front_cpu_ms_per_req": front / max(1, requests) * 1e3,
                "client_cpu_ms_per_req": client / max(1, requests) * 1e3,
                "workers_cores": workers / wall, "other_cores": (busy - front - workers - client) / wall}


def p(lat: np.ndarray, q: float) -> float:
    """Percentile in ms with misses (NaN) as infinitely late."""
    return float(np.percentile(np.where(np.isnan(lat), np.inf, lat), q, method="higher") * 1e3)


def start_server(settings: ServerSettings, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bertserve.cli", "serve", "--port", str(port),
           "--workers", str(settings.workers), "--threads", str(settings.threads),
           "--slo-ms", str(settings.slo_ms), "--backend", settings.backend]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import urllib.request

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("server not ready within 300 s")


async def measure(url: str, rate: float, duration_s: float, texts: list[str], seed: int,
                  warm: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(arrival offsets, latencies with NaN for misses, texts sent) of one open-loop phase."""
    target = SimpleTarget(url)
    workload = poisson(rate, duration_s, TextSampler(texts, seed=seed), seed=seed)
    phase = workload.phases[0]
    bodies = [target.body(t) for t in phase.texts]
    options = LoadOptions(warmup_s=3.0 if warm else 0.0)
    async with HttpSender(url) as send:
        if warm:
            await warm_up(workload, [bodies], send, options)
        result = await run_phase(phase, bodies, send, Clock(), options)
    lat = np.array([o.latency_s if o.error is None else np.nan for o in result.outcomes])
    return phase.arrivals, lat, [t[0] for t in phase.texts]


def planner_capacity(model: object, engine: EngineConfig, pool: np.ndarray, overhead_s: float,
                     front_cpu_s: float, cores: float, duration_s: float) -> float:
    """The highest rate the planner says one replica serves within the SLO (bisection)."""
    def ok(rate: float) -> bool:
        slow = cpu_slowdown(cores, rate, front_cpu_s)
        if not np.isfinite(slow):
            return False
        arrivals = arrivals_for(Scenario("steady", rate), pool, duration_s, seed=7)
        return simulate(arrivals, model, engine, overhead_s=overhead_s,  # type: ignore[arg-type]
                        slowdown=slow).p99 <= engine.slo_s
    lo, hi = 0.0, 50.0
    while ok(hi) and hi < 10_000:
        lo, hi = hi, hi * 2
    while hi - lo > max(2.0, 0.03 * hi):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="auto",
                    help="comma-separated request rates to validate, or 'auto': 40%% and 75%% of the "
                         "capacity the planner predicts for this machine now")
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--idle-rate", type=float, default=4.0)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--cpu-rate", type=float, default=50.0, help="rate of the CPU-per-request probe")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--keep-profile", action="store_true", help="reuse a saved profile instead of measuring")
    args = ap.parse_args()

    settings = ServerSettings(workers=args.workers, threads=args.threads, slo_ms=args.slo_ms,
                              backend=args.backend)
    t0 = time.monotonic()
    if not args.keep_profile:  # measure the machine as it is now, not as it was last time
        shutil.rmtree(cache_root() / "profiles", ignore_errors=True)
    model, measured_now = engine_profile(settings)
    print(f"profile: {'measured' if measured_now else 'read'} in {time.monotonic() - t0:.0f} s; "
          f"fit error ≤ {model.max_rel_error:.0%}", flush=True)
    folder, manifest, _, _ = resolve_artifact(settings)
    tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    texts = corpus("tweets")
    engine = EngineConfig.from_settings(settings, workers=args.workers, max_students=max(model.coef))
    port = free_port()
    url = f"http://127.0.0.1:{port}/embed"
    server = start_server(settings, port)
    rows = []
    meter = CpuMeter(server.pid)
    try:
        arr, lat, sent = asyncio.run(measure(url, args.idle_rate, args.idle_s, texts, 99, warm=True))
        # CPU per request beside the workers on these cores: the server's front end and, in this
        # benchmark, the load generator too (in production it runs elsewhere). Measured at a
        # moderate rate: at a trickle, the event loop's own timers dominate the per-request figure.
        before = meter.snap()
        _, cal, _ = asyncio.run(measure(url, args.cpu_rate, 10.0, texts, 98, warm=False))
        idle_cpu = meter.delta(before, meter.snap(), len(cal))
        print(f"cpu at {args.cpu_rate:g}/s: {json.dumps({k: round(v, 3) for k, v in idle_cpu.items()})}",
              flush=True)
        front_cpu_s = (idle_cpu["front_cpu_ms_per_req"] + idle_cpu["client_cpu_ms_per_req"]) / 1e3
        lengths = np.asarray(tokenizer.count(sent))
        compute = np.array([model.predict(1, int(n)) for n in lengths])
        ok = ~np.isnan(lat)
        overhead = float(np.median(lat[ok] - compute[ok]))
        print(f"idle probe: {ok.sum()} requests, p50 {p(lat, 50):.2f} ms, overhead {overhead * 1e3:.2f} ms",
              flush=True)
        pool = corpus_lengths(None, "tweets")
        cores = args.workers * args.threads
        capacity = planner_capacity(model, engine, pool, overhead, front_cpu_s, cores,
                                    min(args.duration_s, 20))
        print(f"planner capacity at p99 ≤ {args.slo_ms:g} ms: {capacity:.0f} req/s", flush=True)
        rates = ([round(capacity * f) for f in (0.4, 0.75)] if args.rates == "auto"
                 else [float(r) for r in args.rates.split(",")])
        for k, rate in enumerate(rates):
            before = meter.snap()
            arr, lat, sent = asyncio.run(measure(url, rate, args.duration_s, texts, k, warm=False))
            cpu = meter.delta(before, meter.snap(), len(lat))
            same = simulate(Arrivals(arr, np.asarray(tokenizer.count(sent))), model, engine,
                            overhead_s=overhead,
                            slowdown=cpu_slowdown(args.workers * args.threads, rate, front_cpu_s))
            fresh_arrivals = arrivals_for(Scenario("steady", rate), pool, args.duration_s, seed=1000 + k)
            bare = simulate(fresh_arrivals, model, engine, overhead_s=overhead)
            slow = cpu_slowdown(args.workers * args.threads, rate, front_cpu_s)
            plan = simulate(fresh_arrivals, model, engine, overhead_s=overhead, slowdown=slow)
            row = {
                "rate": rate, "requests": int(len(lat)), "misses": int(np.isnan(lat).sum()),
                "measured_p50_ms": p(lat, 50), "measured_p99_ms": p(lat, 99),
                "planner_p50_ms": plan.p50 * 1e3, "planner_p99_ms": plan.p99 * 1e3,
                "same_schedule_p50_ms": same.p50 * 1e3, "same_schedule_p99_ms": same.p99 * 1e3,
                "slowdown": slow,
                "profile_only_p50_ms": bare.p50 * 1e3, "profile_only_p99_ms": bare.p99 * 1e3,
                "planner_mean_batch": plan.mean_batch, **cpu,
            }
            row["p99_error"] = row["planner_p99_ms"] / row["measured_p99_ms"] - 1
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "command": "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"workers": args.workers, "threads": args.threads, "slo_ms": args.slo_ms,
                     "backend": args.backend, "max_batch_size": settings.max_batch_size},
        "profile_fit_error": model.max_rel_error, "overhead_ms": overhead * 1e3, "idle_cpu": idle_cpu,
        "planner_capacity_rps": capacity, "cpu_probe_rate": args.cpu_rate,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner.json").write_text(json.dumps(report, indent=2))
    (args.out / "planner.md").write_text(markdown(report))
    print(f"wrote {args.out / 'planner.json'} and planner.md")


def shared(row: dict) -> str:
    return " ⚠" if row["other_cores"] > SHARED_CORES else ""


def markdown(report: dict) -> str:
    """The figures as a Markdown section (the prose around them lives in the README)."""
    s, m = report["settings"], report["machine"]
    lines = [
        "# Capacity planner: predicted vs measured p99 (one machine)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}",
        f"- server: bundled all-MiniLM-L6-v2, backend {s['backend']}, {s['workers']} workers × "
        f"{s['threads']} thread, SLO {s['slo_ms']:g} ms, max batch {s['max_batch_size']}",
        f"- profile fit error (worst cell): {report['profile_fit_error']:.0%}; overhead outside batching "
        f"(idle probe): {report['overhead_ms']:.2f} ms; CPU beside the workers per request (probe at "
        f"{report['cpu_probe_rate']:g}/s): "
        f"front end {report['idle_cpu']['front_cpu_ms_per_req']:.2f} ms + load generator "
        f"{report['idle_cpu']['client_cpu_ms_per_req']:.2f} ms",
        f"- capacity the planner predicts for one replica (p99 ≤ {s['slo_ms']:g} ms): "
        f"{report['planner_capacity_rps']:.0f} req/s",
        "",
        "| rate (req/s) | requests | misses | measured p50 | measured p99 | **predicted p99** | error "
        "| predicted p50 | profile-only p99 | same-schedule p99 | slowdown | other load (cores) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['rate']:g} | {r['requests']} | {r['misses']} | {r['measured_p50_ms']:.1f} | "
            f"{r['measured_p99_ms']:.1f} | **{r['planner_p99_ms']:.1f}** | {r['p99_error']:+.0%} | "
            f"{r['planner_p50_ms']:.1f} | {r['profile_only_p99_ms']:.1f} | {r['same_schedule_p99_ms']:.1f} | "
            f"{r['slowdown']:.2f} | {r['other_cores']:.2f}{shared(r)} |")
    lines += [
        "",
        "Latencies in ms, from each request's scheduled send time (open loop); a refused or failed "
        "request counts as a miss. *Predicted* is what `bertserve plan` computes for one replica: "
        "the engine's batcher simulated on the server's own profile, a fresh seeded Poisson schedule "
        "with tweet lengths, the idle overhead, and the workers slowed by the CPU the front end and the "
        "load generator take (`--overhead-ms`, `--front-cpu-ms`). *Profile-only* leaves that CPU share "
        "out; *same-schedule* replays the exact arrivals and texts that were sent. *Other load* is CPU "
        "used on the machine by processes other than this server and client during the phase; ⚠ marks "
        f"a phase where it exceeded {SHARED_CORES} cores: the machine was shared, not a valid comparison.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
