"""``bertserve plan`` as a user runs it: a real process, the bundled tokenizer, a saved profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bertserve.serving.core.profile import RunTimeModel


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "bertserve.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_plan_prints_replicas_cores_and_latencies_as_json(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(RunTimeModel({1: [0.001, 0.0002, 0.00004, 0.0]}).to_json()))
    proc = run("plan", "--profile", str(profile), "--rate", "400", "--slo-ms", "50", "--burst", "3",
               "--workers", "2", "--duration-s", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    steady, burst = out["plan"]  # a plain model: no pruning row
    assert steady["scenario"] == "steady" and burst["scenario"] == "burst"
    assert steady["cores"] == steady["replicas"] * 2
    assert burst["replicas"] >= steady["replicas"] >= 1
    assert steady["p99_ms"] <= 50 and steady["p50_ms"] <= steady["p99_ms"]


def test_plan_reports_a_bad_profile_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "profile.json"
    bad.write_text("[]")
    proc = run("plan", "--profile", str(bad), "--rate", "10")
    assert proc.returncode == 1
    assert "cannot read profile" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_ray_has_help() -> None:
    proc = run("serve-ray", "--help")
    assert proc.returncode == 0 and "--num-cpus" in proc.stdout and "--max-replicas" in proc.stdout


def test_plan_takes_the_batch_time_spread_from_saved_metrics(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(RunTimeModel({1: [0.001, 0.0002, 0.00004, 0.0]}).to_json()))
    metrics = tmp_path / "metrics.txt"
    buckets = (("0.5", 0), ("1.0", 60), ("2.0", 90), ("5.0", 100), ("+Inf", 100))
    metrics.write_text("".join(f'bertserve_batch_time_prediction_ratio_bucket{{le="{le}"}} {c}\n'
                               for le, c in buckets))
    overheads = tmp_path / "overhead.txt"
    overheads.write_text("2.0\n3.5\n2.5\n")
    proc = run("plan", "--profile", str(profile), "--rate", "400", "--slo-ms", "50", "--duration-s", "5",
               "--spread", str(metrics), "--overhead-samples", str(overheads), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "100 batches" in out["spread"]
    assert out["plan"][0]["p50_ms"] >= 2.0
