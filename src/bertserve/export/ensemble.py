"""ONNX export of a student ensemble: one graph per prefix size, so fewer students cost less.

Each graph ``students-m.onnx`` runs the first m students and sums them; entry k of the
manifest's ``students`` points to the graph that ends with student k.

Fused or unrolled, measured (``benchmarks/students.py parallel``, 2 CPU cores): in ONNX
Runtime on CPU the students *unrolled* into parallel branches of 2-D matmuls are faster than
the horizontally fused graph (3-D batched matmuls over stacked weights), ≈ 2× at batch 1 for
4 one-layer students, because MLAS's 2-D GEMM beats its batched MatMul. So CPU graphs
(fp32, INT8) are unrolled; INT8 must be anyway, since dynamic quantisation cannot give 3-D
weights per-channel scales. fp16 graphs (CUDA) stay fused: one wide kernel per step is
what a GPU runs best. The torch backend always runs the fused module.

A single graph with a run-time ``students`` input would have to slice its weight tensors on
every call (a copy of all weights); separate graphs cost disk (the shared embeddings are
repeated) but nothing at run time.

Side by side: CPU exports also hold ``embeddings.onnx`` (token ids → embedded tokens, run once)
and one *term* graph per student (embedded tokens → α_k·S_k(x), not normalised), so a backend
with ``student_threads`` > 1 runs students in separate sessions on separate threads and adds
their terms up. ONNX Runtime's own parallel executor, running the branches of one unrolled
graph at once, measured no faster than running them in sequence; separate sessions on
separate threads do overlap (``benchmarks/students.py parallel``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..artifact import EMBEDDINGS_GRAPH, Manifest, StudentEntry, copy_tokenizer, save_manifest
from ..errors import ConfigError
from ..models.ensemble import StudentEnsemble, load_ensemble
from .graph import OPSET, quantize_int8_dynamic, sample_inputs, trace_graph, trace_to_onnx


class Unrolled(torch.nn.Module):
    """Traces the students one by one (2-D matmuls) instead of fused."""

    def __init__(self, model: StudentEnsemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.forward_one_by_one(input_ids, attention_mask, token_type_ids=token_type_ids)


class EmbedTokens(torch.nn.Module):
    """The shared embeddings alone: input_ids[, token_type_ids] → embedded tokens (B, T, H)."""

    def __init__(self, model: StudentEnsemble) -> None:
        super().__init__()
        self.embeddings = model.embeddings

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.embeddings(input_ids, token_type_ids)


class StudentTerm(torch.nn.Module):
    """Student k's own term of the sum, α_k·S_k, from the embedded tokens (not normalised)."""

    def __init__(self, model: StudentEnsemble, k: int) -> None:
        super().__init__()
        self.student = model.select(k, k + 1)  # its weights alone, so the graph holds no others

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = self.student
        last = s.hidden_from(hidden, attention_mask, 0, 1)[-1]
        return s.alpha[0] * s.head(last, attention_mask, 0, 1)[0]  # (B, D)


def export_side_by_side(model: StudentEnsemble, out: Path, tmp: Path, *, int8: bool,
                        pairs: bool = False) -> list[str]:
    """Write ``embeddings.onnx`` and one term graph per student; return the term graphs' names.

    For pairs the embeddings graph takes ``token_type_ids`` too; the terms start from its output.
    """
    ids, mask, *types = sample_inputs(pairs=pairs)
    names_in = ["input_ids", "token_type_ids"] if pairs else ["input_ids"]
    trace_graph(EmbedTokens(model), (ids, *types), names_in, out / EMBEDDINGS_GRAPH,
                output_axes={0: "batch", 1: "sequence"})
    hidden = model.embeddings(ids, *types).detach()
    names = []
    for k in range(model.num_students):
        name = f"student-{k + 1}.onnx"
        raw = tmp / f"term-{name}" if int8 else out / name
        trace_graph(StudentTerm(model, k), (hidden, mask), ["hidden", "attention_mask"], raw)
        if int8:
            quantize_int8_dynamic(raw, out / name)
        names.append(name)
    return names


def export_ensemble_onnx(
    folder: Path, manifest: Manifest, out: Path, *, precision: str, fused: bool | None = None
) -> Path:
    """Write an onnxruntime student-ensemble artifact for the torch one in ``folder``."""

    if precision not in ("fp32", "int8", "fp16"):
        raise ConfigError(f"ensemble export supports fp32, int8 and fp16, not {precision!r}")
    fused = precision == "fp16" if fused is None else fused
    model = load_ensemble(folder, manifest).float()
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in range(1, model.num_students + 1):
            raw = Path(tmp) / f"raw-{m}.onnx"
            prefix = model.prefix(m)
            trace_to_onnx(prefix if fused else Unrolled(prefix), raw, pairs=manifest.pairs)
            final = out / f"students-{m}.onnx"
            if precision == "int8":
                quantize_int8_dynamic(raw, final)
            elif precision == "fp16":
                import onnx
                from onnxruntime.transformers.float16 import convert_float_to_float16

                onnx.save(convert_float_to_float16(onnx.load(str(raw)), keep_io_types=True), str(final))
            else:
                shutil.copy2(raw, final)
            entries.append(StudentEntry(path=final.name, alpha=manifest.students[m - 1].alpha))  # type: ignore[index]
        if not fused:  # CPU graphs: students can also run side by side (fused fp16 is one kernel anyway)
            terms = export_side_by_side(model, out, Path(tmp), int8=precision == "int8", pairs=manifest.pairs)
            entries = [e.model_copy(update={"term": t}) for e, t in zip(entries, terms, strict=True)]
    new = Manifest.model_validate(
        {
            **manifest.model_dump(),
            "backend": "onnxruntime",
            "precision": precision,
            "weights": entries[-1].path,
            "students": [e.model_dump() for e in entries],
            "tokenizer": copy_tokenizer(folder, manifest, out),
            "provenance": {
                **manifest.provenance,
                "exported_from": str(folder),
                "export": {
                    "opset": OPSET,
                    "graphs": "one per prefix size",
                    "precision": precision,
                    "students": "fused" if fused else "unrolled",
                    "side_by_side": None if fused else f"{EMBEDDINGS_GRAPH} + one term graph per student",
                    "quantization": "dynamic int8, per-channel" if precision == "int8" else None,
                },
            },
        }
    )
    save_manifest(out, new)
    return out
