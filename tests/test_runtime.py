"""Numerics of every backend against sentence-transformers' own encode() of the bundled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bertserve import Encoder
from bertserve.encoder import length_groups
from bertserve.errors import ConfigError, InputError, TextTooLongError
from bertserve.runtime import Batch


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    ("options", "min_cos", "mean_cos"),
    [
        ({"backend": "torch"}, 0.9999, 0.9999),
        ({"backend": "torch", "precision": "bf16"}, 0.995, 0.999),
        ({"backend": "onnxruntime"}, 0.9999, 0.9999),
    ],
    ids=["torch-fp32", "torch-bf16", "ort-fp32"],
)
def test_backend_matches_sentence_transformers(options, min_cos, mean_cos, sentences, st_reference) -> None:
    enc = Encoder.load(None, **options)
    got = enc.embed(sentences)
    cos = cosines(got, st_reference)
    assert got.shape == (200, 384)
    assert cos.min() >= min_cos and cos.mean() >= mean_cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


def test_int8_artifact_keeps_mean_cosine(onnx_int8: Path, sentences, st_reference) -> None:
    enc = Encoder.load(onnx_int8)
    assert enc.manifest.precision == "int8"
    cos = cosines(enc.embed(sentences), st_reference)
    assert cos.mean() >= 0.98


def test_batching_equals_one_by_one(onnx_fp32: Path, sentences) -> None:
    enc = Encoder.load(onnx_fp32)
    texts = sentences[:24]
    batched = enc.embed(texts, max_batch=8)
    single = np.stack([enc.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_length_groups_pad_only_within_sorted_groups() -> None:
    lengths = [5, 40, 7, 39, 6, 41]
    groups = length_groups(lengths, max_batch=3, max_tokens=10_000)
    assert groups == [[0, 4, 2], [3, 1, 5]]
    assert length_groups(lengths, max_batch=32, max_tokens=80) == [
        [0, 4, 2],
        [3, 1],
        [5],
    ]  # 40 × 2 = 80 fits, 41 × 3 does not


def test_batch_from_ids_pads_to_longest_member() -> None:
    b = Batch.from_ids([[1, 2, 3], [4]], pad_id=0)
    assert b.input_ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b.padding_ratio == pytest.approx(2 / 6)
    assert Batch.from_ids([[1, 2]]).padding_ratio == 0.0


def test_long_text_is_truncated_or_rejected(onnx_fp32: Path) -> None:
    enc = Encoder.load(onnx_fp32)
    long_text = "word " * 1000
    tok = enc.tokenize([long_text, "short"])
    assert len(tok.ids[0]) == 256 and tok.truncated == [True, False]
    assert tok.ids[0][-1] == 102  # the final [SEP] survives truncation
    with pytest.raises(TextTooLongError, match="at most 256"):
        enc.tokenize([long_text], truncate=False)
    assert enc.embed([long_text]).shape == (1, 384)


def test_bad_requests_raise_typed_errors(onnx_fp32: Path) -> None:
    enc = Encoder.load(onnx_fp32)
    with pytest.raises(InputError):
        enc.embed([])
    with pytest.raises(InputError, match="embedder"):
        enc.classify(["x"])
    with pytest.raises(ConfigError, match="fp16 runs on CUDA"):
        Encoder.load(None, backend="torch", precision="fp16")
    with pytest.raises(ConfigError, match="onnxruntime"):
        Encoder.load(onnx_fp32, backend="torch")
    with pytest.raises(ConfigError, match="bf16"):
        Encoder.load(None, backend="onnxruntime", precision="bf16")


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """The bundled encoder with a fresh (seeded) 3-label head, saved as safetensors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    labels = ["negative", "neutral", "positive"]
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_dir,
        num_labels=3,
        id2label=dict(enumerate(labels)),
        label2id={x: i for i, x in enumerate(labels)},
    )
    out = tmp_path_factory.mktemp("clf")
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_classifier_logits_match_transformers(classifier_dir: Path, backend: str, sentences) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = sentences[:16]
    ref_model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    with torch.no_grad():
        ref = ref_model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits.numpy()
    enc = Encoder.load(classifier_dir, backend=backend)
    preds = enc.classify(texts)
    got = np.array([p.logits for p in preds])
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert [p.label for p in preds] == [enc.labels[i] for i in ref.argmax(1)]
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in preds)
