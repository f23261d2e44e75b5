"""Side-by-side benchmark: bertserve and the peer servers, same model, same workloads, one run.

For each system: start it (its own venv, its own process group), wait until a real request is
answered, run a Poisson rate sweep (≥ 200 requests per step, stopping after saturation) with a
quality check, then a burst run; stop it; next. Results go to benchmarks/results/:
bench_sweep.json/.md, bench_burst.json/.md, bench.md (the summary) and PNG plots.

    benchmarks/peers/install.sh naive   # etc., once per peer
    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/peers/run.py --systems all

Peers are benchmarks only; `make test` never runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bertserve.artifact import default_model_path
from bertserve.bench import workload as wl
from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.markdown import compare_markdown, run_markdown
from bertserve.bench.plots import plot_timeline
from bertserve.bench.quality import quality_set, reference_embeddings
from bertserve.bench.report import RunReport
from bertserve.bench.runner import RunOptions, bench, machine, run_async, write_outputs
from bertserve.bench.targets import Target, make_target
from bertserve.data import corpus

PEERS = Path(__file__).resolve().parent
ROOT = PEERS.parent.parent
VENVS = PEERS / ".venvs"
WORK = ROOT / "benchmarks" / ".work" / "peers"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = str(default_model_path())


@dataclass
class System:
    """How to start one server and talk to it."""

    name: str
    port: int
    command: Callable[[System], list[str]]
    target: Callable[[System], Target]
    venv: str | None = None  # under .venvs; None = bertserve's own .venv
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[System], None] | None = None
    after_stop: Callable[[System], None] | None = None
    notes: str = ""

    @property
    def python(self) -> str:
        return str(VENVS / self.venv / "bin" / "python") if self.venv else sys.executable

    @property
    def bin(self) -> Path:
        return Path(self.python).parent

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _torchserve_prepare(s: System) -> None:
    store = WORK / "torchserve" / "store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    subprocess.run([str(s.bin / "torch-model-archiver"), "--model-name", "minilm", "--version", "1.0",
                    "--handler", str(PEERS / "torchserve_handler.py"), "--export-path", str(store),
                    "--archive-format", "no-archive", "--force"], check=True)
    models = ('{"minilm": {"1.0": {"defaultVersion": true, "marName": "minilm", "minWorkers": 2, '
              '"maxWorkers": 2, "batchSize": 16, "maxBatchDelay": 5, "responseTimeout": 120}}}')
    (WORK / "torchserve" / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{s.port}",
        f"management_address=http://127.0.0.1:{s.port + 1}",
        f"metrics_address=http://127.0.0.1:{s.port + 2}",
        f"model_store={store}", "load_models=minilm", f"models={models}",
        "disable_token_authorization=true", "install_py_dep_per_model=false", "default_workers_per_model=2",
        "job_queue_size=1000", "number_of_netty_threads=2", "netty_client_threads=2", ""]))


def _torchserve_stop(s: System) -> None:
    subprocess.run([str(s.bin / "torchserve"), "--stop"], capture_output=True, timeout=60)


def systems() -> dict[str, System]:
    """Every system, tuned fairly: dynamic batching on (≤ 16–32 texts, ≤ 2–5 ms wait), 2 cores."""
    return {s.name: s for s in [
        System("bertserve", 8100,
               lambda s: [str(s.bin / "bertserve"), "serve", "--port", str(s.port)],
               lambda s: make_target("simple", s.base),
               notes="bertserve serve (defaults: 2 workers × 1 thread, --slo-ms 100)"),
        System("bertserve-slo50", 8120,
               lambda s: [str(s.bin / "bertserve"), "serve", "--port", str(s.port), "--slo-ms", "50"],
               lambda s: make_target("simple", s.base),
               notes="bertserve serve --slo-ms 50 (batches close earlier; sheds load sooner)"),
        System("naive", 8101,
               lambda s: [s.python, str(ROOT / "benchmarks" / "naive_server.py"), "--port", str(s.port),
                          "--model", MODEL],
               lambda s: make_target("simple", s.base),
               notes="benchmarks/naive_server.py: FastAPI + transformers, one forward pass per request"),
        System("infinity", 8102,
               lambda s: [str(s.bin / "infinity_emb"), "v2", "--model-id", MODEL, "--engine", "torch",
                          "--device", "cpu", "--dtype", "float32", "--batch-size", "32",
                          "--served-model-name", "minilm", "--port", str(s.port), "--host", "127.0.0.1",
                          "--url-prefix", "/v1", "--log-level", "warning", "--no-bettertransformer"],
               lambda s: make_target("openai", s.base, model="minilm"), venv="infinity",
               notes="infinity-emb, torch engine, fp32, batch ≤ 32 (its own queue)"),
        System("pytriton", 8103,
               lambda s: [s.python, str(PEERS / "pytriton_server.py"), "--port", str(s.port),
                          "--max-batch", "32", "--delay-us", "2000"],
               lambda s: make_target("kserve", s.base, model="minilm", column=True), venv="pytriton",
               notes="PyTriton, Triton dynamic batcher: ≤ 32, 2 ms queue delay"),
        System("torchserve", 8106,
               lambda s: [str(s.bin / "torchserve"), "--start", "--foreground", "--ncs",
                          "--disable-token-auth", "--model-store", str(WORK / "torchserve" / "store"),
                          "--ts-config", str(WORK / "torchserve" / "config.properties")],
               lambda s: make_target("template", f"{s.base}/predictions/minilm",
                                     template='{"texts": {texts}}', response_path="embeddings"),
               venv="torchserve", env={"PEER_THREADS": "1"}, prepare=_torchserve_prepare,
               after_stop=_torchserve_stop,
               notes="TorchServe, 2 workers × 1 thread, batchSize 16, maxBatchDelay 5 ms"),
        System("rayserve", 8110,
               lambda s: [s.python, str(PEERS / "ray_serve_server.py"), "--port", str(s.port),
                          "--max-batch", "32", "--wait-ms", "2"],
               lambda s: make_target("simple", s.base), venv="ray",
               # Ray starts its workers at nice 15: on a shared machine that alone makes it 10× slower
               env={"RAY_worker_niceness": "0"},
               notes="Ray Serve, 2 replicas × 1 thread, @serve.batch ≤ 32 / 2 ms, max_ongoing_requests 512, "
                     "workers at nice 0"),
    ]}


def start(s: System, log: Path) -> subprocess.Popen:
    if s.prepare is not None:
        s.prepare(s)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MINILM_PATH": MODEL,
           "PEERS_DIR": str(PEERS), "PYTHONUNBUFFERED": "1", **s.env}
    if s.venv:
        # PyTriton's stub must load this Python's libpython, not the system one
        probe = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
        libdir = subprocess.run([s.python, "-c", probe], capture_output=True, text=True,
                                check=True).stdout.strip()
        env["LD_LIBRARY_PATH"] = f"{libdir}:{env.get('LD_LIBRARY_PATH', '')}"
        env["PATH"] = f"{s.bin}:{env['PATH']}"
        env.pop("VIRTUAL_ENV", None)
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(s.command(s), env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=WORK)


def wait_answering(s: System, proc: subprocess.Popen, timeout_s: float = 300) -> float:
    """Poll with a real request until it is answered (readiness endpoints differ); returns seconds."""
    target = s.target(s)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{s.name} exited with {proc.returncode}; see its log")
        try:
            r = httpx.post(target.url, content=target.body(["hello world"]), timeout=10,
                           headers={"Content-Type": "application/json"})
            if r.status_code == 200:
                target.embeddings(r.content)
                return time.monotonic() - t0
        except (httpx.TransportError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    raise RuntimeError(f"{s.name} did not answer within {timeout_s:g} s")


def stop(s: System, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    if s.after_stop is not None:
        s.after_stop(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="all", help="comma-separated names or 'all'")
    ap.add_argument("--rates", default="5,10,20,35,50,75,100,150,200,300,400,600,800")
    ap.add_argument("--step-s", type=float, default=8.0)
    ap.add_argument("--min-requests", type=int, default=200)
    ap.add_argument("--burst", default="20,6,3,15,30",
                    help="base rate, factor, burst s, period s, duration s")
    ap.add_argument("--quality", type=int, default=200)
    ap.add_argument("--corpus", default="tweets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--stem", default="bench")
    ap.add_argument("--check", action="store_true", help="only start each system, embed one text, stop")
    ap.add_argument("--note", action="append", default=[], help="a line for the Notes section (repeatable)")
    ap.add_argument("--rerender", action="store_true",
                    help="rebuild bench.md and the plots from the JSON of an earlier run (same arguments)")
    args = ap.parse_args()
    if args.check:
        check(args.systems)
        return
    if args.rerender:
        rerender(args)
        return

    table = systems()
    names = list(table) if args.systems == "all" else args.systems.split(",")
    texts = corpus(args.corpus)
    rates = [float(r) for r in args.rates.split(",")]
    base, factor, burst_s, period_s, duration_s = (float(x) for x in args.burst.split(","))
    qtexts = quality_set(texts, args.quality)
    reference = reference_embeddings(qtexts) if args.quality else None
    sweeps: list[RunReport] = []
    bursts: list[RunReport] = []
    started = dt.datetime.now(dt.UTC)
    for name in names:
        s = table[name]
        if s.venv and not (VENVS / s.venv / ".installed").exists():
            print(f"skip {name}: not installed (benchmarks/peers/install.sh {s.venv})", flush=True)
            continue
        print(f"== {name}: starting", flush=True)
        proc = start(s, WORK / f"{name}.log")
        try:
            ready = wait_answering(s, proc)
            print(f"   answering after {ready:.0f} s", flush=True)
            options = RunOptions(system=name, slo_ms=(50.0, 100.0, 200.0), timeout_s=args.timeout_s,
                                 load=LoadOptions(warmup_s=3.0, warmup_rate=20.0))
            sweep = wl.sweep(rates, args.step_s, wl.TextSampler(texts, seed=args.seed), args.seed,
                             args.min_requests)
            report = run_async(bench(s.target(s), sweep, options, qtexts, reference))
            report.meta["notes"] = s.notes
            sweeps.append(report)
            print(run_markdown(report), flush=True)
            burst = wl.bursts(base, factor, burst_s, period_s, duration_s,
                              wl.TextSampler(texts, seed=args.seed + 1), args.seed + 1)
            report = run_async(bench(s.target(s), burst, options))
            bursts.append(report)
            print(run_markdown(report), flush=True)
        except Exception as exc:  # one broken peer must not end the comparison
            print(f"!! {name} failed: {exc!r}", flush=True)
        finally:
            stop(s, proc)
        # write after every system, so an interrupted run keeps what it measured
        if sweeps:
            write_outputs(sweeps, args.out, stem=f"{args.stem}_sweep", cdf_rate=50.0)
        if bursts:
            write_outputs(bursts, args.out, stem=f"{args.stem}_burst")
            best_pair(bursts, sweeps, args.out / f"{args.stem}_burst_timeline_best.png")
        summary(sweeps, bursts, args, started, args.out / f"{args.stem}.md")


def check(which: str) -> None:
    """Start each system, wait until it answers a real request, stop it: an install check."""
    table = systems()
    for name in list(table) if which == "all" else which.split(","):
        s = table[name]
        proc = start(s, WORK / f"{name}.log")
        try:
            print(f"{name}: answering after {wait_answering(s, proc):.0f} s", flush=True)
        except Exception as exc:
            print(f"{name}: FAILED {exc!r} (log: {WORK / f'{name}.log'})", flush=True)
        finally:
            stop(s, proc)


def rerender(args: argparse.Namespace) -> None:
    """Recompute capacity and saturation from stored phases (rules may have been refined) and
    rewrite every output. Reports written before phases kept their duration get it back from
    the workload parameters."""
    from bertserve.bench.report import capacity, saturation_rate
    from bertserve.bench.runner import read_reports

    def fix(report: RunReport) -> RunReport:
        w = report.workload
        for p in report.phases:
            if not math.isfinite(p.duration_s):
                if w.get("kind") == "sweep":
                    p.duration_s = max(float(w["step_s"]), float(w["min_requests"]) / p.offered_rate)
                elif "duration_s" in w:
                    p.duration_s = float(w["duration_s"])
        report.capacity = {k: capacity(report.phases, float(k)) for k in report.capacity}
        report.saturation_rate = saturation_rate(report.phases)
        return report

    sweeps = [fix(r) for r in read_reports([args.out / f"{args.stem}_sweep.json"])]
    burst_path = args.out / f"{args.stem}_burst.json"
    bursts = [fix(r) for r in read_reports([burst_path])] if burst_path.exists() else []
    write_outputs(sweeps, args.out, stem=f"{args.stem}_sweep", cdf_rate=50.0)
    if bursts:
        write_outputs(bursts, args.out, stem=f"{args.stem}_burst")
        best_pair(bursts, sweeps, args.out / f"{args.stem}_burst_timeline_best.png")
    started = dt.datetime.fromisoformat(sweeps[0].meta["started_utc"])
    summary(sweeps, bursts, args, started, args.out / f"{args.stem}.md")


def best_peer(sweeps: list[RunReport]) -> str | None:
    peers = [r for r in sweeps if r.system != "bertserve"]
    if not peers:
        return None
    return max(peers, key=lambda r: (r.capacity.get("100", 0), r.capacity.get("50", 0), r.peak_rate)).system


def best_pair(bursts: list[RunReport], sweeps: list[RunReport], path: Path) -> None:
    peer = best_peer(sweeps)
    shown = [r for r in bursts if r.system in ("bertserve", peer)]
    if shown:
        plot_timeline(shown, path)


def summary(sweeps: list[RunReport], bursts: list[RunReport], args: argparse.Namespace, started: dt.datetime,
            path: Path) -> None:
    m = machine()
    lines = [
        "# bertserve vs peers — one run", "",
        f"Run started {started:%Y-%m-%d %H:%M} UTC on {m['cpu']} ({m['cores']} cores, shared; no GPU), "
        f"Python {m['python']}. Model: all-MiniLM-L6-v2 (bundled), CPU, fp32 in every peer.",
        "Open-loop Poisson arrivals, one text per request drawn from the health-tweets corpus "
        f"(seed {args.seed}); latency counts from the scheduled send time; the client shares the two cores.",
        "",
        "Command:", "", "```",
        f"flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/peers/run.py --systems {args.systems} "
        f"--rates {args.rates} --step-s {args.step_s:g} --min-requests {args.min_requests} "
        f"--burst {args.burst} --quality {args.quality} --timeout-s {args.timeout_s:g}", "```", "",
        "## Capacity and latency (rate sweep)", "",
        "Max rate = highest offered Poisson rate with p99 within the SLO and no errors "
        f"(each step ≥ {args.min_requests} requests and ≥ {args.step_s:g} s). Saturates at = lowest rate "
        "from which every step has achieved < 95 % of the rate scheduled, > 1 % errors or median > 1 s "
        "(the sweep stops after two such steps). "
        f"Cosine = mean cosine to sentence-transformers' fp32 embeddings of {args.quality} texts.", "",
        compare_markdown(sweeps, low_rate=10, mid_rate=50), "",
        "How each system was set up:", "",
        *[f"- **{r.system}**: {r.meta.get('notes') or 'bertserve serve (defaults)'}; client CPU "
          f"{r.meta.get('client_cpu_fraction', 0):.0%} of a core" for r in sweeps], "",
        "Plots: `bench_sweep_latency_vs_rate.png`, `bench_sweep_cdf.png` (at 50 req/s), "
        "`bench_burst_timeline.png` (all), `bench_burst_timeline_best.png` (bertserve and the best peer).",
        "",
        *(["## Notes", "", *[f"- {n}" for n in args.note], ""] if args.note else []),
        "## Burst run", "",
        f"Poisson base {args.burst.split(',')[0]}/s, ×{args.burst.split(',')[1]} for "
        f"{args.burst.split(',')[2]} s every {args.burst.split(',')[3]} s, {args.burst.split(',')[4]} s.", "",
        *[run_markdown(r) for r in bursts], "",
        "## Sweep details", "", *[run_markdown(r) for r in sweeps],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
