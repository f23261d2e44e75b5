"""Served capacity of a candidate at the SLO on this machine: predicted, then verified.

Predicted: the planner replays steady Poisson traffic of real text lengths through the serving
engine's own batching policy on the candidate's start-up profile (the one ``bertserve serve``
measures and caches), and bisects the highest rate one replica keeps within the p99 SLO with
nothing refused. Verified: ``bertserve serve`` in a child process, driven by the open-loop load
generator of ``bertserve bench`` at rates around the prediction; capacity is the highest rate
whose p99 met the SLO with no error.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from ..errors import BertserveError
from .candidates import command

SERVED_NAME = "candidate"


@dataclass(frozen=True, slots=True)
class Layout:
    """How candidates are served: the same for every one, so capacities compare."""

    slo_ms: float = 50.0
    workers: int = 2
    threads: int = 1
    corpus: str = "tweets"  # request lengths (and the verifying load's texts)
    overhead_ms: float = 2.0  # latency outside batching, as ``bertserve plan --overhead-ms``
    front_cpu_ms: float = 2.0  # CPU per request beside the batches, as ``plan --front-cpu-ms``: the
    # front process (≈ 1.5 ms in RESULTS, benchmarks/serving_cost.py) and the load generator, which
    # shares the cores when the candidates are verified here


def predicted(path: str | Path, backend: str, precision: str | None, layout: Layout) -> float:
    """Requests/s one replica serves within the SLO, by the planner on the measured profile."""
    from ..config import ServerSettings
    from ..planner import PlanInputs, corpus_lengths, engine_profile, replica_capacity
    from ..planner.simulate import EngineConfig

    settings = ServerSettings(model=str(path), slo_ms=layout.slo_ms, workers=layout.workers,
                              threads=layout.threads, backend=backend, precision=precision)
    model, _ = engine_profile(settings)
    inputs = PlanInputs(
        model=model, engine=EngineConfig.from_settings(settings, workers=layout.workers,
                                                       max_students=max(model.coef)),
        lengths=corpus_lengths(str(path), layout.corpus), cores_per_replica=layout.workers * layout.threads,
        overhead_s=layout.overhead_ms / 1e3, front_cpu_s=layout.front_cpu_ms / 1e3, duration_s=20.0)
    return round(replica_capacity(inputs), 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(path: str | Path, flags: list[str], layout: Layout, log: Path,
          timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """``bertserve serve`` on a free port, waited for until ready; its output goes to ``log``."""
    port = free_port()
    args = ["serve", str(path), "--port", str(port), "--workers", str(layout.workers), "--threads",
            str(layout.threads), "--slo-ms", f"{layout.slo_ms:g}", "--model-name", SERVED_NAME, *flags]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as sink:
        proc = subprocess.Popen(command(args), stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BertserveError(f"bertserve serve {path} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise BertserveError(f"bertserve serve {path} not ready after {timeout_s:.0f} s; see {log}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rates_around(guess: float, steps: int = 8) -> list[float]:
    """Rates from an eighth of the predicted capacity to 1.5 times it, evenly on a log scale: the
    sweep stops at its first saturated step, so it must start below the real capacity."""
    guess = max(guess, 8.0)
    return [round(float(r), 1) for r in np.geomspace(guess / 8, guess * 1.5, steps)]


def verified(path: str | Path, flags: list[str], layout: Layout, guess: float, log: Path, *,
             step_s: float = 8.0, min_requests: int = 200, progress: bool = True) -> dict:
    """Served capacity at the SLO by a real open-loop sweep; the run's figures as a dict."""
    from ..bench.loadgen import LoadOptions
    from ..bench.runner import RunOptions, bench, run_async
    from ..bench.targets import make_target
    from ..bench.workload import TextSampler, sweep
    from ..data import corpus

    proc, url = serve(path, flags, layout, log)
    slo = f"{layout.slo_ms:g}"
    phases: list[dict] = []
    try:
        for rates in (rates_around(guess), rates_around(guess / 8)):  # the prediction too high: lower
            workload = sweep(rates, step_s, TextSampler(corpus(layout.corpus), seed=0), seed=0,
                             min_requests=min_requests)
            options = RunOptions(system=str(path), slo_ms=(layout.slo_ms,), load=LoadOptions(warmup_s=2.0),
                                 progress=progress)
            report = run_async(bench(make_target("kserve", url, model=SERVED_NAME), workload, options))
            phases += [{"rate": p.offered_rate, "p50_ms": p.latency_ms["p50"], "p99_ms": p.latency_ms["p99"],
                        "errors": p.error_count} for p in report.phases]
            if report.capacity[slo] > 0 or rates[0] <= 1.0:
                break
    finally:
        stop(proc)
    return {"capacity": report.capacity[slo], "phases": phases}
