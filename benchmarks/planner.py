"""Does the capacity planner predict the real server's p99? Measure one machine and compare.

1. The profile: the server's own (`engine_profile` measures the engine's grid with the engine's
   worker code and saves it where `bertserve serve` looks, so server and planner share it).
2. A real `bertserve serve` (same settings) on loopback.
3. The per-request overhead outside batching (HTTP, tokenising, pipe hand-offs), from an idle
   probe at a low rate: median of (latency - the profile's batch-1 time for that text).
4. For each rate: open-loop Poisson load of real tweets with `bertserve.bench`'s load generator;
   measured p50/p99 (a refused or failed request counts as a miss), against the planner's
   prediction for one replica: its simulation of the engine's batcher on a fresh seeded schedule
   with corpus lengths (what `bertserve plan` computes) and on the exact schedule that was sent.

Run it alone on the machine (`flock /tmp/bertserve-heavy.lock python benchmarks/planner.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
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
from bertserve.planner.plan import Scenario, arrivals_for  # noqa: E402
from bertserve.serving.engine import resolve_artifact  # noqa: E402

ROOT = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,250", help="comma-separated request rates to validate")
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--idle-rate", type=float, default=4.0)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args()

    settings = ServerSettings(workers=args.workers, threads=args.threads, slo_ms=args.slo_ms,
                              backend=args.backend)
    t0 = time.monotonic()
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
    try:
        arr, lat, sent = asyncio.run(measure(url, args.idle_rate, args.idle_s, texts, 99, warm=True))
        lengths = np.asarray(tokenizer.count(sent))
        compute = np.array([model.predict(1, int(n)) for n in lengths])
        ok = ~np.isnan(lat)
        overhead = float(np.median(lat[ok] - compute[ok]))
        print(f"idle probe: {ok.sum()} requests, p50 {p(lat, 50):.2f} ms, overhead {overhead * 1e3:.2f} ms",
              flush=True)
        pool = corpus_lengths(None, "tweets")
        for k, rate in enumerate(float(r) for r in args.rates.split(",")):
            arr, lat, sent = asyncio.run(measure(url, rate, args.duration_s, texts, k, warm=False))
            same = simulate(Arrivals(arr, np.asarray(tokenizer.count(sent))), model, engine,
                            overhead_s=overhead)
            fresh_arrivals = arrivals_for(Scenario("steady", rate), pool, args.duration_s, seed=1000 + k)
            plan = simulate(fresh_arrivals, model, engine, overhead_s=overhead)
            row = {
                "rate": rate, "requests": int(len(lat)), "misses": int(np.isnan(lat).sum()),
                "measured_p50_ms": p(lat, 50), "measured_p99_ms": p(lat, 99),
                "planner_p50_ms": plan.p50 * 1e3, "planner_p99_ms": plan.p99 * 1e3,
                "same_schedule_p50_ms": same.p50 * 1e3, "same_schedule_p99_ms": same.p99 * 1e3,
                "planner_mean_batch": plan.mean_batch,
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
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "settings": {"workers": args.workers, "threads": args.threads, "slo_ms": args.slo_ms,
                     "backend": args.backend, "max_batch_size": settings.max_batch_size},
        "profile_fit_error": model.max_rel_error, "overhead_ms": overhead * 1e3, "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'planner.json'}")


if __name__ == "__main__":
    main()
