"""Options shared by several commands, declared once, with their values checked by typer."""

from __future__ import annotations

import functools
import inspect
import math
import re
import types
from collections.abc import Callable
from typing import Annotated, Literal, Union, get_args, get_origin, get_type_hints

import typer
from pydantic_core import PydanticUndefined

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


# -- the server's settings, as flags -------------------------------------------------------
# Every ServerSettings field is one flag, generated here from the field (its name, type,
# description and default), so the flags, the BERTSERVE_* variables and the defaults cannot
# drift apart. A flag left out passes None: the variable, else the field's default, applies.

def settings_flags() -> list[inspect.Parameter]:
    """One keyword parameter per ``ServerSettings`` field, typed ``T | None`` with a typer option
    (the model field: the positional MODEL argument)."""
    from ..config import ServerSettings

    params = []
    prefix = ServerSettings.model_config.get("env_prefix", "")
    for name, field in ServerSettings.model_fields.items():
        base = _without_none(field.annotation)
        env = f"{prefix}{name.upper()}"
        if name == "model":
            info: object = typer.Argument(help=f"{field.description}. "
                                          f"Env: {env}.", show_default=False)
        else:
            shown = False if field.default in (None, PydanticUndefined) else _shown(field.default)
            info = typer.Option(help=f"{field.description}. Env: {env}.",
                                show_default=shown, rich_help_panel=_panel(name))
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[base | None, info]))
    return params


def with_settings(func: Callable[..., None]) -> Callable[..., None]:
    """Give a command every ``ServerSettings`` field as a flag; it receives ``settings=``.

    The command declares its own other parameters as usual; the settings flags follow them.
    """
    from ..config import ServerSettings

    scope = {**func.__globals__, "ServerSettings": ServerSettings}
    resolved = get_type_hints(func, scope, include_extras=True)
    own = [p.replace(annotation=resolved[p.name]) for p in inspect.signature(func).parameters.values()
           if p.name != "settings"]
    own_names = {p.name for p in own}
    flags = settings_flags()
    hints = {p.name: p.annotation for p in own} | {p.name: p.annotation for p in flags}

    @functools.wraps(func)
    def command(**kwargs: object) -> None:
        given = {k: v for k, v in kwargs.items() if k not in own_names and v is not None}
        settings = ServerSettings(**given)  # a flag given wins over its variable
        func(**{k: v for k, v in kwargs.items() if k in own_names}, settings=settings)

    positional = [p for p in flags if p.name == "model"]
    ordered = positional + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + \
        [p for p in flags if p.name != "model"]
    command.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
    command.__annotations__ = hints
    del command.__wrapped__  # typer must read the generated signature, not func's
    return command


def _without_none(annotation: object) -> object:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and args:
        return args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
    return annotation


def _shown(default: object) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


PANELS = {
    "Model": ("model_name", "backend", "precision", "device", "auto_measure"),
    "Network": ("host", "port", "log_level"),
    "Access": ("api_key", "api_key_file", "keys_for_health", "request_log"),
    "Workers": ("workers", "threads", "student_threads", "worker_spin_ms", "hot_spin_ms", "widen",
                "worker_nice"),
    "Limits": ("max_queue_requests", "max_queue_tokens", "max_texts_per_request", "max_tokens_per_request",
               "max_chars_per_text", "max_body_bytes", "truncate"),
    "Student ensembles": ("min_students", "adaptive_students", "student_cut", "student_restore"),
}


def _panel(name: str) -> str:
    for panel, names in PANELS.items():
        if name in names:
            return panel
    return "Batching and the SLO"
