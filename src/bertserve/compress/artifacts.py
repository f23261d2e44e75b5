"""Plumbing every compression step shares: torch weights in, a new artifact folder out.

A step never edits its input. It reads the source artifact's torch weights (a folder with
``config.json`` and safetensors), writes ``out/weights`` and ``out/tokenizer`` and a manifest
whose ``provenance.steps`` gains one record, so an artifact tells how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..artifact import Manifest, copy_tokenizer, load_manifest, save_manifest
from ..errors import ArtifactError, ConfigError

WEIGHTS_DIR = "weights"
WEIGHTS_FILE = "model.safetensors"


def check_recovery(config: Any) -> None:
    """A recovery distillation's settings (``recover.RecoverConfig``) as a ConfigError, not a
    silent no-op: negative steps used to skip recovery without a word."""
    rules = (("steps", 0, "0 = no recovery"), ("batch_size", 1, ""), ("max_length", 2, ""))
    for name, low, note in rules:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"recover {name} must be an integer >= {low}{f' ({note})' if note else ''}, "
                              f"got {value!r}")
    if not config.lr > 0:
        raise ConfigError(f"recover lr must be > 0, got {config.lr}")
    if not config.hidden >= 0:
        raise ConfigError(f"recover hidden must be >= 0 (0 = outputs only), got {config.hidden}")
    if not config.temperature > 0:
        raise ConfigError(f"recover temperature must be > 0, got {config.temperature}")


def load_torch_source(src: str | Path | None) -> tuple[Path, Manifest]:
    """Load an artifact that holds torch weights (compression works on those, not on ONNX)."""
    folder, manifest = load_manifest(src)
    if manifest.backend != "torch":
        raise ArtifactError(
            f"{folder} holds ONNX weights; compression steps read torch weights. Run them on the "
            "torch artifact and quantise/export last."
        )
    if manifest.architecture not in ("hf-encoder", "slim-bert"):
        raise ArtifactError(
            f"{folder}: architecture {manifest.architecture!r} cannot be compressed by this step "
            "(supported: hf-encoder, slim-bert)"
        )
    return folder, manifest


def read_state(weights: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors files (never pickles)."""
    files = sorted(weights.glob("*.safetensors"))
    if not files:
        raise ArtifactError(f"no *.safetensors in {weights}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def read_config(weights: Path) -> dict[str, Any]:
    return json.loads((weights / "config.json").read_text())


def write_weights(out: Path, state: dict[str, torch.Tensor], config: dict[str, Any],
                  slim: dict[str, Any] | None = None) -> Path:
    """Write ``out/weights``: config.json, model.safetensors and (slim-bert) slim.json."""
    wdir = out / WEIGHTS_DIR
    wdir.mkdir(parents=True, exist_ok=True)
    (wdir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(wdir / WEIGHTS_FILE))
    if slim is not None:
        (wdir / "slim.json").write_text(json.dumps(slim, indent=2) + "\n")
    return wdir


def finish(src_folder: Path, src: Manifest, out: Path, step: dict[str, Any],
           *, tokenizer_done: bool = False, **updates: Any) -> Manifest:
    """Copy the tokenizer (unless the step wrote its own), write the manifest with the step."""
    tok = "tokenizer" if tokenizer_done else copy_tokenizer(src_folder, src, out)
    provenance = dict(src.provenance)
    provenance.setdefault("source", str(src_folder))
    provenance["steps"] = [*provenance.get("steps", []), step]
    data = {**src.model_dump(), "tokenizer": tok, "weights": WEIGHTS_DIR, "provenance": provenance}
    data.update(updates)
    manifest = Manifest.model_validate(data)
    save_manifest(out, manifest)
    return manifest


def load_module(folder: Path, manifest: Manifest) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The artifact's fp32 head-output module (a PooledEncoder) and its HF config."""
    from ..models.registry import build_module

    built = build_module(folder, manifest)
    return built.module.float().eval(), dict(built.hf_config or read_config(folder / manifest.weights))


def save_module(src_folder: Path, src: Manifest, out: Path, module: torch.nn.Module,
                config: dict[str, Any], step: dict[str, Any]) -> Manifest:
    """Write a (possibly reshaped) PooledEncoder as a ``slim-bert`` artifact."""
    from ..models.slim import head_size, spec_of

    hf = module.model  # type: ignore[attr-defined]
    spec = spec_of(hf.base_model, head_size(config))
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    write_weights(out, state, config, spec)
    return finish(src_folder, src, out, step, architecture="slim-bert", precision="fp32")
