"""Options shared by several commands, declared once, with their values checked by typer."""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import typer

Backend = Literal["auto", "torch", "onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]


def check_device(value: str | None) -> str | None:
    """cpu, auto or cuda[:N]: anything else would fail late, deep inside torch."""
    if value is None or value in ("cpu", "auto") or re.fullmatch(r"cuda(:\d+)?", value):
        return value
    raise typer.BadParameter(f"{value!r} is not one of cpu, auto, cuda, cuda:N")


def positive(value: float | None) -> float | None:
    """For rates, durations, temperatures: 0 or less would do nothing, or divide by zero."""
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a finite number above 0, not {value:g}")
    return value


ModelArg = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Artifact or HF checkpoint folder (default: bundled all-MiniLM-L6-v2)."
    ),
]
BackendOpt = Annotated[Backend, typer.Option(help="Runtime: auto picks ONNX Runtime on CPU.")]
PrecisionOpt = Annotated[Precision | None, typer.Option(help="Default: the artifact's own.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu | cuda | cuda:N | auto.", callback=check_device)]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="Intra-op threads (default: all cores).")]
