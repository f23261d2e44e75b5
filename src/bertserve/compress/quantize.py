"""Quantisation into a new artifact: bf16/fp16 and torch INT8 (torch), dynamic/static INT8 (ONNX),
NNCF INT8 (OpenVINO).

- ``bf16`` / ``fp16``: weights stored at half width, run by the torch backend (bf16 uses
  AVX-512-BF16/AMX on CPU; fp16 is for CUDA).
- ``torch-int8``: torch dynamic INT8 of every linear, applied when the artifact loads — the
  fallback where onnxruntime is not wanted. The stored weights stay fp32 (torch's packed
  INT8 tensors have no safetensors form).
- ``dynamic-int8``: ONNX Runtime dynamic quantisation, per-channel INT8 weights, activations
  quantised per call. Only weight MatMuls are quantised: the embedding Gather and the
  attention score MatMuls (two activations) stay fp32, which is where accuracy was lost.
- ``static-int8``: activation ranges calibrated on the real tokens of real text, per-channel
  S8 weights, U8 activations. Two formats: ``integer`` (default) freezes the calibrated scales
  into the integer MatMul graph, so no range is computed per call; ``qdq`` writes the portable
  QDQ graph (MinMax/entropy/percentile via onnxruntime). On onnxruntime 1.31 CPU the QDQ graph
  runs its weight MatMuls as weight-only MatMulNBits (fp32 activations): more accurate,
  but not INT8 GEMM, so slower. Percentile clipping hurts MiniLM (its outlier features carry
  meaning: cosine 0.91 at 99.99%), so MinMax is the default.
- ``ov-int8``: NNCF post-training quantisation (``ModelType.TRANSFORMER``) of the fp32 export,
  calibrated on real texts, written as an OpenVINO IR (``model.xml``) run by the openvino
  backend; so a server never calibrates at start-up. A student ensemble gets one IR per
  prefix (``students-m.xml``). Issue 21 measured it as fast as ``static-int8`` on onnxruntime
  or faster, at a third of its error (cosine 0.997 to fp32).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..artifact import Manifest, load_manifest, save_manifest, staged_out
from ..errors import ArtifactError, ConfigError
from ..runtime.base import pair_types
from ..tokenizer import TextTokenizer
from .artifacts import finish, load_torch_source, read_config, read_state, write_weights

Method = Literal["bf16", "fp16", "torch-int8", "dynamic-int8", "static-int8", "ov-int8"]
METHODS: tuple[str, ...] = ("bf16", "fp16", "torch-int8", "dynamic-int8", "static-int8", "ov-int8")
Calibration = Literal["minmax", "entropy", "percentile"]


@dataclass(slots=True, frozen=True)
class QuantizeConfig:
    """method: see module doc. calibration/calibration_texts/corpus: static-int8 and ov-int8
    (ov-int8 uses NNCF's own range estimation, not ``calibration``).
    percentile: the percentile kept by ``percentile`` calibration.
    exclude: ONNX node-name substrings left in fp32 (e.g. a sensitive layer's FFN output).
    format: ``integer`` (static activation scales frozen into integer MatMuls: the fast CPU
    path) or ``qdq`` (portable QuantizeLinear/DequantizeLinear pairs for other runtimes).
    preset: ov-int8's NNCF preset: ``performance`` (symmetric activations; the faster IR in
    ``benchmarks/latency.py``) or ``mixed`` (asymmetric activations; NNCF's transformer default)."""

    method: Method = "static-int8"
    calibration: Calibration = "minmax"
    calibration_texts: int = 256
    corpus: str = "tweets"
    percentile: float = 99.99
    exclude: tuple[str, ...] = field(default_factory=tuple)
    format: str = "integer"
    preset: Literal["performance", "mixed"] = "performance"

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantize method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.calibration not in ("minmax", "entropy", "percentile"):
            raise ConfigError(f"calibration must be minmax, entropy or percentile, not {self.calibration!r}")
        if self.format not in ("integer", "qdq"):
            raise ConfigError(f"format must be 'integer' or 'qdq', not {self.format!r}")
        if self.format == "integer" and self.calibration == "entropy":
            raise ConfigError("entropy calibration is available with format 'qdq'; "
                              "the integer format supports minmax and percentile")
        if self.preset not in ("performance", "mixed"):
            raise ConfigError(f"preset must be 'performance' or 'mixed', not {self.preset!r}")
        if self.calibration_texts < 1:
            raise ConfigError("calibration_texts must be at least 1")


def weight_matmuls(model_path: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """MatMul nodes whose second input is a weight initializer.

    MatMuls of two activations (attention scores) stay fp32: they hold no weights to shrink and
    their ranges swing with the input.
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits
            and not any(x in n.name for x in exclude)]


def quantize_embeddings(path: Path, min_rows: int = 1024) -> int:
    """Store large embedding tables as INT8 with one scale per row; returns tables converted.

    ``Gather(W)`` becomes ``Cast(Gather(W_int8)) * Gather(scale)``: only the looked-up rows are
    dequantised. (QDQ's own Gather quantisation dequantises the whole table on every call, which
    costs ~3 ms for MiniLM's 30k × 384 words.) The word table is half of MiniLM's bytes.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = 0
    for node in list(graph.node):
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        if table is None or len(table.dims) != 2 or table.dims[0] < min_rows:
            continue
        w = numpy_helper.to_array(table).astype(np.float32)
        scale = (np.abs(w).max(axis=1, keepdims=True) / 127.0).clip(min=1e-12).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        base = table.name
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(q, base + "_int8"),
                                  numpy_helper.from_array(scale, base + "_row_scale")])
        ids, out = node.input[1], node.output[0]
        graph.node.remove(node)
        graph.node.extend([
            helper.make_node("Gather", [base + "_int8", ids], [out + "_q"], name=node.name + "_q"),
            helper.make_node("Cast", [out + "_q"], [out + "_f"], to=onnx.TensorProto.FLOAT),
            helper.make_node("Gather", [base + "_row_scale", ids], [out + "_s"], name=node.name + "_s"),
            helper.make_node("Mul", [out + "_f", out + "_s"], [out], name=node.name + "_dq"),
        ])
        done += 1
    if done:
        sort_graph(graph)
        onnx.save(model, str(path))
    return done


def sort_graph(graph) -> None:  # type: ignore[no-untyped-def]
    """Topologically re-order nodes (ONNX requires producers before consumers)."""
    produced = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in produced for i in n.input)]
        if not ready:
            raise ArtifactError("cannot order the quantised graph (a cycle or a missing input)")
        for n in ready:
            ordered.append(n)
            produced.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def quantize_dynamic_onnx(src: Path, dst: Path, exclude: tuple[str, ...] = ()) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # the quantizer warns through the root logger
    quantize_dynamic(
        str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(src, exclude),
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


class TextCalibration:
    """Feeds real, tokenised texts to the calibrator in batches of one fixed shape.

    The histogram calibrators stack every batch's activations, so all batches share the
    width ``width`` (texts cut to it, shorter ones padded and masked). A pair model's
    calibration texts come with ``pairs`` (cut longest-first to ``width``) and feed
    ``token_type_ids`` too.
    """

    def __init__(self, tok: TextTokenizer, texts: list[str], batch_size: int = 16, width: int = 64,
                 pairs: list[str] | None = None) -> None:
        if pairs is not None:
            enc = tok.encode(texts, pairs=pairs, max_length=width)
            ids, starts = enc.ids, enc.type_starts
        else:
            ids = [row[: width - 1] + row[-1:] if len(row) > width else row for row in tok.encode(texts).ids]
            starts = None
        n = len(ids) - len(ids) % batch_size or len(ids)
        input_ids = np.full((n, width), tok.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, row in enumerate(ids[:n]):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
            if starts is not None:
                types[i, starts[i] : len(row)] = 1
        self.batches = [(input_ids[i : i + batch_size], mask[i : i + batch_size], types[i : i + batch_size])
                        for i in range(0, n, batch_size)]
        self.pairs = pairs is not None
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.batches):
            return None
        ids, mask, types = self.batches[self.pos]
        self.pos += 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.pairs:
            feeds["token_type_ids"] = types
        return feeds

    def rewind(self) -> None:
        self.pos = 0


def quantize_static_onnx(src: Path, dst: Path, calib: TextCalibration, config: QuantizeConfig) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    logging.getLogger().setLevel(logging.ERROR)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibration]
    quantize_static(
        str(src), str(dst), calib, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"], nodes_to_quantize=weight_matmuls(src, config.exclude),
        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=method,
        extra_options={"DefaultTensorType": TensorProto.FLOAT, "CalibPercentile": config.percentile,
                       "CalibMovingAverage": config.calibration == "minmax"},
    )


