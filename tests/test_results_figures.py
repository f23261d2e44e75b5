"""Every number in benchmarks/RESULTS.md's tables comes from a committed raw result (issue 22)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("check_results", BENCH / "check_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_results_tables_come_from_raw_results(checker):
    problems = checker.check()
    assert not problems, "\n".join(problems)


RAW = """# A run

| system | p50 ms | p99 ms |
|---|---:|---:|
| fast | 1.90 | 13.6 |
| slow | 450 | 2,239 |

## Notes

- typed by hand: 7.77
"""

RESULTS = """# results

## Summary

| issue | target | measured | status | script |
|---|---|---|---|---|
| 1 | ≥ 3× | fast 1.90 ms, slow 450 ms | met | `benchmarks/latency.py` |

## Latency

Script: `benchmarks/latency.py` · raw: `results/run.md`

- Command: `benchmarks/latency.py --iters 100`
- Machine: 2 cores; 2026-12-03

| system | p50 ms | p99 ms |
|---|---:|---:|
| fast | 1.90 | 13.6 |
| slow | 450 | 2,239 |
"""


def _check(checker, tmp_path: Path, results: str) -> list[str]:
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "run.md").write_text(RAW)
    (tmp_path / "RESULTS.md").write_text(results)
    return checker.check(tmp_path / "RESULTS.md", tmp_path, require_all_scripts=False)


def test_a_faithful_copy_passes(checker, tmp_path):
    assert _check(checker, tmp_path, RESULTS) == []


def test_a_planted_wrong_number_is_caught(checker, tmp_path):
    problems = _check(checker, tmp_path, RESULTS.replace("| fast | 1.90 | 13.6 |", "| fast | 1.91 | 13.6 |"))
    assert any(": 1.91 (" in p and "results/run.md" in p for p in problems), problems
    assert any("is in no raw table" in p for p in problems), problems


def test_a_wrong_number_in_the_summary_is_caught(checker, tmp_path):
    problems = _check(checker, tmp_path, RESULTS.replace("slow 450 ms", "slow 455 ms"))
    assert len(problems) == 1 and ": 455 (" in problems[0], problems


def test_typed_notes_of_a_raw_file_do_not_count(checker, tmp_path):
    problems = _check(checker, tmp_path, RESULTS.replace("fast 1.90 ms", "fast 7.77 ms"))
    assert len(problems) == 1 and ": 7.77 (" in problems[0], problems


def test_a_section_must_name_existing_raw_files(checker, tmp_path):
    problems = _check(checker, tmp_path, RESULTS.replace("results/run.md", "results/gone.md"))
    assert any("'results/gone.md' does not exist" in p for p in problems), problems
    problems = _check(checker, tmp_path, RESULTS.replace("Script: `benchmarks/latency.py` · raw:", "Raw:"))
    assert any("names no script" in p for p in problems), problems


def test_what_counts_as_a_figure(checker):
    assert checker.figures("**4.42** / 7.66 ms, 2,239 × 429, 1e-5") == ["4.42", "7.66", "2239", "429", "1e-5"]
    # names and commands are not figures
    assert checker.figures("p99 of 2x1 int8, 4×1L at b16 (`--rates 10,20`)") == ["4"]
    assert checker.figures("[plot](results/x_2.png) 0.7572 → 0.7642 (98.6% → 99.5%)") == [
        "0.7572", "0.7642", "98.6", "99.5"]
