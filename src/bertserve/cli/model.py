"""One-shot commands on a model: embed, classify, rerank, inspect, export."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import BackendOpt, DeviceOpt, ModelArg, PrecisionOpt, ThreadsOpt

out = Console()


def _load(model, backend, precision, device, threads):
    from ..encoder import Encoder

    return Encoder.load(model, backend=backend, precision=precision, device=device, threads=threads)


def _expect(enc, task: str) -> None:
    """The CLI's own words for the wrong command (the Python API names its methods)."""
    from ..errors import InputError

    if enc.task != task:
        kind, other = {"classify": ("a classifier", "classify"), "rerank": ("a reranker", "rerank")}.get(
            enc.task, ("an embedder", "embed"))
        raise InputError(f"model {enc.manifest.name!r} is {kind}: use `bertserve {other}`")


@app.command()
def embed(
    texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
    model: ModelArg = None,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Embed TEXTS and print JSON: {"model", "dim", "embeddings"}."""
    enc = _load(model, backend, precision, device, threads)
    _expect(enc, "embed")
    vectors = enc.embed(list(texts))
    print(
        json.dumps(
            {
                "model": enc.manifest.name,
                "dim": int(vectors.shape[1]),
                "embeddings": vectors.astype(float).round(6).tolist(),
            }
        )
    )


@app.command()
def classify(
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    model: ModelArg = None,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Classify TEXTS with a classifier artifact and print JSON predictions."""
    enc = _load(model, backend, precision, device, threads)
    _expect(enc, "classify")
    preds = enc.classify(list(texts))
    print(
        json.dumps(
            {
                "model": enc.manifest.name,
                "results": [
                    {"label": p.label, "score": p.score, "probabilities": p.probabilities} for p in preds
                ],
            }
        )
    )


@app.command()
def rerank(
    query: Annotated[str, typer.Argument(help="The query.")],
    documents: Annotated[list[str], typer.Argument(help="Documents to rank against the query.")],
    model: ModelArg = None,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Rank DOCUMENTS for QUERY with a cross-encoder; print JSON [{index, score}] best first
    (score = the model's raw logit)."""
    enc = _load(model, backend, precision, device, threads)
    _expect(enc, "rerank")
    scores = enc.score(query, list(documents))
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    print(json.dumps({"model": enc.manifest.name,
                      "results": [{"index": i, "score": float(scores[i])} for i in order]}))


def count_parameters(folder: Path, weights: str) -> int:
    """Parameters stored in the artifact's safetensors or ONNX initialisers (no weights loaded)."""
    path = folder / weights
    total = 0
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return sum(math.prod(init.dims) for init in graph.initializer)
    from safetensors import safe_open

    for f in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a dict
                total += math.prod(st.get_slice(key).get_shape())
    return total


@app.command()
def inspect(
    artifact: Annotated[
        str | None, typer.Argument(help="Artifact or HF checkpoint (default: bundled).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show an artifact's manifest, size on disk and parameter count."""
    from ..artifact import folder_size, load_manifest
    from ..export.choose import eligible
    from ..export.prepare import recorded_choices

    folder, manifest = load_manifest(artifact)
    info = manifest.model_dump(mode="json", exclude_none=True)
    info["path"] = str(folder)
    info["size_bytes"] = folder_size(folder)
    info["parameters"] = count_parameters(folder, manifest.weights)
    if eligible(manifest):  # what backend=auto measured and chose here, per worker threads
        choices = recorded_choices(folder, manifest)
        info["backend_auto"] = ({("all cores" if t is None else f"{t} thread{'s' * (t > 1)}"): c.summary()
                                 for t, c in choices.items()}
                                or "not measured on this machine yet (a server with backend auto measures "
                                   "at start-up)")
    if as_json:
        print(json.dumps(info, indent=2))
        return
    table = Table(title=f"bertserve artifact: {manifest.name}", show_header=False)
    for key, value in info.items():
        if key == "size_bytes":
            value = f"{value / 1e6:.1f} MB"
        elif key == "parameters":
            value = f"{value / 1e6:.2f} M"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)
        table.add_row(key, str(value))
    out.print(table)


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="Artifact or HF checkpoint to export ('default' = bundled).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the new ONNX artifact.")],
    backend: Annotated[str, typer.Option(help="Target runtime (onnxruntime).")] = "onnxruntime",
    precision: Annotated[
        str, typer.Option(help="fp32 | int8 (dynamic, per-channel) | fp16 (CUDA).")
    ] = "fp32",
    fuse: Annotated[bool, typer.Option(help="Fuse attention/LayerNorm/GELU kernels.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
) -> None:
    """Export MODEL to an ONNX artifact in OUT (graph-optimised, optionally INT8)."""
    from ..errors import ConfigError
    from ..export.onnx import export_onnx

    if backend != "onnxruntime":
        raise ConfigError(f"export writes onnxruntime artifacts; got --backend {backend}")
    with out.status(f"exporting {model} to ONNX ({precision})..."):
        path = export_onnx(model, out_dir, precision=precision, fuse=fuse, overwrite=overwrite)
    out.print(f"[green]wrote[/green] {path}")
