"""Stacking distillation + boosting on real text (a few steps), and serving every prefix."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_boosting_step_is_the_least_squares_step():
    from bertserve.compress.stacking import boosting_step

    rng = np.random.default_rng(0)
    out, res = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    alpha = boosting_step(out, res)
    err = lambda a: ((res - a * out) ** 2).sum()  # noqa: E731
    assert err(alpha) <= min(err(alpha - 1e-3), err(alpha + 1e-3))
    assert boosting_step(np.zeros((3, 2)), res[:3, :2]) == 0.0


def test_residuals_shrink_as_students_are_added(stacked):
    path, report = stacked
    manifest = json.loads((path / "bertserve.json").read_text())
    hyper = manifest["provenance"]["hyper_parameters"]
    val_res = hyper["validation_residuals"]  # α is the least-squares step there: never grows
    assert len(val_res) == 3 and len(hyper["train_residuals"]) == 3
    assert all(b < a for a, b in zip(val_res, val_res[1:], strict=False)), val_res
    held_out = [q.residual for q in report.quality]
    assert held_out[-1] < held_out[0], held_out  # also on texts the students never saw
    cos = [q.value for q in report.quality]
    assert cos[-1] > cos[0], cos


def test_artifact_lists_students_in_boosting_order(stacked_path):
    from bertserve.artifact import load_manifest

    _, manifest = load_manifest(stacked_path)
    assert manifest.architecture == "student-ensemble"
    assert [s.path for s in manifest.students] == ["students/0", "students/1", "students/2"]
    assert all(np.isfinite(s.alpha) and s.alpha != 0 for s in manifest.students)
    assert not list(stacked_path.rglob("*.bin"))  # safetensors only


def test_export_cli_path_serves_every_prefix(stacked_path, sentences, tmp_path):
    """``bertserve export`` / auto backend: the ensemble goes through the ordinary export path."""
    from bertserve import Encoder
    from bertserve.export.onnx import export_onnx

    enc = Encoder.load(export_onnx(stacked_path, tmp_path / "onnx"))
    assert enc.backend.name == "onnxruntime" and enc.backend.max_students == 3
    assert enc.embed(sentences[:4], students=2).shape == (4, 384)


@pytest.mark.parametrize("student_threads", [1, 2])
def test_every_prefix_loads_and_serves_on_torch(stacked_path, sentences, student_threads):
    from bertserve import Encoder
    from bertserve.models.ensemble import ThreadedEnsemble

    enc = Encoder.load(stacked_path, backend="torch", student_threads=student_threads)
    assert enc.backend.max_students == 3
    assert isinstance(enc.backend.module, ThreadedEnsemble) == (student_threads > 1)
    if student_threads > 1:  # the threaded run is the fused one, within float error
        fused = Encoder.load(stacked_path, backend="torch")
        for m in (1, 3):
            np.testing.assert_allclose(enc.embed(sentences[:8], students=m),
                                       fused.embed(sentences[:8], students=m), atol=1e-5)
    outs = [enc.embed(sentences[:16], students=m) for m in (1, 2, 3)]
    for out in outs:
        assert out.shape == (16, 384)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(outs[0], outs[2], atol=1e-4)  # a prefix is a different model
    np.testing.assert_array_equal(enc.embed(sentences[:16]), outs[2])


@pytest.mark.parametrize(
    ("precision", "fused", "student_threads"),
    [("fp32", None, 1), ("fp32", None, 2), ("fp32", True, 2), ("int8", None, 1), ("int8", None, 3)],
)
def test_onnx_prefix_graphs_match_torch(stacked_path, sentences, tmp_path, precision, fused, student_threads):
    """Every prefix, run as one graph or as the students' own graphs side by side, is the torch one."""
    from bertserve import Encoder
    from bertserve.artifact import load_manifest
    from bertserve.export.ensemble import export_ensemble_onnx

    ref = Encoder.load(stacked_path, backend="torch")
    folder, manifest = load_manifest(stacked_path)
    onnx_dir = export_ensemble_onnx(folder, manifest, tmp_path / precision, precision=precision, fused=fused)
    assert json.loads((onnx_dir / "bertserve.json").read_text())["provenance"]["export"]["students"] == (
        "fused" if fused else "unrolled")
    enc = Encoder.load(onnx_dir, student_threads=student_threads)
    assert enc.backend.max_students == 3
    side_by_side = student_threads > 1 and not fused  # fused (GPU) exports hold no per-student graphs
    assert (enc.backend.side is not None) == side_by_side
    assert enc.backend.student_threads == (student_threads if side_by_side else 1)
    own_graph = [m for m in (1, 2, 3) if not (side_by_side and 1 < m <= student_threads)]
    assert sorted(enc.backend.runners) == own_graph  # prefixes run side by side load no graph of their own
    assert [s.term is not None for s in enc.manifest.students] == [not fused] * 3
    sizes = [(onnx_dir / s.path).stat().st_size for s in enc.manifest.students]
    assert sizes == sorted(sizes)  # a longer prefix is a bigger graph: fewer students cost less
    for m in (1, 2, 3):
        want, got = ref.embed(sentences[:16], students=m), enc.embed(sentences[:16], students=m)
        if precision == "fp32":
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:
            assert (got * want).sum(1).min() > 0.97


