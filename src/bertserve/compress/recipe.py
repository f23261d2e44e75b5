"""Recipes: run compression steps in order, each guarded by a quality gate.

A recipe is YAML::

    max_quality_drop: 0.02        # optional; the CLI flag overrides it
    eval_texts: 400               # held-out review snippets used by the gate
    steps:
      - prune: {heads: 0.25, ffn: 0.25, recover: {steps: 400}}
      - prune-vocab: {max_size: 10000}
      - quantize: {method: static-int8}

After every step the candidate is measured against the *original* model on held-out text
(cosine for embedders, agreement for classifiers). A step whose drop exceeds the budget is
rolled back — the next step starts from the last accepted artifact — or, with
``on_reject: stop``, ends the recipe; like accuracy-aware tuning in Intel Neural Compressor,
a user never ships a model that silently lost quality. The final manifest lists every step,
accepted or not, with its measured quality, size and speed.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import check_out, load_manifest, save_manifest, staged_out
from ..errors import ConfigError
from . import quality as q
from .lowrank import FactorizeConfig, factorize
from .prune import PruneConfig, prune
from .quantize import QuantizeConfig, quantize
from .recover import RecoverConfig
from .vocab import VocabConfig, prune_vocab

ONNX_METHODS = ("dynamic-int8", "static-int8")


@dataclass(slots=True)
class Step:
    kind: str  # prune | prune-vocab | factorize | quantize
    params: dict[str, Any]


@dataclass(slots=True)
class Recipe:
    steps: list[Step]
    max_quality_drop: float = 0.02
    eval_texts: int = 400
    on_reject: str = "skip"  # skip (roll back, go on) | stop
    measure_speed: bool = True


@dataclass(slots=True)
class StepResult:
    index: int
    kind: str
    params: dict[str, Any]
    accepted: bool
    quality: dict[str, Any]
    size_mb: float
    seconds: float
    speed: dict[str, Any] | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class RecipeResult:
    out: Path
    steps: list[StepResult] = field(default_factory=list)


def tuplify(params: dict[str, Any], key: str) -> None:
    if key in params and isinstance(params[key], list):
        params[key] = tuple(params[key])


def make_config(kind: str, params: dict[str, Any]) -> Any:
    """The typed config of one step; unknown keys are a ConfigError, not a silent no-op."""
    p = dict(params)
    if isinstance(p.get("recover"), dict):
        p["recover"] = RecoverConfig(**p["recover"])
    for key in ("exclude", "layers", "corpora"):
        tuplify(p, key)
    cls = {"prune": PruneConfig, "prune-vocab": VocabConfig, "factorize": FactorizeConfig,
           "quantize": QuantizeConfig}.get(kind)
    if cls is None:
        raise ConfigError(f"unknown recipe step {kind!r} (prune, prune-vocab, factorize, quantize)")
    try:
        config = cls(**p)
    except TypeError as exc:
        raise ConfigError(f"recipe step {kind!r}: {exc}") from exc
    config.check()
    return config


def run_step(kind: str, config: Any, src: Path | str | None, out: Path) -> Path:
    if kind == "prune":
        return prune(src, out, config, overwrite=True)
    if kind == "prune-vocab":
        return prune_vocab(src, out, config, overwrite=True)
    if kind == "factorize":
        return factorize(src, out, config, overwrite=True)
    return quantize(src, out, config, overwrite=True)


def parse_recipe(data: Any) -> Recipe:
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ConfigError("a recipe is a mapping with a non-empty 'steps' list")
    steps = []
    for i, item in enumerate(data["steps"]):
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"recipe step {i} must be one mapping like '- prune: {{heads: 0.25}}'")
        (kind, params), = item.items()
        params = params or {}
        make_config(kind, params)  # validate early, before any work
        steps.append(Step(kind, params))
    for i, step in enumerate(steps[:-1]):
        if step.kind == "quantize" and step.params.get("method", "static-int8") in ONNX_METHODS:
            raise ConfigError(f"step {i}: ONNX INT8 quantisation writes ONNX, so it must be the last step")
    known = ("max_quality_drop", "eval_texts", "on_reject", "measure_speed")
    extra = {k: data[k] for k in known if k in data}
    recipe = Recipe(steps, **extra)
    if recipe.on_reject not in ("skip", "stop"):
        raise ConfigError("on_reject must be 'skip' or 'stop'")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read recipe {path}: {exc}") from exc
    return parse_recipe(data)


def run_recipe(src: str | Path | None, out: str | Path, recipe: Recipe, *,
               max_quality_drop: float | None = None, overwrite: bool = False,
               on_step: Callable[[StepResult], None] | None = None) -> RecipeResult:
    """Run ``recipe`` on ``src``; the last accepted artifact ends up in ``out``.

    ``out`` is written only at the end: a failed step or gate error leaves it as it was.
    """
    budget = recipe.max_quality_drop if max_quality_drop is None else max_quality_drop
    if not 0.0 <= budget < 1.0:
        raise ConfigError(f"max quality drop must be in [0, 1), got {budget}")
    src_folder, src_manifest = load_manifest(src)
    if src_manifest.pairs:  # the gate compares outputs on single held-out texts
        raise ConfigError(f"{src_folder} reads text pairs: the recipe's quality gate measures single-text "
                          "models; run its steps one by one (bertserve quantize …) and measure MRR with "
                          "bertserve.compress.ranking")
    out = check_out(out, overwrite=overwrite)
    texts = q.eval_texts(recipe.eval_texts)
    reference = q.outputs(src_folder, texts)
    result = RecipeResult(out)
    current: Path = src_folder
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".recipe-", dir=out.parent) as tmp:
        for i, step in enumerate(recipe.steps):
            _, cur_manifest = load_manifest(current)
            if cur_manifest.backend != "torch":
                raise ConfigError(f"step {i} ({step.kind}) needs torch weights, but an earlier "
                                  "step produced ONNX; put ONNX quantisation last")
            t0 = time.perf_counter()
            candidate = run_step(step.kind, make_config(step.kind, step.params), current,
                                 Path(tmp) / f"step{i}-{step.kind}")
            quality = q.measure_quality(src_folder, candidate, texts, reference)
            accepted = quality.drop <= budget
            res = StepResult(i, step.kind, step.params, accepted, quality.as_dict(),
                             q.size_mb(candidate), round(time.perf_counter() - t0, 1))
            if accepted:
                if recipe.measure_speed:
                    res.speed = q.measure_speed(candidate).as_dict()
                current = candidate
            else:
                res.reason = f"quality drop {quality.drop:.4f} > budget {budget:.4f}; rolled back"
            result.steps.append(res)
            if on_step:
                on_step(res)
            if not accepted and recipe.on_reject == "stop":
                break
        with staged_out(out, overwrite=overwrite) as final:  # out appears only when complete
            shutil.copytree(current, final, dirs_exist_ok=True)
            _, manifest = load_manifest(final)
            provenance = dict(manifest.provenance)
            provenance.setdefault("source", str(src_folder))
            provenance["recipe"] = {"max_quality_drop": budget, "eval_texts": len(texts),
                                    "steps": [r.as_dict() for r in result.steps]}
            save_manifest(final, manifest.model_copy(update={"provenance": provenance}))
    return result
