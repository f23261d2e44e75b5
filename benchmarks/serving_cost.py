"""What a request costs the server in CPU, per process, for two versions of the code in one run.

For each code version (a ``src`` folder put first on ``PYTHONPATH``) and each API, the script
starts ``bertserve serve``, measures its idle CPU (all its processes, ``--idle-s`` with no
request), then sends open-loop Poisson load of one health tweet per request (real chat-length
texts) and reads ``/proc/<pid>/stat`` of the front process and of every worker before and after.
It prints CPU milliseconds per request of each process, the workers' model time per request
(``bertserve_compute_time_seconds`` from ``/metrics``) and p50/p99. The client runs in this
process, on the same cores.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/serving_cost.py \\
        --model /tmp/models/int8 --code before=/tmp/base/src --code after=src

``/tmp/base`` is a worktree of the commit before (``git worktree add /tmp/base <commit>``).
``--profile DIR`` also records the front process with py-spy (flat top of self time).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from provenance import free_port, header  # benchmarks/provenance.py, beside this script
from serving import stop  # benchmarks/serving.py, beside this script

from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.runner import RunOptions, bench, run_async
from bertserve.bench.targets import make_target
from bertserve.bench.workload import TextSampler, poisson
from bertserve.data import health_tweets
from bertserve.serving.core.metrics import cpu_seconds

ROOT = Path(__file__).resolve().parent


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def processes(server: int) -> dict[str, int]:
    """The server's processes by role: front, worker-0.., other (resource tracker)."""
    roles = {"front": server}
    for pid in children(server):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if "resource_tracker" in cmd:
            continue
        roles[f"worker-{len(roles) - 1}" if "spawn_main" in cmd or "worker" in comm else f"pid-{pid}"] = pid
    return roles


def snapshot(roles: dict[str, int]) -> dict[str, float]:
    out = {}
    for role, pid in roles.items():
        seconds = cpu_seconds(pid)
        out[role] = float("nan") if seconds is None else seconds
    return out


