"""Does the capacity planner predict the real server's p99? Measure one machine and compare.

1. The profile: the server's own (`engine_profile` measures the engine's grid with the engine's
   worker code and saves it where `bertserve serve` looks, so server and planner share it).
2. A real `bertserve serve` (same settings) on loopback.
3. The per-request overhead outside batching (HTTP, tokenising, pipe hand-offs), from an idle
   probe at a low rate: each request's latency - the profile's batch-1 time for its text (the
   samples, and their median).
4. A probe at a moderate rate (`--cpu-rate`), which measures
   - the CPU per request spent on these cores beside the batches' compute: the server's front
     end and this client (from /proc), and the workers' CPU outside their batches (their CPU
     from /proc minus the batches' run time, `bertserve_compute_time_seconds_sum` in /metrics);
   - the spread of real batch times: the server's `bertserve_batch_time_prediction_ratio`
     histogram between two scrapes of /metrics (what `bertserve plan --spread` reads).
5. For each rate: open-loop Poisson load of real tweets with `bertserve.bench`'s load generator;
   measured p50/p99 (a refused or failed request counts as a miss), against the planner's
   prediction for one replica: its simulation of the engine's batcher on a fresh seeded schedule
   with corpus lengths, batch times drawn from the probe's spread around the CPU-share level,
   the idle overhead samples stretched by the same level (what `bertserve plan --spread
   --overhead-samples --front-cpu-ms` computes; the primary figure). Beside it: the same without
   the spread, the previous model (median batch times, overhead and CPU share of the front end
   and client only), and the primary model on the exact schedule that was sent; and what the
   server saw (per-batch measured / profile time from the answers' `timing`, its spread).

The server runs with its defaults (widening off); `--widen` turns widening on in both the server
and the simulation, which replays it with the profile's wide cells.

Run it alone on the machine (`flock /tmp/bertserve-heavy.lock python benchmarks/planner.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from provenance import command, describe_machine, free_port, machine, now  # benchmarks/provenance.py

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bertserve.bench.client import HttpSender  # noqa: E402
from bertserve.bench.loadgen import Clock, LoadOptions, run_phase, warm_up  # noqa: E402
from bertserve.bench.targets import SimpleTarget  # noqa: E402
from bertserve.bench.workload import TextSampler, poisson  # noqa: E402
from bertserve.cache import cache_root  # noqa: E402
from bertserve.config import ServerSettings  # noqa: E402
from bertserve.data import corpus  # noqa: E402
from bertserve.planner import Arrivals, EngineConfig, Spread, corpus_lengths, engine_profile, simulate  # noqa: E402
from bertserve.planner.plan import Scenario, arrivals_for, cpu_slowdown  # noqa: E402
from bertserve.serving.core.engine import resolve_artifact  # noqa: E402
from bertserve.tokenizer import TextTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent


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


def wait_quiet(limit_s: float = 600.0) -> float:
    """Wait (up to ``limit_s``) until the machine is idle for 3 s; the busy cores seen last."""
    deadline = time.monotonic() + limit_s
    while True:
        a, t = machine_busy_s(), time.monotonic()
        time.sleep(3.0)
        busy = (machine_busy_s() - a) / (time.monotonic() - t)
        if busy <= SHARED_CORES or time.monotonic() > deadline:
            return busy
        print(f"machine busy ({busy:.2f} cores besides this run); waiting", flush=True)


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def metric_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    return 0.0


def start_server(settings: ServerSettings, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bertserve.cli", "serve", "--port", str(port),
           "--workers", str(settings.workers), "--threads", str(settings.threads),
           "--slo-ms", str(settings.slo_ms), "--backend", settings.backend]
    env = {**os.environ, "BERTSERVE_WIDEN": str(settings.widen).lower()}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
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
                  warm: bool) -> tuple[np.ndarray, np.ndarray, list[str], list[dict | None]]:
    """(arrival offsets, latencies with NaN for misses, texts sent, each answer's timing) of a phase."""
    target = SimpleTarget(url)
    workload = poisson(rate, duration_s, TextSampler(texts, seed=seed), seed=seed)
    phase = workload.phases[0]
    bodies = [target.body(t) for t in phase.texts]
    options = LoadOptions(warmup_s=3.0 if warm else 0.0)
    answers: dict[int, bytes] = {}
    async with HttpSender(url) as send:
        if warm:
            await warm_up(workload, [bodies], send, options)

        async def keep(body: bytes) -> bytes:
            answers[id(body)] = answer = await send(body)
            return answer

        result = await run_phase(phase, bodies, keep, Clock(), options)
    lat = np.array([o.latency_s if o.error is None else np.nan for o in result.outcomes])
    timing = [json.loads(answers[id(b)]).get("timing") if id(b) in answers else None for b in bodies]
    return phase.arrivals, lat, [t[0] for t in phase.texts], timing


def batch_ratios(model: object, lengths: np.ndarray, timing: list[dict | None]) -> np.ndarray:
    """Measured / profile time of each batch the server ran, from the answers' timing.

    One text per request: the texts of one batch report the same ``compute_ms`` (µs resolution),
    so equal values group a batch; its size and widest text give the profile's prediction.
    """
    groups: dict[float, list[int]] = {}
    for n, t in zip(lengths, timing, strict=True):
        if t is not None:
            groups.setdefault(t["compute_ms"], []).append(int(n))
    return np.array([c / 1e3 / model.predict(len(ns), max(ns)) for c, ns in groups.items()])  # type: ignore[attr-defined]


def predict(arrivals: Arrivals, model: object, engine: EngineConfig, rate: float, cores: float,
            overhead_s: np.ndarray, beside_cpu_s: float, spread: Spread | None, seed: int = 0) -> object:
    """What `bertserve plan` computes for one replica at ``rate`` (see plan.plan_scenario)."""
    slow = cpu_slowdown(cores, rate, beside_cpu_s)
    if not np.isfinite(slow):
        return None
    return simulate(arrivals, model, engine, overhead_s=overhead_s * slow, slowdown=slow,  # type: ignore[arg-type]
                    spread=spread, seed=seed)


def ms(sim: object, q: float) -> float:
    """A simulation's latency percentile in ms (∞ where the model left no CPU for the batches)."""
    return float("inf") if sim is None else sim.percentile(q) * 1e3  # type: ignore[attr-defined]


def planner_capacity(model: object, engine: EngineConfig, pool: np.ndarray, overhead_s: np.ndarray,
                     beside_cpu_s: float, spread: Spread | None, cores: float, duration_s: float) -> float:
    """The highest rate the planner says one replica serves within the SLO (bisection)."""
    def ok(rate: float) -> bool:
        arrivals = arrivals_for(Scenario("steady", rate), pool, duration_s, seed=7)
        sim = predict(arrivals, model, engine, rate, cores, overhead_s, beside_cpu_s, spread)
        return sim is not None and sim.p99 <= engine.slo_s  # type: ignore[attr-defined]
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
    ap.add_argument("--cpu-rate", type=float, default=50.0, help="rate of the CPU and spread probe")
    ap.add_argument("--cpu-s", type=float, default=20.0, help="length of the CPU and spread probe")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--widen", action=argparse.BooleanOptionalAction, default=False,
                    help="let the server (and the simulation) widen lone batches")
    ap.add_argument("--keep-profile", action="store_true", help="reuse a saved profile instead of measuring")
    args = ap.parse_args()

    settings = ServerSettings(workers=args.workers, threads=args.threads, slo_ms=args.slo_ms,
                              backend=args.backend, widen=args.widen)
    t0 = time.monotonic()
    if not args.keep_profile:  # measure the machine as it is now, not as it was last time
        shutil.rmtree(cache_root() / "profiles", ignore_errors=True)
    print(f"other load before profiling: {wait_quiet():.2f} cores", flush=True)
    model, measured_now = engine_profile(settings)
    print(f"profile: {'measured' if measured_now else 'read'} in {time.monotonic() - t0:.0f} s; "
          f"fit error ≤ {model.max_rel_error:.0%}", flush=True)
    folder, manifest, _, _ = resolve_artifact(settings)
    tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    texts = corpus("tweets")
    engine = EngineConfig.from_settings(settings, workers=args.workers, max_students=max(model.coef))
    cores = args.workers * args.threads
    port = free_port()
    url = f"http://127.0.0.1:{port}/embed"
    server = start_server(settings, port)
    rows = []
    meter = CpuMeter(server.pid)
    try:
        wait_quiet()
        arr, lat, sent, _ = asyncio.run(measure(url, args.idle_rate, args.idle_s, texts, 99, warm=True))
        lengths = np.asarray(tokenizer.count(sent))
        compute = np.array([model.predict(1, int(n)) for n in lengths])
        ok = ~np.isnan(lat)
        overhead_samples = np.maximum(lat[ok] - compute[ok], 0.0)
        overhead = float(np.median(overhead_samples))
        print(f"idle probe: {ok.sum()} requests, p50 {p(lat, 50):.2f} ms, overhead p50 {overhead * 1e3:.2f} "
              f"p90 {np.percentile(overhead_samples, 90) * 1e3:.2f} ms", flush=True)
        # The probe at a moderate rate: CPU per request beside the batches on these cores (the
        # server's front end, this client, which in production runs elsewhere, and the workers'
        # CPU outside their batches) and the spread of batch times as the server's /metrics shows it.
        # At a trickle the event loop's own timers would dominate the per-request figures.
        quiet = wait_quiet()
        m0, before = scrape(port), meter.snap()
        _, cal, _, _ = asyncio.run(measure(url, args.cpu_rate, args.cpu_s, texts, 98, warm=False))
        after, m1 = meter.snap(), scrape(port)
        probe = meter.delta(before, after, len(cal))
        batch_s = (metric_value(m1, "bertserve_compute_time_seconds_sum")
                   - metric_value(m0, "bertserve_compute_time_seconds_sum"))
        probe["workers_outside_ms_per_req"] = max(
            0.0, (probe["workers_cores"] * (after[4] - before[4]) - batch_s) / max(1, len(cal)) * 1e3)
        probe["other_cores_before"] = quiet
        spread = Spread.from_metrics(m1, m0, source=f"/metrics during the {args.cpu_rate:g}/s probe")
        print(f"probe at {args.cpu_rate:g}/s: {json.dumps({k: round(v, 3) for k, v in probe.items()})}",
              flush=True)
        print(f"spread: {spread.summary()}", flush=True)
        front_cpu_s = (probe["front_cpu_ms_per_req"] + probe["client_cpu_ms_per_req"]) / 1e3
        beside_cpu_s = front_cpu_s + probe["workers_outside_ms_per_req"] / 1e3
        pool = corpus_lengths(None, "tweets")
        capacity = planner_capacity(model, engine, pool, overhead_samples, beside_cpu_s, spread, cores,
                                    min(args.duration_s, 20))
        print(f"planner capacity at p99 ≤ {args.slo_ms:g} ms: {capacity:.0f} req/s", flush=True)
        rates = ([round(capacity * f) for f in (0.4, 0.75)] if args.rates == "auto"
                 else [float(r) for r in args.rates.split(",")])
        for k, rate in enumerate(rates):
            quiet = wait_quiet()
            m0, before = scrape(port), meter.snap()
            arr, lat, sent, timing = asyncio.run(measure(url, rate, args.duration_s, texts, k, warm=False))
            after, m1 = meter.snap(), scrape(port)
            cpu = meter.delta(before, after, len(lat))
            sent_lengths = np.asarray(tokenizer.count(sent))
            ratios = batch_ratios(model, sent_lengths, timing)
            seen = Spread.from_metrics(m1, m0, source="this phase")
            engine_ms = np.array([t["queue_ms"] + t["compute_ms"] for t in timing if t is not None])
            answered = np.array([lat[i] * 1e3 for i, t in enumerate(timing) if t is not None])
            fresh = arrivals_for(Scenario("steady", rate), pool, args.duration_s, seed=1000 + k)
            slow = cpu_slowdown(cores, rate, beside_cpu_s)
            plan = predict(fresh, model, engine, rate, cores, overhead_samples, beside_cpu_s, spread)
            flat = predict(fresh, model, engine, rate, cores, overhead_samples, beside_cpu_s, None)
            same = predict(Arrivals(arr, sent_lengths), model, engine, rate, cores, overhead_samples,
                           beside_cpu_s, spread)
            old_slow = cpu_slowdown(cores, rate, front_cpu_s)
            old = simulate(fresh, model, engine, overhead_s=overhead, slowdown=old_slow)
            row = {
                "rate": rate, "requests": int(len(lat)), "misses": int(np.isnan(lat).sum()),
                "measured_p50_ms": p(lat, 50), "measured_p99_ms": p(lat, 99),
                "planner_p50_ms": ms(plan, 50), "planner_p99_ms": ms(plan, 99),
                "planner_refused": 0 if plan is None else plan.rejected,  # type: ignore[attr-defined]
                "no_spread_p99_ms": ms(flat, 99), "previous_model_p99_ms": ms(old, 99),
                "same_schedule_p99_ms": ms(same, 99), "slowdown": slow, "previous_slowdown": old_slow,
                "measured_batch_ratio_mean": float(ratios.mean()) if len(ratios) else None,
                "measured_batch_ratio_p90": float(np.quantile(ratios, 0.9)) if len(ratios) else None,
                "measured_batches": int(len(ratios)),
                "metrics_spread_this_phase": seen.summary(),
                "engine_p99_ms": float(np.percentile(engine_ms, 99)) if len(engine_ms) else None,
                "outside_engine_p50_ms": float(np.median(answered - engine_ms)) if len(engine_ms) else None,
                "outside_engine_p99_ms": float(np.percentile(answered - engine_ms, 99)) if len(engine_ms)
                else None,
                "planner_mean_batch": 0.0 if plan is None else plan.mean_batch,  # type: ignore[attr-defined]
                **cpu, "other_cores_before": quiet,
            }
            row["p99_error"] = row["planner_p99_ms"] / row["measured_p99_ms"] - 1
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}),
                  flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "command": command(),
        "date": now(),
        "machine": machine(),
        "settings": {"workers": args.workers, "threads": args.threads, "slo_ms": args.slo_ms,
                     "backend": args.backend, "max_batch_size": settings.max_batch_size,
                     "widen": settings.widen},
        "profile_fit_error": model.max_rel_error, "overhead_ms": overhead * 1e3,
        "overhead_samples_ms": [round(x * 1e3, 3) for x in overhead_samples.tolist()],
        "probe": probe, "beside_cpu_ms_per_req": beside_cpu_s * 1e3, "spread": spread.to_json(),
        "spread_summary": spread.summary(),
        "planner_capacity_rps": capacity, "cpu_probe_rate": args.cpu_rate,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner.json").write_text(json.dumps(report, indent=2))
    (args.out / "planner.md").write_text(markdown(report))
    print(f"wrote {args.out / 'planner.json'} and planner.md")


