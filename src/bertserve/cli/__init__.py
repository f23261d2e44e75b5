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
err = Console(stderr=True, soft_wrap=True)  # an error is one line, also when stderr is a file

# One module per command group; each adds its commands to ``app`` when imported.
COMMAND_MODULES = (
    "bertserve.cli.model",
    "bertserve.cli.serve",
    "bertserve.cli.compress",
    "bertserve.cli.bench",
    "bertserve.cli.students",
    "bertserve.cli.ray",
    "bertserve.cli.plan",
    "bertserve.cli.optimize",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def describe_invalid(exc) -> str:
    """A pydantic ValidationError as one line, fields named as their flags (--slo-ms: ...)."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"]).replace("_", "-")
        parts.append(f"--{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


def main() -> None:
    """Entry point: run the app, turning expected failures into one clear line and exit 1.

    Those are bertserve's own errors, settings that fail validation, and files that cannot be
    read or written; anything else is a bug and keeps its traceback.
    """
    from pydantic import ValidationError

    from ..errors import BertserveError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: a missing file fails fast
    _register()
    try:
        app()
    except BertserveError as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(describe_invalid(exc))
    except OSError as exc:  # a missing input, an output path that is a file, no permission
        fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        sys.exit(130)


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    sys.exit(1)
