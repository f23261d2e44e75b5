"""``slim-bert``: a BERT whose layers have their own sizes (after pruning or factorisation).

A Hugging Face config can only say "every layer has H heads and an FFN of width F". After
structured pruning layer 0 may keep 9 heads and layer 5 only 6, and a factorised linear is two
smaller ones. ``weights/slim.json`` records those shapes::

    {"heads": [9, 12, ...],            # kept heads per layer (head size unchanged)
     "intermediate": [1152, ...],      # FFN width per layer
     "ranks": {"encoder.layer.0.output.dense": 96}}   # low-rank linears (names in base model)

The builder makes the stock HF model from ``config.json``, resizes its modules to that spec and
loads the safetensors strictly. The forward code stays HF's own (it reshapes attention with
``-1`` heads), so the ONNX export and graph fusion treat a slim model like any BERT.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..artifact import Manifest
from ..errors import ArtifactError
from .heads import HEAD_TASKS
from .registry import BuiltModule, head_width

SLIM_FILE = "slim.json"


class LowRankLinear(nn.Sequential):
    """``W ≈ B·A``: in → rank (no bias) → out (with the original bias)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features))


def get_submodule_parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, leaf = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), leaf


def resize_linear(
    linear: nn.Linear, *, out_features: int | None = None, in_features: int | None = None
) -> nn.Linear:
    """An empty linear of the new shape (weights come from the checkpoint or a slice)."""
    return nn.Linear(
        in_features or linear.in_features, out_features or linear.out_features, bias=linear.bias is not None
    )


def apply_spec(base: nn.Module, spec: dict[str, Any], head_size: int) -> None:
    """Resize an HF BERT base model's modules in place to the slim spec (weights uninitialised)."""
    layers = base.encoder.layer
    for i, heads in enumerate(spec.get("heads") or []):
        att = layers[i].attention
        width = heads * head_size
        for name in ("query", "key", "value"):
            setattr(att.self, name, resize_linear(getattr(att.self, name), out_features=width))
        att.self.num_attention_heads = heads
        att.self.all_head_size = width
        att.output.dense = resize_linear(att.output.dense, in_features=width)
    for i, width in enumerate(spec.get("intermediate") or []):
        layers[i].intermediate.dense = resize_linear(layers[i].intermediate.dense, out_features=width)
        layers[i].output.dense = resize_linear(layers[i].output.dense, in_features=width)
    for name, rank in (spec.get("ranks") or {}).items():
        parent, leaf = get_submodule_parent(base, name)
        old = getattr(parent, leaf)
        if not isinstance(old, nn.Linear):
            raise ArtifactError(f"slim spec names {name!r}, which is not a linear layer")
        setattr(parent, leaf, LowRankLinear(old.in_features, old.out_features, int(rank)))


def make_hf_model(config: dict[str, Any], task: str) -> nn.Module:
    """The stock HF model for ``config``, built without loading any weights."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "transformers_version"})
    cfg._attn_implementation = "sdpa"
    cls = AutoModelForSequenceClassification if task in HEAD_TASKS else AutoModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_config(cfg)


def head_size(config: dict[str, Any]) -> int:
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def build_slim(folder: Path, manifest: Manifest) -> BuiltModule:
    """Registry builder for ``architecture: slim-bert``."""
    from safetensors.torch import load_file

    from .heads import PooledEncoder

    weights = folder / manifest.weights
    config = json.loads((weights / "config.json").read_text())
    spec_file = weights / SLIM_FILE
    spec = json.loads(spec_file.read_text()) if spec_file.exists() else {}
    model = make_hf_model(config, manifest.task)
    apply_spec(model.base_model, spec, head_size(config))
    state: dict[str, torch.Tensor] = {}
    for f in sorted(weights.glob("*.safetensors")):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ArtifactError(
            f"{weights}: weights do not match slim.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    module = PooledEncoder(
        model.float(), task=manifest.task, pooling=manifest.pooling, normalize=manifest.normalize
    ).eval()
    return BuiltModule(module, head_width(manifest, config), 1, config)


def spec_of(base: nn.Module, head_dim: int) -> dict[str, Any]:
    """The slim spec that describes ``base``'s current module shapes."""
    heads, widths, ranks = [], [], {}
    for layer in base.encoder.layer:
        q = layer.attention.self.query
        heads.append(int((q[1] if isinstance(q, LowRankLinear) else q).out_features) // head_dim)
        up = layer.intermediate.dense
        widths.append(int((up[1] if isinstance(up, LowRankLinear) else up).out_features))
    for name, mod in base.named_modules():
        if isinstance(mod, LowRankLinear):
            ranks[name] = int(mod[0].out_features)
    return {"heads": heads, "intermediate": widths, "ranks": ranks}
