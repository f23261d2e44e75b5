"""backend auto on CPU: the installed runtimes are timed once and the fastest lossless one runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bertserve.encoder import Encoder
from bertserve.export import choose
from bertserve.export.prepare import prepare, recorded_choices
from bertserve.runtime import BackendOptions


@pytest.fixture
def measuring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("BERTSERVE_AUTO_MEASURE", "1")
    monkeypatch.setenv("BERTSERVE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_auto_serves_the_fastest_candidate_that_keeps_the_outputs(measuring: Path, onnx_fp32: Path,
                                                                  sentences: list[str],
                                                                  st_reference: np.ndarray) -> None:
    folder, manifest, backend, precision = prepare(onnx_fp32, BackendOptions(threads=1))
    (saved,) = (measuring / "choices").glob("*.json")
    choice = choose.Choice.from_json(json.loads(saved.read_text()))
    assert (choice.backend, choice.precision) == (backend, precision or "fp32")
    ran = [c for c in choice.candidates if c.error is None]
    assert {(c.backend, c.precision) for c in ran} >= {("onnxruntime", "fp32"), ("openvino", "fp32")}
    picked = next(c for c in ran if (c.backend, c.precision) == (choice.backend, choice.precision))
    assert picked.fidelity >= choose.LOSSLESS
    assert all(c.ms >= picked.ms / choose.MARGIN or c.fidelity < choose.LOSSLESS for c in ran)
    # what Encoder.load(auto) runs is that choice, and it is still the model
    enc = Encoder.load(onnx_fp32, threads=1)
    assert enc.backend.name == choice.backend
    got = enc.embed(sentences[:32])
    assert float((got * st_reference[:32]).sum(1).mean()) > choose.LOSSLESS
    text = saved.read_text().replace(f'"backend": "{choice.backend}"', '"backend": "onnxruntime"', 1)
    saved.write_text(text.replace(f'"precision": "{choice.precision}"', '"precision": "fp32"', 1))
    assert prepare(onnx_fp32, BackendOptions(threads=1))[2] == "onnxruntime"  # cached: not measured again


def test_a_lossy_candidate_is_never_chosen(monkeypatch: pytest.MonkeyPatch, measuring: Path,
                                           onnx_fp32: Path) -> None:
    """Were OpenVINO ten times faster but off by more than the bar, onnxruntime would still run."""
    real = choose.fidelity
    monkeypatch.setattr(choose, "fidelity", lambda out, ref: 0.999 if out is not ref else real(out, ref))
    monkeypatch.setattr(choose, "MARGIN", 0.0)  # any candidate "faster"
    _, manifest = prepare(onnx_fp32, BackendOptions(backend="onnxruntime"))[:2]
    assert choose.measure(onnx_fp32, manifest, 1).backend == "onnxruntime"


def test_auto_stays_fixed_where_it_does_not_measure(monkeypatch: pytest.MonkeyPatch, measuring: Path,
                                                    onnx_int8: Path, onnx_fp32: Path) -> None:
    assert prepare(onnx_int8, BackendOptions())[2] == "onnxruntime"  # INT8 is asked for, never chosen
    assert prepare(onnx_fp32, BackendOptions(auto_measure=False))[2] == "onnxruntime"
    monkeypatch.setenv("BERTSERVE_AUTO_MEASURE", "0")
    assert prepare(onnx_fp32, BackendOptions())[2] == "onnxruntime"
    assert not (measuring / "choices").exists()


def test_fidelity_of_scores_is_centred() -> None:
    ref = np.array([[0.1], [0.5], [-0.3], [0.9]], np.float32)
    assert choose.fidelity(ref + 1e-4, ref) > 0.9999
    assert choose.fidelity(ref[::-1].copy(), ref) < 0.5  # the same values, another order


def test_inspect_shows_what_auto_chose_for_a_checkpoint(measuring: Path) -> None:
    """A torch checkpoint's choice is its cached export's; `inspect` reports it, and says when none is."""
    from typer.testing import CliRunner

    from bertserve.artifact import load_manifest
    from bertserve.cli import _register, app

    _register()

    def inspected() -> object:
        result = CliRunner().invoke(app, ["inspect", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["backend_auto"]

    assert inspected().startswith("not measured")
    _, _, backend, precision = prepare(None, BackendOptions(threads=1))
    recorded = recorded_choices(*load_manifest(None))
    assert list(recorded) == [1]
    assert (recorded[1].backend, recorded[1].precision) == (backend, precision or "fp32")
    assert inspected() == {"1 thread": recorded[1].summary()}
