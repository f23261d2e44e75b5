"""bertserve: serve BERT-like encoders within a latency SLO, and compress them to get there."""

from __future__ import annotations

from .artifact import Manifest, default_model_path, load_manifest
from .encoder import Encoder, Prediction
from .errors import (
    ArtifactError,
    BackendError,
    BertserveError,
    ConfigError,
    InputError,
    OverloadedError,
    TextTooLongError,
    UnavailableError,
    UnsafeWeightsError,
)
from .version import __version__

__all__ = [
    "ArtifactError",
    "BackendError",
    "BertserveError",
    "ConfigError",
    "Encoder",
    "InputError",
    "Manifest",
    "OverloadedError",
    "Prediction",
    "TextTooLongError",
    "UnavailableError",
    "UnsafeWeightsError",
    "__version__",
    "default_model_path",
    "load_manifest",
]
