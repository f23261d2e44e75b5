"""The ``bertserve`` command. Each command group lives in its own module and registers on ``app``."""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="bertserve",
    help="Serve BERT-like encoders fast: compress a teacher, serve it within a latency SLO, measure it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)

# One module per command group; each adds its commands to ``app`` when imported.
COMMAND_MODULES = (
    "bertserve.cli.model",
    "bertserve.cli.serve",
    "bertserve.cli.compress",
    "bertserve.cli.bench",
    "bertserve.cli.students",
    "bertserve.cli.ray",
    "bertserve.cli.plan",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def main() -> None:
    """Entry point: run the app, turning bertserve errors into one clear line and exit 1."""
    from ..errors import BertserveError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: a missing file fails fast
    _register()
    try:
        app()
    except BertserveError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
