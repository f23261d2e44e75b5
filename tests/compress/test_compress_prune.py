"""Pruning: heads and FFN neurons are physically removed, the result reloads and serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from bertserve import Encoder
from bertserve.artifact import load_manifest
from bertserve.compress.prune import PruneConfig, heads_to_keep, prune
from bertserve.compress.quality import outputs
from bertserve.compress.recover import RecoverConfig
from bertserve.errors import ConfigError

from .conftest import cosine


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """25% of heads (ablation importance) and 25% of FFN neurons gone, then 3 recovery steps."""
    config = PruneConfig(heads=0.25, ffn=0.25, score_texts=16,
                         recover=RecoverConfig(steps=3, batch_size=8, max_length=32))
    return prune(minilm_dir, tmp_path_factory.mktemp("prune") / "p", config)


def test_structured_pruning_shrinks_the_weights(pruned: Path) -> None:
    folder, m = load_manifest(pruned)
    assert m.architecture == "slim-bert" and m.backend == "torch"
    spec = json.loads((folder / "weights" / "slim.json").read_text())
    assert sum(spec["heads"]) == 72 - 18 and min(spec["heads"]) >= 1
    assert spec["intermediate"] == [1152] * 6
    with safe_open(str(folder / "weights" / "model.safetensors"), "pt") as st:
        for i, heads in enumerate(spec["heads"]):
            layer = f"encoder.layer.{i}."
            assert st.get_slice(layer + "attention.self.query.weight").get_shape() == [heads * 32, 384]
            assert st.get_slice(layer + "attention.output.dense.weight").get_shape() == [384, heads * 32]
            assert st.get_slice(layer + "output.dense.weight").get_shape() == [384, 1152]
    step = m.provenance["steps"][-1]
    assert step["parameters"]["after"] < step["parameters"]["before"] - 2_000_000
    assert len(step["recovery_loss"]) == 2


def test_pruned_model_serves_on_torch_and_onnx(pruned: Path, texts: list[str], original: np.ndarray) -> None:
    torch_out = outputs(pruned, texts)
    onnx_enc = Encoder.load(pruned, backend="onnxruntime")  # exported on first use, like any artifact
    onnx_out = onnx_enc.run_ids(onnx_enc.tokenize(texts).ids)
    np.testing.assert_allclose(onnx_out, torch_out, atol=2e-4)
    assert cosine(original, torch_out).mean() > 0.7  # a real model, not noise (recovery: next test)


def test_magnitude_pruning_reports_sparsity_and_keeps_shapes(tmp_path: Path, minilm_dir: Path,
                                                             texts: list[str], original: np.ndarray) -> None:
    out = prune(minilm_dir, tmp_path / "m", PruneConfig(magnitude=0.3))
    _, m = load_manifest(out)
    assert m.architecture == "hf-encoder"
    sparsity = m.provenance["steps"][-1]["sparsity"]
    assert abs(sparsity["encoder_linear_sparsity"] - 0.3) < 0.01
    assert "no speed" in m.provenance["steps"][-1]["note"]
    assert cosine(original, outputs(out, texts)).mean() > 0.85


def test_heads_to_keep_never_empties_a_layer() -> None:
    import torch

    scores = torch.tensor([[0.0, 0.1], [5.0, 6.0]])
    assert heads_to_keep(scores, 0.75, [2, 2]) == [[1], [1]]


def test_nothing_to_prune_is_a_config_error(tmp_path: Path, minilm_dir: Path) -> None:
    with pytest.raises(ConfigError):
        prune(minilm_dir, tmp_path / "x", PruneConfig())


def test_recovery_brings_the_pruned_model_back_toward_the_original(pruned: Path, tmp_path: Path,
                                                                     minilm_dir: Path, texts: list[str],
                                                                     original: np.ndarray) -> None:
    """The same pruning without its recovery steps: recovery must have raised the cosine."""
    bare = prune(minilm_dir, tmp_path / "bare", PruneConfig(heads=0.25, ffn=0.25, score_texts=16))
    recovered = cosine(original, outputs(pruned, texts)).mean()
    unrecovered = cosine(original, outputs(bare, texts)).mean()
    print(f"cosine to the original: recovered {recovered:.4f}, not recovered {unrecovered:.4f}")
    assert recovered > unrecovered + 0.003  # 3 steps: 0.837 → 0.844 here (seeded)
