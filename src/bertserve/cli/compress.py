"""Compression commands: quantize, prune, prune-vocab, factorize, compress (recipe + gate).

Each reads an artifact (or HF checkpoint) and writes a new artifact; none edits its input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app

out = Console()

SrcArg = Annotated[str, typer.Argument(help="Source artifact or HF checkpoint ('default' = bundled).")]
OutArg = Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the new artifact.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace OUT if it exists.")]
RecoverOpt = Annotated[int, typer.Option(min=0, help="Recovery distillation steps afterwards (0 = none).")]
TransferOpt = Annotated[str, typer.Option(help="Transfer corpus: tweets | reviews | news | a text file.")]


def _done(path: Path) -> None:
    from ..artifact import load_manifest

    _, manifest = load_manifest(path)
    steps = manifest.provenance.get("steps") or []
    out.print(f"[green]wrote[/green] {path}")
    if steps:
        out.print_json(json.dumps(steps[-1]))


@app.command()
def quantize(
    model: SrcArg,
    out_dir: OutArg,
    method: Annotated[str, typer.Option(
        help="static-int8 (ONNX INT8, activation scales calibrated on --corpus; graph per --format) | "
             "dynamic-int8 (ONNX INT8, activation scales computed per call) | ov-int8 (OpenVINO INT8 IR "
             "by NNCF, calibrated on --corpus; runs on --backend openvino) | torch-int8 | bf16 | fp16.",
    )] = "static-int8",
    calibration: Annotated[str, typer.Option(
        help="static-int8 calibration: minmax | percentile | entropy (--format qdq only).")] = "minmax",
    fmt: Annotated[str, typer.Option("--format", help=(
        "static-int8 graph: integer = integer MatMuls with the calibrated activation scales frozen in "
        "(fast on CPU) | qdq = QuantizeLinear/DequantizeLinear pairs (portable; onnxruntime CPU runs "
        "them as weight-only MatMulNBits, more accurate but slower)."))] = "integer",
    calibration_texts: Annotated[int, typer.Option(
        min=1, help="Calibration texts (static-int8, ov-int8).")] = 256,
    corpus: Annotated[
        str, typer.Option(help="Calibration corpus: tweets | reviews | news | a file.")
    ] = "tweets",
    exclude: Annotated[list[str] | None, typer.Option(help="ONNX node-name substring kept in fp32.")] = None,
    preset: Annotated[str, typer.Option(help=(
        "ov-int8 NNCF preset: performance (symmetric activations, faster) | mixed (asymmetric "
        "activations, NNCF's transformer default)."))] = "performance",
    overwrite: OverwriteOpt = False,
) -> None:
    """Quantise MODEL into OUT."""
    from ..compress.quantize import QuantizeConfig
    from ..compress.quantize import quantize as run

    config = QuantizeConfig(method=method, calibration=calibration,  # type: ignore[arg-type]
                            calibration_texts=calibration_texts, corpus=corpus, exclude=tuple(exclude or ()),
                            format=fmt, preset=preset)  # type: ignore[arg-type]
    with out.status(f"quantizing ({method})..."):
        _done(run(model, out_dir, config, overwrite=overwrite))


@app.command()
def prune(
    model: SrcArg,
    out_dir: OutArg,
    heads: Annotated[float, typer.Option(help="Share of all attention heads to remove.")] = 0.0,
    ffn: Annotated[float, typer.Option(help="Share of FFN neurons to remove in every layer.")] = 0.0,
    magnitude: Annotated[float, typer.Option(help="Unstructured sparsity (no dense speedup).")] = 0.0,
    importance: Annotated[str, typer.Option(
        help="Head importance: ablation (measured damage; slower) | activation | gradient.")] = "ablation",
    rounds: Annotated[int, typer.Option(min=1, help="Ablation rounds (re-measure after each share).")] = 1,
    max_per_layer: Annotated[int | None, typer.Option(
        min=1, help="Most heads removed from one layer.")] = None,
    transfer: Annotated[str, typer.Option(
        help="Transfer corpus: tweets | reviews:train | news | file; join with +.")] = "tweets+reviews:train",
    recover: RecoverOpt = 0,
    lr: Annotated[float, typer.Option(help="Recovery learning rate (> 0).")] = 1e-4,
    hidden: Annotated[float, typer.Option(min=0.0,
        help="Recovery weight of per-layer hidden-state matching (0 = outputs only).")] = 1.0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Prune MODEL (heads/FFN physically removed; magnitude zeroed) into OUT."""
    from ..compress.prune import PruneConfig
    from ..compress.prune import prune as run
    from ..compress.recover import RecoverConfig

    config = PruneConfig(heads=heads, ffn=ffn, magnitude=magnitude, importance=importance,  # type: ignore[arg-type]
                         rounds=rounds, max_per_layer=max_per_layer, transfer=transfer,
                         recover=RecoverConfig(steps=recover, lr=lr, hidden=hidden))
    _done(run(model, out_dir, config, overwrite=overwrite))