def _whole_loss(model, data) -> float:
    """The refit's objective for the whole sum (embedder: squared error + 1 − cosine), on ``data``."""
    import torch

    from bertserve.compress.distill import embed_loss
    from bertserve.compress.refit import prefix_sums
    from bertserve.compress.students import predict

    sums = prefix_sums(model, torch.from_numpy(predict(model, data.ids)))
    return float(embed_loss(sums[-1:], torch.from_numpy(data.targets)))


def test_prefix_outputs_are_the_served_prefixes(stacked_path, texts, fast_opts):
    """The refit's and the report's prefix sums are what serving ``students=m`` answers."""
    from bertserve import Encoder
    from bertserve.artifact import load_manifest
    from bertserve.compress.refit import prefix_outputs
    from bertserve.compress.transfer import setup, transfer_set
    from bertserve.models.ensemble import load_ensemble

    model = load_ensemble(*load_manifest(stacked_path))
    data = transfer_set(setup(None, None), texts["eval"][:12], fast_opts)
    got = prefix_outputs(model, data)
    enc = Encoder.load(stacked_path, backend="torch")
    for m in (1, 2, 3):
        want = enc.run_ids(data.ids, students=m)
        np.testing.assert_allclose(got[m - 1], want, atol=1e-5)


def test_refit_lowers_the_whole_ensembles_loss_on_real_data(stacked_path, texts, fast_opts):
    import dataclasses

    from bertserve.artifact import load_manifest
    from bertserve.compress.refit import refit
    from bertserve.compress.transfer import setup, transfer_set
    from bertserve.models.ensemble import load_ensemble

    model = load_ensemble(*load_manifest(stacked_path))
    alphas = model.alpha.clone()
    data = transfer_set(setup(None, None), texts["transfer"], fast_opts)
    before = _whole_loss(model, data)
    opts = dataclasses.replace(fast_opts, max_steps=12, lr=1e-4)
    refit(model, data, "embed", opts, prefix_weight=0.5)
    after = _whole_loss(model, data)
    assert after < before, (before, after)
    assert (model.alpha == alphas).all()  # α stays the boosting step: only the students move
    embeddings = load_ensemble(*load_manifest(stacked_path)).embeddings.state_dict()
    for name, tensor in model.embeddings.state_dict().items():
        assert (tensor.cpu() == embeddings[name]).all(), name  # frozen, shared by every student


def test_refit_rejects_bad_requests(stacked_path, texts, fast_opts, tmp_path):
    from bertserve.artifact import load_manifest
    from bertserve.compress.refit import RefitOptions, refit, refit_artifact
    from bertserve.errors import ConfigError
    from bertserve.models.ensemble import load_ensemble

    with pytest.raises(ConfigError, match="4 students|3 students"):
        refit_artifact(stacked_path, texts["transfer"][:20], tmp_path / "r", students=4, opts=fast_opts)
    with pytest.raises(ConfigError, match="student ensemble"):
        refit_artifact(None, texts["transfer"][:20], tmp_path / "r", opts=fast_opts)
    model = load_ensemble(*load_manifest(stacked_path))
    with pytest.raises(ConfigError, match="prefix weight"):
        refit(model, None, "embed", fast_opts, prefix_weight=-1)  # type: ignore[arg-type]
    assert RefitOptions(epochs=2).train_options(fast_opts).lr == fast_opts.lr


