"""Side-by-side benchmark: bertserve and the peer servers, same model, same workloads, one run.

For each system: start it (its own venv, its own process group), wait until a real request is
answered, run a Poisson rate sweep (≥ 200 requests per step, stopping after saturation) with a
quality check, then a burst run; stop it; next. Results go to benchmarks/results/:
bench_sweep.json/.md, bench_burst.json/.md, bench.md (the summary) and PNG plots; `--note` lines go
to bench_notes.md, apart from what was measured.

    benchmarks/peers/install.sh naive   # etc., once per peer
    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/peers/run.py --systems all

Peers are benchmarks only; `make test` never runs this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for provenance.py
from provenance import command, describe_machine, machine, now, relative  # noqa: E402

from bertserve.artifact import default_model_path  # noqa: E402
from bertserve.bench import workload as wl  # noqa: E402
from bertserve.bench.loadgen import LoadOptions  # noqa: E402
from bertserve.bench.markdown import compare_markdown, run_markdown  # noqa: E402
from bertserve.bench.plots import plot_timeline  # noqa: E402
from bertserve.bench.quality import quality_set, reference_embeddings  # noqa: E402
from bertserve.bench.report import RunReport  # noqa: E402
from bertserve.bench.runner import RunOptions, bench, run_async, write_outputs  # noqa: E402
from bertserve.bench.targets import Target, make_target  # noqa: E402
from bertserve.data import corpus  # noqa: E402

PEERS = Path(__file__).resolve().parent
ROOT = PEERS.parent.parent
VENVS = PEERS / ".venvs"
WORK = ROOT / "benchmarks" / ".work" / "peers"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = str(default_model_path())
NOTES_HEADING = "# Notes typed by the operator (`--note`), not measured"


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
    params: dict[str, float] = field(default_factory=dict)  # what command/prepare launch it with
    describe: Callable[[System], str] | None = None  # its setup, from params (and its command)

    def notes(self) -> str:
        """How it was set up, built from what it is launched with: the description from the
        parameters, then the command line (paths inside the repository relative to it) and the
        environment variables this runner sets for it."""
        what = self.describe(self) if self.describe is not None else ""
        env = [f"{k}={v}" for k, v in self.env.items()]
        line = shlex.join([*(["env", *env] if env else []), *(relative(w) for w in self.command(self))])
        return f"{what}; launched as `{line}`" if what else f"launched as `{line}`"

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
    p = {k: int(v) for k, v in s.params.items()}
    models = json.dumps({"minilm": {"1.0": {
        "defaultVersion": True, "marName": "minilm", "minWorkers": p["workers"], "maxWorkers": p["workers"],
        "batchSize": p["batch_size"], "maxBatchDelay": p["max_batch_delay_ms"], "responseTimeout": 120}}})
    (WORK / "torchserve" / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{s.port}",
        f"management_address=http://127.0.0.1:{s.port + 1}",
        f"metrics_address=http://127.0.0.1:{s.port + 2}",
        f"model_store={store}", "load_models=minilm", f"models={models}",
        "disable_token_authorization=true", "install_py_dep_per_model=false",
        f"default_workers_per_model={p['workers']}",
        "job_queue_size=1000", "number_of_netty_threads=2", "netty_client_threads=2", ""]))


def _torchserve_stop(s: System) -> None:
    subprocess.run([str(s.bin / "torchserve"), "--stop"], capture_output=True, timeout=60)


def _bertserve(s: System) -> str:
    """bertserve's layout as `bertserve serve` resolves it here: its settings (flags given, the
    rest from BERTSERVE_* variables and defaults, as the server reads them) and this machine's cores."""
    from bertserve.config import ServerSettings

    settings = ServerSettings(slo_ms=s.params["slo_ms"])
    workers, threads = settings.worker_layout()
    return (f"bertserve serve: {workers} workers × {threads} thread{'s' if threads > 1 else ''}, "
            f"--slo-ms {settings.slo_ms:g}, max batch {settings.max_batch_size}, "
            f"widening {'on' if settings.widen else 'off'}")


def _p(s: System, key: str) -> str:
    """A parameter as a command-line word."""
    return f"{s.params[key]:g}"


