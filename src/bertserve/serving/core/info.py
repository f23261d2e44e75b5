"""What the HTTP layer knows of the served model: a name, a task, labels, a width; no runtime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    task: str | None = None  # "embed" | "classify" | "rerank"; None until the model is loaded
    labels: tuple[str, ...] = ()  # a classifier's, in output order
    dim: int = 0  # width of one output row (embedding size or number of classes)
    max_students: int = 1  # students of an ensemble (1 for a plain model)
    pairs: bool = False  # the model reads text pairs (query, passage): a cross-encoder
    backend: str = ""  # the runtime that runs it, and at which precision
    precision: str = ""
    auto: dict | None = None  # backend auto's measurement (export.choose.Choice), when it measured
