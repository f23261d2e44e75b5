"""Models: tokenizer, torch heads, and the :class:`Encoder` that ties them to a backend."""

from .encoder import Encoder, Prediction

__all__ = ["Encoder", "Prediction"]
