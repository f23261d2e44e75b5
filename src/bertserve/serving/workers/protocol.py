"""The messages between the server and its worker processes: frozen dataclasses, one per kind.

Server → worker: :class:`Run` (one batch), :class:`Profile` (measure the start-up grid),
:data:`STOP` (exit). Worker → server: :class:`Ready` (loaded and warm), :class:`Done`,
:class:`Failed` (a batch raised: its exception's class name and message), :class:`Profiled`,
:class:`Fatal` (the model cannot run at all). Every :class:`Run` ends in one :class:`Done` or
one :class:`Failed`, or in the worker's death, which the pool reports.

The two messages of every batch, :class:`Run` and :class:`Done`, pickle as a tuple of their
arrays' raw bytes: the generic pickling of a slotted dataclass holding numpy arrays cost 16 µs
per ``Run`` on the server's event loop, this costs under 1 µs (the arrays come back read-only).
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
    type_starts: np.ndarray | None = None  # pairs: int32 (B,) where each text's token type 1 starts

    def __reduce__(self) -> tuple:
        starts = None if self.type_starts is None else self.type_starts.astype(np.int32, copy=False).tobytes()
        return _run, (self.batch_id, self.ids.astype(np.int32, copy=False).tobytes(),
                      self.lengths.astype(np.int32, copy=False).tobytes(), self.students, self.wide, starts)


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

    def __reduce__(self) -> tuple:
        out = np.ascontiguousarray(self.output, dtype=np.float32)
        return _done, (self.batch_id, out.tobytes(), out.shape, self.seconds, self.sent_at)


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


def _run(batch_id: int, ids: bytes, lengths: bytes, students: int | None, wide: bool,
         starts: bytes | None = None) -> Run:
    return Run(batch_id, np.frombuffer(ids, np.int32), np.frombuffer(lengths, np.int32), students, wide,
               None if starts is None else np.frombuffer(starts, np.int32))


def _done(batch_id: int, output: bytes, shape: tuple[int, ...], seconds: float, sent_at: float) -> Done:
    return Done(batch_id, np.frombuffer(output, np.float32).reshape(shape), seconds, sent_at)


STOP = None  # the server's last message to a worker

ToWorker = Run | Profile | None
FromWorker = Ready | Done | Failed | Profiled | Fatal