def test_cli_stack_and_distill(tmp_path):
    from typer.testing import CliRunner

    from bertserve import Encoder
    from bertserve.cli import _register, app

    _register()
    runner = CliRunner()
    common = ["--n", "48", "--eval-n", "16", "--max-steps", "1", "--max-len", "24", "--threads", "1"]
    res = runner.invoke(app, ["stack", str(tmp_path / "s"), "-k", "2", "-l", "1", *common])
    assert res.exit_code == 0, res.output
    assert "residual" in res.output
    refit_opt = ["--refit-epochs", "1"]
    res = runner.invoke(app, ["stack", str(tmp_path / "sr"), "-k", "2", "-l", "1", *refit_opt, *common])
    assert res.exit_code == 0, res.output
    hyper = json.loads((tmp_path / "sr" / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
    assert hyper["refit"]["epochs"] == 1 and len(hyper["boosted_quality"]) == 2
    assert len(hyper["refit_validation_residuals"]) == 2 and hyper["refit_steps"] == 1
    res = runner.invoke(app, ["refit", str(tmp_path / "s"), str(tmp_path / "r"), "-k", "1", *common])
    assert res.exit_code == 0, res.output
    assert "before the refit, 1 student(s)" in res.output
    refitted = json.loads((tmp_path / "r" / "bertserve.json").read_text())
    assert len(refitted["students"]) == 1 and refitted["provenance"]["method"] == "stack-refit"
    res = runner.invoke(app, ["refit", str(tmp_path / "s"), str(tmp_path / "r2"), "-k", "3", *common])
    assert res.exit_code != 0 and "holds 2 students" in str(res.exception)  # main() prints it
    res = runner.invoke(app, ["distill", str(tmp_path / "d"), "--layers", "1", "--augment", "1", *common])
    assert res.exit_code == 0, res.output
    assert "augmented copies" in res.output
    assert Encoder.load(tmp_path / "s", backend="torch").embed(["hello there"]).shape == (1, 384)
    assert Encoder.load(tmp_path / "d", backend="torch").embed(["hello there"]).shape == (1, 384)


def test_training_precision_and_device_choices():
    import torch

    from bertserve.compress.training import autocast_dtype
    from bertserve.compress.transfer import TrainOptions
    from bertserve.errors import ConfigError
    from bertserve.runtime.torch_backend import pick_device

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert autocast_dtype(cpu, "auto") is (torch.bfloat16 if native else None)
    with pytest.raises(ConfigError, match="precision"):
        autocast_dtype(cpu, "fp8")
    assert pick_device(TrainOptions(device="cpu").device) == cpu
    assert pick_device(TrainOptions().device).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            pick_device(TrainOptions(device="cuda").device)


@pytest.mark.parametrize(
    ("how", "layers", "want"),
    [("spread", 2, [0, 5]), ("spread", 1, [5]), ("spread", 3, [0, 2, 5]), ("bottom", 2, [0, 1]),
     ("top", 2, [4, 5]), ("1,3", 2, [1, 3])],
)
def test_students_start_from_the_chosen_checkpoint_layers(how, layers, want):
    from bertserve.compress.students import new_students
    from bertserve.compress.teacher import bert_state
    from bertserve.compress.transfer import TrainOptions, setup

    s = setup(None, None)
    model = new_students(s, 1, layers, TrainOptions(init_layers=how))
    _, state = bert_state(s.init_dir)
    for layer, i in zip(model.layers, want, strict=True):
        np.testing.assert_array_equal(
            layer.ff1_w[0].detach().numpy(), state[f"encoder.layer.{i}.intermediate.dense.weight"].T.numpy()
        )


@pytest.mark.parametrize("how", ["middle", "0", "0,6", "a,b"])
def test_bad_init_layers_are_config_errors(how):
    from bertserve.compress.students import new_students
    from bertserve.compress.transfer import TrainOptions, setup
    from bertserve.errors import ConfigError

    with pytest.raises(ConfigError, match="init layers"):
        new_students(setup(None, None), 1, 2, TrainOptions(init_layers=how))
