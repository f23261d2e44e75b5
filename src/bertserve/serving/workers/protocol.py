"""The messages between the server and its worker processes: frozen dataclasses, one per kind.

Server → worker: :class:`Run` (one batch), :class:`Profile` (measure the start-up grid),
:data:`STOP` (exit). Worker → server: :class:`Ready` (loaded and warm), :class:`Done`,
:class:`Failed` (a batch raised: its exception's class name and message), :class:`Profiled`,
:class:`Fatal` (the model cannot run at all). Every :class:`Run` ends in one :class:`Done` or
one :class:`Failed`, or in the worker's death, which the pool reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Run:
    """A batch to compute: flat int32 token ids and each text's length (unpadded)."""

    batch_id: int
    ids: np.ndarray  # int32 (sum of lengths,)
    lengths: np.ndarray  # int32 (B,)
    students: int | None = None  # ensembles: the prefix to run; None: all
    wide: bool = False  # run on the wide backend (every core of the layout)


@dataclass(frozen=True, slots=True)
class Profile:
    cells: list[tuple[int, int]]  # (batch, length) to time on the narrow backend
    repeats: int
    student_counts: list[int]
    wide_cells: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int
    output_dim: int
    max_students: int


@dataclass(frozen=True, slots=True)
class Done:
    batch_id: int
    output: np.ndarray  # float32 (B, output_dim)
    seconds: float  # model time of the batch, measured in the worker
    sent_at: float  # time.monotonic() when the worker sent it (the server's read delay)


@dataclass(frozen=True, slots=True)
class Failed:
    batch_id: int
    kind: str  # the exception's class name
    message: str


@dataclass(frozen=True, slots=True)
class Profiled:
    measured: dict[int, list[tuple[int, int, float]]]
    wide_measured: dict[int, list[tuple[int, int, float]]]


@dataclass(frozen=True, slots=True)
class Fatal:
    message: str


STOP = None  # the server's last message to a worker

ToWorker = Run | Profile | None
FromWorker = Ready | Done | Failed | Profiled | Fatal