def shared(row: dict) -> str:
    return " ⚠" if max(row["other_cores"], row["other_cores_before"]) > SHARED_CORES else ""


def markdown(report: dict) -> str:
    """The figures as a Markdown section (the prose around them lives in RESULTS.md)."""
    s, m, pr = report["settings"], report["machine"], report["probe"]
    lines = [
        "# Capacity planner: predicted vs measured p99 (one machine)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}",
        f"- machine: {describe_machine(m)}",
        f"- server: bundled all-MiniLM-L6-v2, backend {s['backend']}, {s['workers']} workers × "
        f"{s['threads']} thread, SLO {s['slo_ms']:g} ms, max batch {s['max_batch_size']}, "
        f"widening {'on' if s.get('widen') else 'off'}",
        f"- profile fit error (worst cell): {report['profile_fit_error']:.0%}; overhead outside batching "
        f"(idle probe, {len(report['overhead_samples_ms'])} requests): median "
        f"{report['overhead_ms']:.2f} ms, p90 {np.percentile(report['overhead_samples_ms'], 90):.2f} ms",
        f"- probe at {report['cpu_probe_rate']:g} req/s: CPU per request beside the batches "
        f"{report['beside_cpu_ms_per_req']:.2f} ms = front end {pr['front_cpu_ms_per_req']:.2f} + load "
        f"generator {pr['client_cpu_ms_per_req']:.2f} + workers outside their batches "
        f"{pr['workers_outside_ms_per_req']:.2f}; batch-time spread (server's /metrics): "
        f"{report['spread_summary']}",
        f"- capacity the planner predicts for one replica (p99 ≤ {s['slo_ms']:g} ms): "
        f"{report['planner_capacity_rps']:.0f} req/s",
        "",
        "| rate (req/s) | requests | misses | measured p50 | measured p99 | **predicted p99** | error "
        "| predicted p50 | without spread | previous model | same schedule | slowdown (measured) "
        "| other load (cores) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        level = "-" if r["measured_batch_ratio_mean"] is None else f"{r['measured_batch_ratio_mean']:.2f}"
        lines.append(
            f"| {r['rate']:g} | {r['requests']} | {r['misses']} | {r['measured_p50_ms']:.1f} | "
            f"{r['measured_p99_ms']:.1f} | **{r['planner_p99_ms']:.1f}** | {r['p99_error']:+.0%} | "
            f"{r['planner_p50_ms']:.1f} | {r['no_spread_p99_ms']:.1f} | {r['previous_model_p99_ms']:.1f} | "
            f"{r['same_schedule_p99_ms']:.1f} | {r['slowdown']:.2f} ({level}) "
            f"| {max(r['other_cores'], r['other_cores_before']):.2f}{shared(r)} |")
    lines += [
        "",
        "Latencies in ms, from each request's scheduled send time (open loop); a refused or failed "
        "request counts as a miss. *Predicted* is what `bertserve plan --spread --overhead-samples "
        "--front-cpu-ms` computes for one replica: the engine's batcher simulated on the server's own "
        "profile, a fresh seeded Poisson schedule with tweet lengths, each batch's time = profile × "
        "*slowdown* (the CPU-share level: cores / (cores − rate × CPU beside the batches)) × a ratio "
        "drawn from the probe's spread (scaled to mean 1), each request's time outside batching drawn "
        "from the idle probe and stretched by the same slowdown. *Without spread*: every batch takes "
        "its level. *Previous model*: median batch times, the median overhead, and a CPU share of the "
        "front end and client only. *Same schedule*: the predicted model on the exact arrivals and "
        "texts that were sent. *Slowdown (measured)*: the model's level, and in brackets the mean "
        "measured/profile time of the batches the server ran (from the answers' timing). *Other load*: "
        "CPU used by other processes during the phase or just before it; ⚠ marks more than "
        f"{SHARED_CORES} cores: the machine was shared, not a valid comparison.",
        "",
    ]
    for r in report["rows"]:
        lines.append(
            f"- {r['rate']:g} req/s, what the server saw: {r['measured_batches']} batches, measured/profile "
            f"mean {r['measured_batch_ratio_mean']:.2f}, p90 {r['measured_batch_ratio_p90']:.2f}; engine "
            f"(queue + compute) p99 {r['engine_p99_ms']:.1f} ms; outside the engine p50 "
            f"{r['outside_engine_p50_ms']:.1f}, p99 {r['outside_engine_p99_ms']:.1f} ms; the simulation "
            f"refused {r['planner_refused']}; /metrics spread in the phase: {r['metrics_spread_this_phase']}")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
