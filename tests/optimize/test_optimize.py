"""``bertserve optimize`` end to end on the bundled embedder, with a few training steps per student.

Real commands build every candidate (quantize, prune-vocab, distill, stack), real encoders measure
quality, the real profile feeds the planner, and real ``bertserve serve`` processes are driven by
the real load generator for the verification. Behaviour, not quality: budgets are tiny.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertserve.errors import ConfigError
from bertserve.optimize import OptimizeOptions, optimize
from bertserve.optimize.budget import TrainingBudget, parse_duration
from bertserve.optimize.candidates import Space
from bertserve.optimize.capacity import Layout
from bertserve.optimize.quality import neighbours, recall_at_k

SPACE = Space(layers=(1,), stacks=((2, 1),), openvino=False, calibration_texts=16)


def tiny(**overrides: object) -> OptimizeOptions:
    base = dict(min_quality=0.01, space=SPACE, layout=Layout(slo_ms=200.0), verify=1, max_steps=2,
                eval_n=40, corpus_n=120, verify_step_s=0.5, verify_min_requests=8, progress=False)
    return OptimizeOptions(**{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def optimized(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path):
    out = tmp_path_factory.mktemp("optimize") / "out"
    return out, optimize(minilm_dir, out, tiny())


def _stamps(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "candidates").glob("*/build.json")}


def test_every_candidate_is_built_measured_and_reported(optimized) -> None:
    out, result = optimized
    names = [r["name"] for r in result.rows]
    assert names == ["teacher", "teacher-int8", "teacher-vocab", "student-1l", "student-1l-int8",
                     "stack-2x1", "stack-2x1-int8"]
    for r in result.rows:
        assert "error" not in r, r
        assert 0.0 <= r["quality"]["value"] <= 1.0 and r["quality"]["metric"] == "recall@10"
        assert r["predicted"] > 0
        if r["name"] != "teacher":
            assert (out / "candidates" / r["name"] / "artifact" / "bertserve.json").exists()
            assert r["command"].startswith("bertserve ")
    teacher = result.rows[0]
    assert teacher["quality"]["value"] == pytest.approx(1.0)  # its own neighbours
    assert result.rows[3]["predicted"] > teacher["predicted"]  # one layer serves more than six
    served = [r for r in result.rows if r.get("served") is not None]
    assert {r["name"] for r in served} >= {"teacher"} and len(served) == 2  # --verify 1 + the teacher
    assert result.best in names and result.best != "teacher"
    best = json.loads((out / "best" / "bertserve.json").read_text())
    assert best["provenance"]["optimize"]["candidate"] == result.best
    report = (out / "report.md").read_text()
    assert f"**{result.best}**" in report and "bertserve distill" in report and "bertserve stack" in report
    assert (out / "pareto.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["best"] == result.best


def test_a_rerun_resumes_rebuilding_only_what_was_interrupted(optimized, minilm_dir: Path) -> None:
    out, first = optimized
    before = _stamps(out)
    import shutil

    shutil.rmtree(out / "candidates" / "student-1l-int8")  # as if killed while quantising
    again = optimize(minilm_dir, out, tiny())
    after = _stamps(out)
    assert after.pop("student-1l-int8") and before.pop("student-1l-int8")
    assert after == before  # nothing else was rebuilt
    assert [r["name"] for r in again.rows] == [r["name"] for r in first.rows]
    assert again.best == first.best


def test_a_floor_no_candidate_meets_is_a_clear_error_and_the_report_is_still_written(
        optimized, minilm_dir: Path) -> None:
    out, _ = optimized
    before = _stamps(out)
    (out / "report.md").unlink()
    with pytest.raises(ConfigError, match="none of 7 reaches quality ≥ 1"):
        optimize(minilm_dir, out, tiny(min_quality=1.0))
    assert "No candidate meets the floor" in (out / "report.md").read_text()
    assert _stamps(out) == before  # every figure came from the first run


def test_the_command_reports_bad_options_in_one_line(tmp_path: Path) -> None:
    for flags, message in ((["--stacks", "2by2"], "stacks are K×L"),
                           (["--budget", "soon"], "cannot read the budget")):
        args = ["optimize", "default", str(tmp_path / "o"), *flags]
        proc = subprocess.run([sys.executable, "-m", "bertserve.cli", *args], capture_output=True, text=True,
                              timeout=120,
                              env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "o").exists()


def test_budgets_parse_and_steps_follow_the_measured_rate() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90 and parse_duration("45") == 45
    with pytest.raises(ConfigError):
        parse_duration("2 days")
    b = TrainingBudget(seconds=600, layers_left=10, step_layer_s=0.1, max_texts=1000)
    assert b.steps(2) == 600  # 600 s over 10 layer-units at 0.1 s a layer-step: the same steps for all
    assert b.flags(2) == {"n": 1000, "epochs": 19.2, "max-steps": 600}  # more passes once texts run out
    b.spent(2, 600, 240.0)  # it took 0.2 s a layer-step, not 0.1
    assert b.step_layer_s == pytest.approx(0.2) and b.steps(4) == 225  # 360 s ÷ (8 units × 0.2 s)


def test_recall_counts_the_teachers_neighbours_the_candidate_keeps() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8))
    q = np.arange(10)
    ref = neighbours(emb, q)
    assert recall_at_k(ref, ref) == 1.0
    assert not (ref == q[:, None]).any()  # a text is not its own neighbour
    assert recall_at_k(ref, neighbours(rng.normal(size=(50, 8)), q)) < 0.5
