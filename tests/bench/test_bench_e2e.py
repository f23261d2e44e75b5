"""`bertserve bench` against a real bertserve server on loopback, through the public HTTP API only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from served import bertserve_serving

from bertserve.bench import workload as wl
from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.runner import RunOptions, bench
from bertserve.bench.targets import make_target

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from bertserve.cli import main; main()"]



@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """`bertserve serve` in its own process; yields its base URL once /v2/health/ready says so."""
    with bertserve_serving() as url:
        yield url


def test_cli_sweep_writes_reports_and_plots(server: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.run(
        [*CLI, "bench", "run", server, "--workload", "sweep", "--rates", "5,15", "--step-s", "2",
         "--min-requests", "0", "--warmup-s", "0.5", "--no-stop-on-saturation", "--quality", "4",
         "--name", "bertserve",
         "--health", f"{server}/v2/health/ready", "--no-progress", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "| 15/s |" in proc.stdout
    [report] = json.loads((tmp_path / "bench.json").read_text())
    assert [p["offered_rate"] for p in report["phases"]] == [5, 15]
    for p in report["phases"]:
        # every request is accounted for; a busy machine may make the server shed some (429)
        assert p["ok"] > 0 and p["ok"] + sum(p["errors"].values()) == p["requests"]
        assert set(p["errors"]) <= {"http_429", "http_503"}, p["errors"]
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p99"] <= p["latency_ms"]["max"]
        # what a request cost the server, read from its bertserve_process_cpu_seconds_total
        cpu = p["server_cpu_ms"]
        assert set(cpu) == {"front", "worker-0", "total"} and cpu["front"] > 0 and cpu["worker-0"] > 0
        assert cpu["total"] == pytest.approx(cpu["front"] + cpu["worker-0"], rel=1e-3)  # JSON rounds
    assert "server CPU ms/req" in proc.stdout
    assert report["quality"]["mean_cosine"] > 0.99  # the server's vectors are the model's
    for name in ("bench.md", "bench_cdf.png", "bench_latency_vs_rate.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_burst_run_has_a_timeline_and_errors_by_kind(server: str) -> None:
    sampler = wl.TextSampler(["hello there", "a short message about the weather today"], seed=0)
    load = wl.bursts(5, 3, 1.0, 2.0, 2.0, sampler, seed=1)
    options = RunOptions(system="bertserve", slo_ms=(100,), load=LoadOptions(warmup_s=0), progress=False)
    report = asyncio.run(bench(make_target("simple", server), load, options))
    [tl] = report.timelines.values()
    assert len(tl.t_s) == 2 and sum(tl.answered) == report.phases[0].ok > 0

    empty = make_target("template", f"{server}/embed", template='{"texts": [""], "n": {text}}')
    load = wl.poisson(10, 0.5, sampler, seed=2)
    report = asyncio.run(bench(empty, load, options))
    assert report.phases[0].ok == 0 and set(report.phases[0].errors) == {"http_422"}


def bench_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*CLI, "bench", "run", *args, "--rate", "10", "--duration", "1", "--warmup-s", "0",
                           "--slo-ms", "1000", "--no-progress"], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("api", ["openai", "kserve"])
def test_cli_asks_bertserve_for_its_model_name(server: str, api: str, tmp_path: Path) -> None:
    """Without --model-name the requests name the model the server serves, not 'default' (→ 404)."""
    proc = bench_cli(server, "--api", api, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "all-MiniLM-L6-v2" in proc.stderr
    [report] = json.loads((tmp_path / "bench.json").read_text())
    [p] = report["phases"]
    assert p["ok"] > 0 and set(p["errors"]) <= {"http_429", "http_503"}, p["errors"]


def test_cli_exits_1_when_every_request_fails(server: str, tmp_path: Path) -> None:
    proc = bench_cli(server, "--api", "openai", "--model-name", "nope", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "Traceback" not in proc.stderr
    # the count of failures and the server's own reason, which names the model it does serve
    assert "http_404" in last and "'nope'" in last and "all-MiniLM-L6-v2" in last
    assert not (tmp_path / "out").exists()