def calibrate_ranges(src: Path, names: list[str], calib: TextCalibration,
                     config: QuantizeConfig) -> dict[str, tuple[float, float]]:
    """Ranges of the tensors ``names`` over the *real* tokens of the calibration texts.

    minmax keeps the extremes; percentile clips both tails at ``percentile`` (outliers in
    MiniLM's FFN activations would otherwise waste most of the 256 levels).
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    so.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    calib.rewind()
    while (feeds := calib.get_next()) is not None:
        values = session.run(names, feeds)
        real = feeds["attention_mask"].astype(bool)  # (B, T)
        for name, v in zip(names, values, strict=True):
            rows = v[real] if v.ndim == 3 and v.shape[:2] == real.shape else v.reshape(-1, v.shape[-1])
            flat = rows.ravel()
            samples[name].append(flat if flat.size <= 200_000 else rng.choice(flat, 200_000, replace=False))
            samples[name].append(np.array([flat.min(), flat.max()], dtype=np.float32))
    ranges = {}
    for name, parts in samples.items():
        data = np.concatenate(parts)
        if config.calibration == "minmax":
            ranges[name] = (float(data.min()), float(data.max()))
        else:
            p = config.percentile
            ranges[name] = (float(np.percentile(data, 100 - p)), float(np.percentile(data, p)))
    return ranges


def dynamic_inputs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({n.input[0] for n in graph.node if n.op_type == "DynamicQuantizeLinear"})


def freeze_activation_scales(dynamic: Path, ranges: dict[str, tuple[float, float]]) -> int:
    """Turn a dynamic INT8 graph static: each DynamicQuantizeLinear becomes a QuantizeLinear with
    calibrated constants, so the integer MatMuls stay but no range is computed per call.

    Why not QDQ on CPU: onnxruntime ≥ 1.2x fuses DQ(int8 weight)→MatMul into MatMulNBits, a
    weight-only kernel with fp32 activations, which is slower than integer GEMM (VNNI).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(dynamic))
    graph = model.graph
    frozen = 0
    for node in list(graph.node):
        if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in ranges:
            continue
        lo, hi = ranges[node.input[0]]
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max(hi - lo, 1e-8) / 255.0
        zp = int(np.clip(round(-lo / scale), 0, 255))
        q, s_name, z_name = node.output
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), s_name),
                                  numpy_helper.from_array(np.array(zp, dtype=np.uint8), z_name)])
        idx = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(idx, helper.make_node("QuantizeLinear", [node.input[0], s_name, z_name], [q],
                                                name=node.name + "_static"))
        frozen += 1
    onnx.save(model, str(dynamic))
    return frozen