@app.command("prune-vocab")
def prune_vocab(
    model: SrcArg,
    out_dir: OutArg,
    corpus: Annotated[list[str] | None, typer.Option(
        help="Corpus whose tokens to keep (repeatable): tweets | reviews:train | file.")] = None,
    coverage: Annotated[float, typer.Option(help="Share of corpus token occurrences to cover.")] = 1.0,
    max_size: Annotated[int | None, typer.Option(
        min=5, help="Most rows to keep (at least the 5 special tokens).")] = None,
    keep_chars: Annotated[bool, typer.Option(help="Keep one-character pieces ([UNK] fallback).")] = True,
    overwrite: OverwriteOpt = False,
) -> None:
    """Keep only the tokens a corpus uses; shrink the embedding matrix of MODEL into OUT."""
    from ..compress.vocab import VocabConfig
    from ..compress.vocab import prune_vocab as run

    config = VocabConfig(corpora=tuple(corpus or ("tweets", "reviews:train")), coverage=coverage,
                         max_size=max_size, keep_chars=keep_chars)
    with out.status("pruning the vocabulary..."):
        _done(run(model, out_dir, config, overwrite=overwrite))


@app.command()
def factorize(
    model: SrcArg,
    out_dir: OutArg,
    layer: Annotated[list[str] | None, typer.Option(
        help="Glob of linear names (repeatable; default: the FFN linears).")] = None,
    rank: Annotated[int | None, typer.Option(min=1, help="Fixed rank.")] = None,
    energy: Annotated[float | None, typer.Option(help="Share of Σs² to keep (default 0.9).")] = None,
    transfer: TransferOpt = "tweets",
    recover: RecoverOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Replace linears of MODEL by truncated-SVD factors into OUT."""
    from ..compress.lowrank import DEFAULT_LAYERS, FactorizeConfig
    from ..compress.lowrank import factorize as run
    from ..compress.recover import RecoverConfig

    if rank is None and energy is None:
        energy = 0.9
    config = FactorizeConfig(layers=tuple(layer or DEFAULT_LAYERS), rank=rank, energy=energy,
                             transfer=transfer, recover=RecoverConfig(steps=recover))
    _done(run(model, out_dir, config, overwrite=overwrite))


@app.command()
def compress(
    model: SrcArg,
    out_dir: OutArg,
    recipe: Annotated[Path, typer.Option(help="Recipe YAML (steps, optional max_quality_drop).")],
    max_quality_drop: Annotated[float | None, typer.Option(
        help="Largest allowed drop of cosine/agreement vs MODEL per step (overrides the recipe).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Run a compression RECIPE on MODEL with a quality gate; the result goes to OUT."""
    from ..compress.recipe import StepResult, load_recipe, run_recipe

    table = Table(title="compression recipe")
    for col in ("#", "step", "accepted", "quality", "size MB", "b1 p50 ms", "b16 texts/s", "note"):
        table.add_column(col)

    def show(r: StepResult) -> None:
        speed = r.speed or {}
        table.add_row(str(r.index), r.kind, "yes" if r.accepted else "[red]no[/red]",
                      f"{r.quality['metric']} {r.quality['mean']:.4f}", f"{r.size_mb:.1f}",
                      str(speed.get("p50_ms_b1_16", "")), str(speed.get("b16_texts_per_s", "")), r.reason)
        out.print(f"step {r.index} {r.kind}: {'accepted' if r.accepted else 'rolled back'} "
                  f"({r.quality['metric']} {r.quality['mean']:.4f})")

    result = run_recipe(model, out_dir, load_recipe(recipe), max_quality_drop=max_quality_drop,
                        overwrite=overwrite, on_step=show)
    out.print(table)
    out.print(f"[green]wrote[/green] {result.out}")
