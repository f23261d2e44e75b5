"""The backend contract: a padded batch in, one row of head output per text out.

A backend computes the model's *head output* for a :class:`Batch`: the pooled (and, if the
manifest says so, normalised) embedding for ``embed`` artifacts, the logits for ``classify``.
Pooling and heads live inside the backend's graph so one call does all the math. Everything
else (tokenisation, batching, post-processing) is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(slots=True)
class Batch:
    """Token ids of a batch padded to its longest member (never further).

    input_ids, attention_mask: int64 (B, T); lengths: int (B,) true lengths.
    students: for a student ensemble, how many students (a prefix in boosting order) to run;
    None runs all of them.
    token_type_ids: int64 (B, T) for text pairs (0 for the first text, 1 for the second), None
    for single texts (the graphs of single-text models have no such input).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    students: int | None = None
    token_type_ids: np.ndarray | None = None

    @classmethod
    def from_ids(cls, ids: list[list[int]], pad_id: int = 0, students: int | None = None,
                 type_starts: list[int] | np.ndarray | None = None) -> Batch:
        """Pad ``ids``; with ``type_starts`` (pairs) token type 1 runs from each row's start to its end."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        width = int(lengths.max()) if len(ids) else 0
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        types = None if type_starts is None else pair_types(np.asarray(type_starts), lengths, width)
        return cls(input_ids, mask, lengths, students, types)

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def width(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def padding_ratio(self) -> float:
        """Share of the computed tokens that are padding (0 for batch 1)."""
        total = self.input_ids.size
        return 0.0 if total == 0 else 1.0 - float(self.lengths.sum()) / total


def pair_types(starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """token_type_ids (B, width): 1 where ``starts[i] <= t < lengths[i]``, else 0 (padding too)."""
    t = np.arange(width)
    return ((t >= starts[:, None]) & (t < lengths[:, None])).astype(np.int64)


def types_of(batch: Batch) -> np.ndarray:
    """The batch's token types for a pair graph; all zeros if it holds single texts."""
    if batch.token_type_ids is not None:
        return batch.token_type_ids
    return np.zeros_like(batch.input_ids)


@runtime_checkable
class Backend(Protocol):
    """What every runtime implements; tests use a 30-line fake of it."""

    name: str
    output_dim: int
    max_students: int  # 1 for a plain model

    def run(self, batch: Batch) -> np.ndarray:
        """Return float32 (B, output_dim) head outputs, rows in batch order."""
        ...