def quantize_torch(folder: Path, out: Path, config: QuantizeConfig) -> Path:
    """bf16 / fp16 / torch-int8: a torch artifact with its precision set."""
    folder, manifest = load_torch_source(folder)
    weights = folder / manifest.weights
    state = read_state(weights)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.method)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    slim_file = weights / "slim.json"
    slim = None
    if slim_file.exists():
        import json

        slim = json.loads(slim_file.read_text())
    write_weights(out, state, read_config(weights), slim)
    precision = {"bf16": "bf16", "fp16": "fp16", "torch-int8": "int8"}[config.method]
    step = {"step": "quantize", "config": asdict(config)}
    if config.method == "torch-int8":
        step["note"] = "fp32 weights stored; torch dynamic INT8 is applied to every linear at load"
    finish(folder, manifest, out, step, precision=precision, backend="torch")
    return out


def quantize(src: str | Path | None, out: str | Path, config: QuantizeConfig = QuantizeConfig(),
             *, overwrite: bool = False) -> Path:
    """Quantise the torch artifact ``src`` into a new artifact at ``out``.

    ``out`` appears only when the whole artifact is written; a failed run leaves it as it was.
    """
    config.check()
    _, source = load_manifest(src)
    if source.architecture == "student-ensemble" and source.backend == "torch":
        return quantize_ensemble(src, out, config, overwrite=overwrite)
    folder, manifest = load_torch_source(src)
    texts = calibration_texts(config, manifest) if config.method in ("static-int8", "ov-int8") else None
    with staged_out(out, overwrite=overwrite) as tmp:
        if config.method in ("bf16", "fp16", "torch-int8"):
            quantize_torch(folder, tmp, config)
        elif config.method == "ov-int8":
            quantize_openvino(folder, manifest, tmp, config, texts or [])
        else:
            quantize_onnx(folder, manifest, tmp, config, texts)
    return Path(out)


