"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

ModelArg = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Artifact or HF checkpoint folder (default: bundled all-MiniLM-L6-v2)."
    ),
]
BackendOpt = Annotated[str, typer.Option(help="auto | torch | onnxruntime.")]
PrecisionOpt = Annotated[
    str | None, typer.Option(help="fp32 | bf16 | fp16 | int8 (default: the artifact's own).")
]
DeviceOpt = Annotated[str, typer.Option(help="cpu | cuda | auto.")]
ThreadsOpt = Annotated[int | None, typer.Option(min=1, help="Intra-op threads (default: all cores).")]