def metric(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Result:
    code: str
    api: str
    idle_core_pct: float
    cpu_ms: dict[str, float]  # role → CPU ms per answered request
    model_ms: float  # workers' model time per answered request
    answered: int
    errors: int
    p50_ms: float
    p99_ms: float


def start(src: str, model: str, port: int, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "bertserve.cli", "serve", model, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise TimeoutError("server not ready")


def profile_front(pid: int, seconds: float, out: Path) -> None:
    """py-spy's raw samples of the front process, folded into the top 25 frames by self time."""
    raw = out.with_suffix(".txt")
    spy = str(Path(sys.executable).parent / "py-spy")
    subprocess.run([spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw",
                    "-o", str(raw), "--nonblocking"], check=False, capture_output=True)
    if not raw.exists():
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r"\(/[^)]*/(site-packages|src)/", "(", f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + int(count)
        total += int(count)

    def top(counts: dict[str, int], n: int) -> str:
        best = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
        return "\n".join(f"{c / max(total, 1) * 100:5.1f}%  {f}" for f, c in best)

    out.write_text(f"# self time ({total} samples)\n{top(own, 30)}\n\n# inclusive\n{top(inclusive, 60)}\n")


def measure(code: str, src: str, api: str, args: argparse.Namespace) -> Result:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(src, args.model, port, args.serve_args.split())
    try:
        time.sleep(1.0)  # a helper the server runs once at start-up may still be exiting
        roles = processes(proc.pid)
        before = snapshot(roles)
        time.sleep(args.idle_s)
        after = snapshot(roles)
        roles = {r: pid for r, pid in roles.items() if not math.isnan(after[r])}  # gone meanwhile
        idle = sum(after[r] - before[r] for r in roles) / args.idle_s * 100
        sampler = TextSampler(health_tweets(), seed=0)
        workload = poisson(args.rate, args.duration, sampler, seed=0)
        options = RunOptions(system=f"{code} {api}", slo_ms=(args.slo_ms,), progress=False,
                             load=LoadOptions(warmup_s=2.0))
        model_name = args.model_name or httpx.get(url + "/health").json()["model"]
        page0 = httpx.get(url + "/metrics").text
        cpu0 = snapshot(roles)
        report = run_async(bench(make_target(api, url, model=model_name), workload, options))
        cpu1 = snapshot(roles)
        page1 = httpx.get(url + "/metrics").text
        if args.profile:
            # a second stretch under the same load, sampled by py-spy (its own cost stays out of the table)
            import threading

            out = Path(args.profile) / f"{code}-{api}.top"
            out.parent.mkdir(parents=True, exist_ok=True)
            t = threading.Thread(target=profile_front, args=(proc.pid, args.duration * 0.8, out))
            t.start()
            run_async(bench(make_target(api, url, model=model_name), workload, options))
            t.join()
    finally:
        stop(proc)
    answered = int(metric(page1, "bertserve_requests_total") - metric(page0, "bertserve_requests_total"))
    model_s = metric(page1, "bertserve_compute_time_seconds_sum") - \
        metric(page0, "bertserve_compute_time_seconds_sum")
    phase = report.phases[0]
    n = max(answered, 1)
    return Result(code, api, idle, {r: (cpu1[r] - cpu0[r]) / n * 1e3 for r in roles}, model_s / n * 1e3,
                  answered, phase.error_count, phase.latency_ms["p50"], phase.latency_ms["p99"])


def table(results: list[Result]) -> str:
    roles = sorted({r for res in results for r in res.cpu_ms}, key=lambda r: (r != "front", r))
    head = ["code", "API", *[f"{r} ms/req" for r in roles], "model ms/req", "workers ÷ model",
            "idle % core", "p50 ms", "p99 ms", "answered", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        workers = sum(v for k, v in res.cpu_ms.items() if k.startswith("worker"))
        ratio = workers / res.model_ms if res.model_ms > 0 else float("nan")
        cells = [res.code, res.api, *[f"{res.cpu_ms.get(r, float('nan')):.2f}" for r in roles],
                 f"{res.model_ms:.2f}", f"{ratio:.2f}", f"{res.idle_core_pct:.1f}", f"{res.p50_ms:.1f}",
                 f"{res.p99_ms:.1f}", str(res.answered), str(res.errors)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="artifact folder, e.g. an INT8 ONNX export")
    parser.add_argument("--model-name", default=None, help="name for openai/kserve requests")
    parser.add_argument("--code", action="append", required=True,
                        help="NAME=SRC: a version of the code (its src folder); repeat")
    parser.add_argument("--apis", default="simple,openai,kserve")
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--serve-args", default="", help="extra `bertserve serve` flags, one string")
    parser.add_argument("--profile", default=None, help="folder for py-spy tops of the front process")
    parser.add_argument("--out", default=str(ROOT / "results" / "serving_cost.md"))
    args = parser.parse_args()
    results = []
    for spec in args.code:
        code, src = spec.split("=", 1)
        for api in args.apis.split(","):
            res = measure(code, src, api, args)
            print(f"{code:8} {api:7} " + "  ".join(f"{k} {v:.2f}" for k, v in res.cpu_ms.items())
                  + f"  model {res.model_ms:.2f}  idle {res.idle_core_pct:.1f}%  p50 {res.p50_ms:.1f}"
                  f"  p99 {res.p99_ms:.1f}  errors {res.errors}", flush=True)
            results.append(res)
    text = "\n".join([
        "# CPU per request, by process",
        "",
        *header(),
        f"- Load: open-loop Poisson {args.rate:g} req/s for {args.duration:g} s, one health tweet per "
        f"request; idle: {args.idle_s:g} s with no request (all the server's processes).",
        "",
        table(results),
        "",
    ])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