def calibration_texts(config: QuantizeConfig, manifest: Manifest) -> list[str]:
    """The texts static-int8 and ov-int8 calibrate on, read (and checked) before any slow work:
    the corpus's tail (training uses its head), or a pair model's queries."""
    from ..data import corpus

    if manifest.pairs:  # (query, passage) pairs; the passages come with calibration_pairs
        return calibration_pairs(config, config.calibration_texts)[0]
    return corpus(config.corpus)[-config.calibration_texts:]


def quantize_ensemble(src: str | Path, out: str | Path, config: QuantizeConfig, *, overwrite: bool) -> Path:
    """INT8 of a student ensemble, the step recorded. dynamic-int8: its ONNX export at INT8 (every
    prefix and student graph with per-channel INT8 weights, activation scales per call); ov-int8:
    every prefix graph quantised by NNCF into an OpenVINO IR (:func:`quantize_openvino`)."""
    from ..export.onnx import export_onnx

    if config.method not in ("dynamic-int8", "ov-int8"):
        raise ConfigError(f"a student ensemble quantises with dynamic-int8 (ONNX) or ov-int8 (OpenVINO), "
                          f"not {config.method}; or run it at fp32/bf16")
    folder, manifest = load_manifest(src)
    if config.method == "ov-int8":
        texts = calibration_texts(config, manifest)
        with staged_out(out, overwrite=overwrite) as tmp:
            quantize_openvino(folder, manifest, tmp, config, texts)
        return Path(out)
    path = export_onnx(folder, out, precision="int8", overwrite=overwrite)
    _, manifest = load_manifest(path)
    provenance = dict(manifest.provenance)
    provenance.setdefault("source", str(folder))
    step = {"step": "quantize", "config": asdict(config),
            "format": "integer MatMul, dynamic activation scales", "per_channel": True,
            "note": "the student ensemble's ONNX export at INT8"}
    provenance["steps"] = [*provenance.get("steps", []), step]
    save_manifest(path, manifest.model_copy(update={"provenance": provenance}))
    return path


def quantize_onnx(folder: Path, manifest: Manifest, out: Path, config: QuantizeConfig,
                  texts: list[str] | None) -> Path:
    """dynamic-int8 / static-int8 (``texts`` calibrate): an onnxruntime artifact in ``out``."""
    from ..export.onnx import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        # attention unfused: every weight MatMul gets its own (static or dynamic) activation scale
        fp32 = export_onnx(folder, Path(tmp) / "fp32", precision="fp32", fuse_attention=False)
        _, fp32_manifest = load_manifest(fp32)
        target = out / "model.onnx"
        if config.method == "dynamic-int8":
            quantize_dynamic_onnx(fp32 / "model.onnx", target, config.exclude)
        else:
            if not texts:
                raise ConfigError("static-int8 needs calibration texts")
            tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
            pairs = calibration_pairs(config, config.calibration_texts)[1] if manifest.pairs else None
            calib = TextCalibration(tok, texts, pairs=pairs)
            if config.format == "qdq":
                quantize_static_onnx(fp32 / "model.onnx", target, calib, config)
            else:
                quantize_dynamic_onnx(fp32 / "model.onnx", target, config.exclude)
                ranges = calibrate_ranges(fp32 / "model.onnx", dynamic_inputs(target), calib, config)
                freeze_activation_scales(target, ranges)
        quantize_embeddings(target)
        shutil.copytree(fp32 / fp32_manifest.tokenizer, out / "tokenizer", dirs_exist_ok=True)
    provenance = dict(manifest.provenance)
    provenance.setdefault("source", str(folder))
    fmt = {"qdq": "QDQ", "integer": "integer MatMul, static activation scales"}[config.format]
    step = {"step": "quantize", "config": asdict(config),
            "format": fmt if config.method == "static-int8" else "integer MatMul, dynamic activation scales",
            "per_channel": True}
    provenance["steps"] = [*manifest.provenance.get("steps", []), step]
    new = fp32_manifest.model_copy(update={"precision": "int8", "provenance": provenance,
                                           "weights": "model.onnx", "tokenizer": "tokenizer"})
    save_manifest(out, new)
    return out


