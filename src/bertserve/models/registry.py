"""Build the torch head-output module an artifact describes, by its ``architecture``.

New architectures (e.g. the student ensemble) register a builder here, so the runtimes and the
ONNX export never need to know how a model is assembled.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..artifact import Manifest
from ..errors import ArtifactError


@dataclass(slots=True)
class BuiltModule:
    module: nn.Module  # forward(input_ids, attention_mask[, students][, token_type_ids]) -> (B, output_dim)
    output_dim: int
    max_students: int = 1
    hf_config: dict | None = None  # for graph fusion (num_heads, hidden_size) when it applies


Builder = Callable[[Path, Manifest], BuiltModule]

# architecture -> "module:function", imported lazily so the core never pays for extras.
BUILDERS: dict[str, str] = {
    "hf-encoder": "bertserve.models.registry:build_hf_encoder",
    "student-ensemble": "bertserve.models.ensemble:build_ensemble",
    "slim-bert": "bertserve.models.slim:build_slim",
}


def build_hf_encoder(folder: Path, manifest: Manifest) -> BuiltModule:
    import json

    from .heads import load_hf_module

    weights = folder / manifest.weights
    config = json.loads((weights / "config.json").read_text())
    module = load_hf_module(str(weights), manifest.task, manifest.pooling, manifest.normalize)
    return BuiltModule(module, head_width(manifest, config), 1, config)


def head_width(manifest: Manifest, config: dict) -> int:
    """Width of one output row: classes of a classifier, 1 for a reranker, else the hidden size."""
    if manifest.task == "classify" and manifest.labels:
        return len(manifest.labels)
    return 1 if manifest.task == "rerank" else int(config["hidden_size"])


def build_module(folder: Path, manifest: Manifest) -> BuiltModule:
    target = BUILDERS.get(manifest.architecture)
    if target is None:
        raise ArtifactError(
            f"{folder}: unknown architecture {manifest.architecture!r} (known: {', '.join(sorted(BUILDERS))})"
        )
    module_name, func = target.split(":")
    try:
        builder: Builder = getattr(importlib.import_module(module_name), func)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"architecture {manifest.architecture!r} is not available: {exc}") from exc
    try:
        return builder(folder, manifest)
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"cannot load the model in {folder}: {exc}") from exc
