"""Recipes and the quality gate: a destructive step is rolled back, a benign one kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertserve.artifact import load_manifest
from bertserve.compress.recipe import load_recipe, parse_recipe, run_recipe
from bertserve.errors import ConfigError


def test_gate_rejects_a_destructive_step(tmp_path: Path, minilm_dir: Path) -> None:
    recipe = parse_recipe({
        "eval_texts": 32,
        "measure_speed": False,
        "steps": [{"prune": {"magnitude": 0.9}},  # 90% of every matrix zeroed: destroys the model
                  {"quantize": {"method": "bf16"}}],
    })
    result = run_recipe(minilm_dir, tmp_path / "out", recipe, max_quality_drop=0.02)
    first, second = result.steps
    assert not first.accepted and "rolled back" in first.reason and first.quality["drop"] > 0.02
    assert second.accepted and second.quality["mean"] >= 0.99
    _, m = load_manifest(tmp_path / "out")
    assert m.precision == "bf16"  # built from the original, not from the rejected step
    assert [s["step"] for s in m.provenance["steps"]] == ["quantize"]
    assert [s["accepted"] for s in m.provenance["recipe"]["steps"]] == [False, True]


def test_recipe_file_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("steps:\n  - shrink: {}\n")
    with pytest.raises(ConfigError, match="unknown recipe step"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="last step"):
        parse_recipe({"steps": [{"quantize": {"method": "static-int8"}}, {"prune": {"heads": 0.1}}]})
    with pytest.raises(ConfigError, match="prune"):
        parse_recipe({"steps": [{"prune": {"heads": 0.1, "typo": 1}}]})