def openvino_feeds(tok: TextTokenizer, texts: list[str], width: int = 128,
                   pairs: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """One unpadded batch per text (cut to ``width`` tokens): NNCF's ranges see only real tokens.
    A pair model's texts come with ``pairs`` and feed ``token_type_ids`` too."""
    feeds = []
    if pairs is not None:
        enc = tok.encode(texts, pairs=pairs, max_length=width)
        for row, start in zip(enc.ids, enc.type_starts or [], strict=True):
            ids = np.asarray([row], dtype=np.int64)
            types = pair_types(np.asarray([start]), np.asarray([len(row)]), len(row))
            feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": types})
        return feeds
    for row in tok.encode(texts).ids:
        row = row[: width - 1] + row[-1:] if len(row) > width else row
        ids = np.asarray([row], dtype=np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return feeds


def calibration_pairs(config: QuantizeConfig, n: int, *, head: bool = False) -> tuple[list[str], list[str]]:
    """A pair model's calibration (query, passage) pairs: the news ranking train split's (its
    tail; ``head``: its head, for a held-out check), or a .tsv ``--corpus`` of query<TAB>passage."""
    from ..data import ranking_splits
    from .texts import read_pairs

    if config.corpus.endswith(".tsv"):
        queries, passages = read_pairs(config.corpus)
    else:  # tweets, reviews… are single texts: a pair model calibrates on real pairs
        queries, passages, _ = ranking_splits()["train"].pairs()
    return (queries[:n], passages[:n]) if head else (queries[-n:], passages[-n:])


def quantize_openvino(folder: Path, manifest: Manifest, out: Path, config: QuantizeConfig,
                      texts: list[str]) -> Path:
    """ov-int8: NNCF INT8 of the fp32 export, saved as an OpenVINO IR artifact in ``out``.

    The export is unfused (plain MatMul/Softmax/LayerNorm ops), the form NNCF's transformer
    patterns match. A student ensemble's export has one graph per prefix (``students-m.onnx``):
    each is quantised on the same texts into ``students-m.xml``, so every prefix stays a valid,
    cheaper INT8 model. Quality is measured on held-out texts (cosine of the outputs to the fp32
    graph, both on OpenVINO at f32) and recorded in the step, per prefix for an ensemble.
    """
    import nncf

    from ..data import corpus
    from ..export.onnx import export_onnx

    if not texts:
        raise ConfigError("ov-int8 needs calibration texts")
    nncf.set_log_level(logging.ERROR)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    n_held = min(64, config.calibration_texts)
    if manifest.pairs:
        held_q, held_p = calibration_pairs(config, n_held, head=True)
        pairs = calibration_pairs(config, config.calibration_texts)[1]
        calib_feeds = openvino_feeds(tok, texts, pairs=pairs)
        held_feeds, held_out = openvino_feeds(tok, held_q, pairs=held_p), held_q
    else:
        held_out = corpus(config.corpus)[:n_held]  # the head: not calibrated on
        calib_feeds, held_feeds = openvino_feeds(tok, texts), openvino_feeds(tok, held_out)
    ensemble = manifest.architecture == "student-ensemble"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(folder, Path(tmp) / "fp32", precision="fp32", fuse=False)
        _, fp32_manifest = load_manifest(fp32)
        graphs = [s.path for s in fp32_manifest.students or []] if ensemble else [fp32_manifest.weights]
        quality = []
        for graph in graphs:
            target = out / ir_name(graph)  # the IR's .bin lies beside it
            nncf_int8(fp32 / graph, target, calib_feeds, config)
            quality.append(ir_agreement(fp32 / graph, target, held_feeds, manifest.pairs))
        shutil.copytree(fp32 / fp32_manifest.tokenizer, out / "tokenizer", dirs_exist_ok=True)
    provenance = dict(manifest.provenance)
    provenance.setdefault("source", str(folder))
    summary = dict(quality[-1])  # the whole model (an ensemble: every student)
    if ensemble:
        summary["per_prefix"] = quality
    step = {"step": "quantize", "config": asdict(config), "format": "OpenVINO IR, NNCF INT8 (transformer)",
            "quality": {**summary, "texts": len(held_out), "corpus": config.corpus}}
    provenance["steps"] = [*manifest.provenance.get("steps", []), step]
    update: dict[str, object] = {"precision": "int8", "backend": "openvino", "provenance": provenance,
                                 "weights": ir_name(graphs[-1]), "tokenizer": "tokenizer"}
    if ensemble:  # the prefix graphs as IRs; side by side (the term graphs) is onnxruntime's
        update["students"] = [s.model_copy(update={"path": ir_name(s.path), "term": None})
                              for s in fp32_manifest.students or []]
    save_manifest(out, fp32_manifest.model_copy(update=update))
    return out


def ir_name(graph: str | Path) -> str:
    """The OpenVINO IR file an ONNX graph of the export becomes (``students-2.onnx`` → ``students-2.xml``)."""
    return Path(graph).with_suffix(".xml").name


def nncf_int8(graph: Path, target: Path, feeds: list[dict[str, np.ndarray]], config: QuantizeConfig) -> None:
    """NNCF post-training INT8 (transformer model type) of one fp32 graph, saved as the IR ``target``."""
    import nncf
    import openvino as ov

    from ..runtime.openvino_backend import core

    model = core().read_model(str(graph))
    extra = {}
    if config.exclude:  # node-name substrings, as for the ONNX methods
        extra["ignored_scope"] = nncf.IgnoredScope(
            patterns=[f".*{re.escape(x)}.*" for x in config.exclude], validate=False)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                              preset=preset[config.preset], subset_size=len(feeds), **extra)
    ov.save_model(quantized, str(target), compress_to_fp16=False)


def ir_agreement(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]],
                 pairs: bool) -> dict[str, float]:
    """``mean_cosine_to_fp32`` of the outputs; a pair model's one score a pair:
    ``pearson_to_fp32`` of the scores over the held-out pairs instead (a cosine of one number is ±1)."""
    if not pairs:
        return {"mean_cosine_to_fp32": ir_cosine(reference, candidate, feeds)}
    from ..runtime.openvino_backend import compile_graph

    ref = compile_graph(reference, precision="fp32", threads=None)
    got = compile_graph(candidate, precision="fp32", threads=None)
    a = np.asarray([np.asarray(ref(f)[0], dtype=np.float64).ravel()[0] for f in feeds])
    b = np.asarray([np.asarray(got(f)[0], dtype=np.float64).ravel()[0] for f in feeds])
    return {"pearson_to_fp32": float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0,
            "max_abs_diff": float(np.abs(a - b).max())}


def ir_cosine(reference: Path, candidate: Path, feeds: list[dict[str, np.ndarray]]) -> float:
    """Mean cosine of ``candidate``'s outputs to ``reference``'s (both compiled at f32)."""
    from ..runtime.openvino_backend import compile_graph

    ref = compile_graph(reference, precision="fp32", threads=None)
    got = compile_graph(candidate, precision="fp32", threads=None)
    cos = []
    for feed in feeds:
        a = np.asarray(ref(feed)[0], dtype=np.float64).ravel()
        b = np.asarray(got(feed)[0], dtype=np.float64).ravel()
        cos.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    return float(np.mean(cos))
