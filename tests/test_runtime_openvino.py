"""The OpenVINO backend: numerics against sentence-transformers, dynamic shapes, threads, choices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ensemble_artifacts import save_ensemble_artifact

from bertserve import Encoder
from bertserve.artifact import Manifest
from bertserve.errors import ConfigError
from bertserve.export.prepare import prepare
from bertserve.runtime import Batch
from bertserve.runtime.loader import BackendOptions, load_backend, resolve_choice

pytest.importorskip("openvino")

from bertserve.runtime.openvino_backend import cpu_has_bf16  # noqa: E402  (needs openvino)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


HAS_BF16 = cpu_has_bf16()  # the backend's own test: it refuses bf16 where this is false


def test_fp32_matches_sentence_transformers(sentences, st_reference) -> None:
    enc = Encoder.load(None, backend="openvino", precision="fp32", threads=1)
    assert enc.backend.name == "openvino" and enc.manifest.backend == "onnxruntime"  # the cached export
    got = enc.embed(sentences)
    cos = cosines(got, st_reference)
    assert got.shape == (200, 384)
    assert cos.mean() >= 0.99999 and cos.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)


@pytest.mark.skipif(not HAS_BF16, reason="the CPU has neither avx512_bf16 nor amx_bf16")
def test_bf16_matches_sentence_transformers(onnx_fp32: Path, sentences, st_reference) -> None:
    enc = Encoder.load(onnx_fp32, backend="openvino", precision="bf16", threads=1)
    import openvino as ov

    assert enc.backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    cos = cosines(enc.embed(sentences), st_reference)
    assert cos.mean() >= 0.9999 and cos.min() >= 0.999


def test_one_compiled_model_serves_every_shape(onnx_fp32: Path, minilm_dir: Path, sentences) -> None:
    from bertserve.tokenizer import TextTokenizer

    _, _, ov = load_backend(onnx_fp32, BackendOptions(backend="openvino", threads=1))
    _, _, ort = load_backend(onnx_fp32, BackendOptions(backend="onnxruntime", threads=1))
    tok = TextTokenizer(minilm_dir, 256)
    compiled = ov.compiled
    for texts in (sentences[:1], sentences[10:15], sentences[40:43]):  # (1, T1), (5, T2), (3, T3)
        batch = Batch.from_ids(tok.encode(texts).ids)
        got = ov.run(batch)
        assert got.shape == (batch.size, 384) and got.dtype == np.float32
        np.testing.assert_allclose(got, ort.run(batch), atol=2e-5)
    assert ov.compiled is compiled
    first = ov.run(Batch.from_ids(tok.encode(sentences[:2]).ids))
    ov.run(Batch.from_ids(tok.encode(sentences[5:9]).ids))
    np.testing.assert_array_equal(first, ov.run(Batch.from_ids(tok.encode(sentences[:2]).ids)))  # no alias


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_option_is_honoured(onnx_fp32: Path, threads: int) -> None:
    _, _, ov = load_backend(onnx_fp32, BackendOptions(backend="openvino", threads=threads))
    assert ov.threads == threads
    assert int(ov.compiled.get_property("NUM_STREAMS")) == 1


def test_precision_and_device_errors(onnx_fp32: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="not 'fp16'"):
        Encoder.load(onnx_fp32, backend="openvino", precision="fp16")
    with pytest.raises(ConfigError, match="ov-int8"):
        Encoder.load(onnx_fp32, backend="openvino", precision="int8")
    with pytest.raises(ConfigError, match="CPU"):
        Encoder.load(onnx_fp32, backend="openvino", device="cuda")
    with pytest.raises(ConfigError, match="backend must be"):
        Encoder.load(onnx_fp32, backend="tensorrt")
    from bertserve.runtime import openvino_backend

    monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="AVX-512-BF16 or AMX"):
        Encoder.load(onnx_fp32, backend="openvino", precision="bf16")


def test_choices_for_every_artifact_kind() -> None:
    ort_int8 = Manifest(backend="onnxruntime", precision="int8", weights="model.onnx")
    with pytest.raises(ConfigError, match="ov-int8"):
        resolve_choice(ort_int8, BackendOptions(backend="openvino"))
    ov_int8 = Manifest(backend="openvino", precision="int8", weights="model.xml")
    assert resolve_choice(ov_int8, BackendOptions()) == ("openvino", "int8")
    assert resolve_choice(ov_int8, BackendOptions(backend="openvino")) == ("openvino", "int8")
    with pytest.raises(ConfigError, match="openvino backend"):
        resolve_choice(ov_int8, BackendOptions(backend="onnxruntime"))
    with pytest.raises(ConfigError, match="cannot run at fp32"):
        resolve_choice(ov_int8, BackendOptions(backend="openvino", precision="fp32"))
    torch_fp32 = Manifest()
    assert resolve_choice(torch_fp32, BackendOptions()) == ("onnxruntime", "fp32")  # auto unchanged
    assert resolve_choice(torch_fp32, BackendOptions(backend="openvino")) == ("openvino", "fp32")
    with pytest.raises(ConfigError, match="ov-int8"):
        resolve_choice(Manifest(precision="int8"), BackendOptions(backend="openvino"))


def test_resolve_served_exports_once_for_the_workers() -> None:
    folder, manifest, backend, precision = prepare(None, BackendOptions(backend="openvino"))
    assert (backend, precision, manifest.backend) == ("openvino", "fp32", "onnxruntime")
    assert (folder / manifest.weights).suffix == ".onnx"
    same = prepare(None, BackendOptions(backend="onnxruntime"))
    assert same[0] == folder and same[2:] == ("onnxruntime", None)  # one cached export for both
    assert prepare(None, BackendOptions(backend="torch"))[2:] == ("torch", "fp32")


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """An untrained 3 × 1-layer student ensemble of the bundled model, distinct heads per student."""
    from bertserve.compress.teacher import init_student, student_config
    from bertserve.models.ensemble import StudentEnsemble

    cfg = student_config(minilm_dir, layers=1, task="embed", output_dim=384, pooling="mean",
                         normalize=True, max_len=256)
    alphas = [1.0, 0.7, -0.3]
    model = StudentEnsemble(cfg, 3, alphas)
    g = torch.Generator().manual_seed(0)
    for j in range(3):
        init_student(model, j, minilm_dir, [j])
    with torch.no_grad():
        model.head_w.copy_(torch.randn(3, 384, 384, generator=g) * 0.05)
        model.head_b.copy_(torch.randn(3, 384, generator=g) * 0.01)
    return save_ensemble_artifact(model, alphas, minilm_dir, tmp_path_factory.mktemp("ov-ensemble"))


def test_ensemble_prefixes_match_onnxruntime(ensemble_dir: Path, minilm_dir: Path, sentences) -> None:
    from bertserve.tokenizer import TextTokenizer

    exported = prepare(ensemble_dir, BackendOptions(backend="onnxruntime"))[0]  # the fp32 export
    _, _, ov = load_backend(exported, BackendOptions(backend="openvino", threads=1))
    _, _, ort = load_backend(exported, BackendOptions(backend="onnxruntime", threads=1))
    assert ov.max_students == 3 and ov.output_dim == 384
    ids = TextTokenizer(minilm_dir, 256).encode(sentences[:6]).ids
    outs = []
    for m in (1, 2, 3, None):
        batch = Batch.from_ids(ids, students=m)
        got = ov.run(batch)
        np.testing.assert_allclose(got, ort.run(batch), atol=5e-5)
        outs.append(got)
    assert not np.allclose(outs[0], outs[1], atol=1e-3)  # the prefixes really differ
    np.testing.assert_array_equal(outs[2], outs[3])  # None runs every student


def test_ensemble_ov_int8_quantises_every_prefix(ensemble_dir: Path, minilm_dir: Path, sentences,
                                                 tmp_path: Path) -> None:
    """ov-int8 of an ensemble: one NNCF IR per prefix, each close to its fp32 prefix, served as is."""
    pytest.importorskip("nncf")
    from bertserve.artifact import load_manifest
    from bertserve.compress.quantize import QuantizeConfig, quantize
    from bertserve.tokenizer import TextTokenizer

    out = quantize(ensemble_dir, tmp_path / "q", QuantizeConfig(method="ov-int8", calibration_texts=48))
    _, manifest = load_manifest(out)
    assert (manifest.backend, manifest.precision) == ("openvino", "int8")
    assert [s.path for s in manifest.students] == ["students-1.xml", "students-2.xml", "students-3.xml"]
    assert all((out / s.path).is_file() and s.term is None for s in manifest.students)
    quality = manifest.provenance["steps"][-1]["quality"]
    assert len(quality["per_prefix"]) == 3 and quality["mean_cosine_to_fp32"] >= 0.99

    exported = prepare(ensemble_dir, BackendOptions(backend="onnxruntime"))[0]
    _, _, ref = load_backend(exported, BackendOptions(backend="openvino", precision="fp32", threads=1))
    _, _, got = load_backend(out, BackendOptions(threads=1))  # auto: an OpenVINO IR runs on openvino
    assert got.name == "openvino" and got.max_students == 3
    ids = TextTokenizer(minilm_dir, 256).encode(sentences).ids
    outs = []
    for m in (1, 2, 3):
        batch = Batch.from_ids(ids, students=m)
        q = got.run(batch)
        assert cosines(q, ref.run(batch)).mean() >= 0.99
        outs.append(q)
    assert not np.allclose(outs[0], outs[2], atol=1e-2)  # each prefix runs its own graph
