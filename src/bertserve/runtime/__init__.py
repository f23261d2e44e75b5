"""Runtimes that compute a model's head output for a padded batch (see :mod:`.base`)."""

from .base import Backend, Batch
from .loader import BackendOptions, load_backend

__all__ = ["Backend", "BackendOptions", "Batch", "load_backend"]