def systems() -> dict[str, System]:
    """Every system, tuned fairly: dynamic batching on (≤ 16–32 texts, ≤ 2–5 ms wait), 2 cores.

    Each one's parameters live in ``params``; its command (and TorchServe's config) and the
    setup notes written with the results are both built from them."""
    torchserve_threads = 1
    return {s.name: s for s in [
        System("bertserve", 8100,
               lambda s: [str(s.bin / "bertserve"), "serve", "--port", str(s.port),
                          "--slo-ms", _p(s, "slo_ms")],
               lambda s: make_target("simple", s.base), params={"slo_ms": 100.0}, describe=_bertserve),
        System("bertserve-slo50", 8120,
               lambda s: [str(s.bin / "bertserve"), "serve", "--port", str(s.port),
                          "--slo-ms", _p(s, "slo_ms")],
               lambda s: make_target("simple", s.base), params={"slo_ms": 50.0},
               describe=lambda s: _bertserve(s) + " (batches close earlier; sheds load sooner)"),
        System("naive", 8101,
               lambda s: [s.python, str(ROOT / "benchmarks" / "naive_server.py"), "--port", str(s.port),
                          "--model", MODEL],
               lambda s: make_target("simple", s.base),
               describe=lambda s: "benchmarks/naive_server.py: FastAPI + transformers, one forward pass per "
                                  "request, torch's default threads"),
        System("infinity", 8102,
               lambda s: [str(s.bin / "infinity_emb"), "v2", "--model-id", MODEL, "--engine", "torch",
                          "--device", "cpu", "--dtype", "float32", "--batch-size", _p(s, "batch_size"),
                          "--served-model-name", "minilm", "--port", str(s.port), "--host", "127.0.0.1",
                          "--url-prefix", "/v1", "--log-level", "warning", "--no-bettertransformer"],
               lambda s: make_target("openai", s.base, model="minilm"), venv="infinity",
               params={"batch_size": 32},
               describe=lambda s: f"infinity-emb, torch engine, fp32, batch ≤ {_p(s, 'batch_size')} "
                                  "(its own queue)"),
        System("pytriton", 8103,
               lambda s: [s.python, str(PEERS / "pytriton_server.py"), "--port", str(s.port),
                          "--max-batch", _p(s, "max_batch"), "--delay-us", _p(s, "delay_us")],
               lambda s: make_target("kserve", s.base, model="minilm", column=True), venv="pytriton",
               params={"max_batch": 32, "delay_us": 2000},
               describe=lambda s: f"PyTriton, Triton dynamic batcher: ≤ {_p(s, 'max_batch')}, "
                                  f"{s.params['delay_us'] / 1e3:g} ms queue delay, torch's default threads"),
        System("torchserve", 8106,
               lambda s: [str(s.bin / "torchserve"), "--start", "--foreground", "--ncs",
                          "--disable-token-auth", "--model-store", str(WORK / "torchserve" / "store"),
                          "--ts-config", str(WORK / "torchserve" / "config.properties")],
               lambda s: make_target("template", f"{s.base}/predictions/minilm",
                                     template='{"texts": {texts}}', response_path="embeddings"),
               venv="torchserve", env={"PEER_THREADS": str(torchserve_threads)}, prepare=_torchserve_prepare,
               after_stop=_torchserve_stop,
               params={"workers": 2, "batch_size": 16, "max_batch_delay_ms": 5},
               describe=lambda s: f"TorchServe, {_p(s, 'workers')} workers × {s.env['PEER_THREADS']} thread "
                                  f"(PEER_THREADS), batchSize {_p(s, 'batch_size')}, maxBatchDelay "
                                  f"{_p(s, 'max_batch_delay_ms')} ms (config.properties written from these)"),
        System("rayserve", 8110,
               lambda s: [s.python, str(PEERS / "ray_serve_server.py"), "--port", str(s.port),
                          "--max-batch", _p(s, "max_batch"), "--wait-ms", _p(s, "wait_ms"),
                          "--replicas", _p(s, "replicas"), "--threads", _p(s, "threads")],
               lambda s: make_target("simple", s.base), venv="ray",
               # Ray starts its workers at nice 15: on a shared machine that alone makes it 10× slower
               env={"RAY_worker_niceness": "0"},
               params={"max_batch": 32, "wait_ms": 2, "replicas": 2, "threads": 1},
               describe=lambda s: f"Ray Serve, {_p(s, 'replicas')} replicas × {_p(s, 'threads')} thread, "
                                  f"@serve.batch ≤ {_p(s, 'max_batch')} / {_p(s, 'wait_ms')} ms, workers at "
                                  f"nice {s.env['RAY_worker_niceness']}; max_ongoing_requests 512 and "
                                  "ray.init(num_cpus=2) as ray_serve_server.py sets them"),
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
    ap.add_argument("--note", action="append", default=[],
                    help="a line for <stem>_notes.md, kept apart from the measured results (repeatable)")
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
    run_info = {"command": command(), "machine": machine()}  # kept in every report's meta
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
            report.meta.update(run_info, notes=s.notes())
            sweeps.append(report)
            print(run_markdown(report), flush=True)
            burst = wl.bursts(base, factor, burst_s, period_s, duration_s,
                              wl.TextSampler(texts, seed=args.seed + 1), args.seed + 1)
            report = run_async(bench(s.target(s), burst, options))
            report.meta.update(run_info, notes=s.notes())
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


def write_notes(notes: list[str], path: Path) -> None:
    """The operator's ``--note`` lines, in a file of their own: typed text, not a measurement."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([NOTES_HEADING, "", f"Written {now()} by `{command()}`.", "",
                               *[f"- {n}" for n in notes], ""]))


def setup_line(r: RunReport) -> str:
    """A system's setup notes as its run recorded them."""
    notes = r.meta.get("notes")
    if not notes:
        return "not recorded in this run"
    if "command" not in r.meta:  # a run from before the notes were built from the launch parameters
        return f"{notes} (the runner's fixed description then, not built from the launch)"
    return str(notes)


def summary(sweeps: list[RunReport], bursts: list[RunReport], args: argparse.Namespace, started: dt.datetime,
            path: Path) -> None:
    meta = sweeps[0].meta if sweeps else {}
    m = meta.get("machine") or machine()
    run_command = meta.get("command")
    notes_path = path.with_name(f"{args.stem}_notes.md")
    if args.note:
        write_notes(args.note, notes_path)
    b = args.burst.split(",")
    rendered = ([f"Re-rendered from the JSON {now()} by `{command()}`.", ""]
                if args.rerender else [])
    lines = [
        "# bertserve vs peers — one run", "",
        f"Run started {started:%Y-%m-%d %H:%M} UTC on {describe_machine(m)} (shared). "
        "Model: all-MiniLM-L6-v2 (bundled), CPU, fp32 in every peer.",
        "Open-loop Poisson arrivals, one text per request drawn from the health-tweets corpus "
        f"(seed {args.seed}); latency counts from the scheduled send time; the client shares the cores.",
        "",
        "Command:", "", "```", run_command or "(not recorded in this run's JSON: it predates issue 22)",
        "```",
        "", *rendered,
        "## Capacity and latency (rate sweep)", "",
        "Max rate = highest offered Poisson rate with p99 within the SLO and no errors "
        f"(each step ≥ {args.min_requests} requests and ≥ {args.step_s:g} s). Saturates at = lowest rate "
        "from which every step has achieved < 95 % of the rate scheduled, > 1 % errors or median > 1 s "
        "(the sweep stops after two such steps). "
        f"Cosine = mean cosine to sentence-transformers' fp32 embeddings of {args.quality} texts.", "",
        compare_markdown(sweeps, low_rate=10, mid_rate=50), "",
        "How each system was set up:", "",
        *[f"- **{r.system}**: {setup_line(r)}; client CPU "
          f"{r.meta.get('client_cpu_fraction', 0):.0%} of a core" for r in sweeps], "",
        f"Plots: `{args.stem}_sweep_latency_vs_rate.png`, `{args.stem}_sweep_cdf.png` (at 50 req/s), "
        f"`{args.stem}_burst_timeline.png` (all), `{args.stem}_burst_timeline_best.png` (bertserve and the "
        "best peer).",
        "",
        # an earlier run's notes file is linked only when re-rendering that run
        *([f"The operator's notes (typed, not measured) are in `{notes_path.name}`.", ""]
          if args.note or (args.rerender and notes_path.exists()) else []),
        "## Burst run", "",
        f"Poisson base {b[0]}/s, ×{b[1]} for {b[2]} s every {b[3]} s, {b[4]} s.", "",
        *[run_markdown(r) for r in bursts], "",
        "## Sweep details", "", *[run_markdown(r) for r in sweeps],
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
