"""The worker process: loads one backend, then computes the batches its pipe brings.

Each worker is a spawned process holding one backend with its own intra-op threads, so model
work never holds the server's GIL or blocks its event loop. Between batches a worker sleeps in
the kernel on its pipe, so it costs no CPU at idle and little beyond the model under load.
It may poll its pipe for ``spin_s`` first (worker 0, the batcher's first choice when several
are idle, for ``hot_spin_s``), trading CPU for the wake-up of a sleeping process; both are 0
by default (``benchmarks/serving_cost.py`` measures what they buy).
Batches travel unpadded (int32 ids + lengths) and are padded here.

With ``--widen`` (off by default), a worker of a multi-worker layout also holds a *wide* backend
with the intra-op threads of the whole layout (``wide_threads``): the batcher sends it a lone
batch on an idle machine, with the other workers lent to it (see :mod:`..core.batcher`), so one
request can use every core. The messages are :mod:`.protocol`'s.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .protocol import Done, Failed, Fatal, Profile, Profiled, Ready, Run


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How a worker loads its backend (the folder is already resolved, e.g. an ONNX export)."""

    folder: str
    backend: str = "auto"
    precision: str | None = None
    device: str = "cpu"
    threads: int = 1
    spin_s: float = 0.002
    pad_id: int = 0
    factory: str | None = None  # "module:function(spec) -> Backend": a seam for tests and plugins
    nice: int = 0
    wide_threads: int = 0  # > threads: also load a backend using this many (all the layout's cores)
    hot_spin_s: float = 0.0  # worker 0's spin: the batcher's first choice stays awake at low load
    student_threads: int = 1  # ensembles: students run side by side on this many threads

    def for_worker(self, i: int) -> WorkerSpec:
        """Worker ``i``'s spec: worker 0 polls for ``max(spin_s, hot_spin_s)``."""
        return replace(self, spin_s=max(self.spin_s, self.hot_spin_s)) if i == 0 else self


def load(spec: WorkerSpec) -> Any:
    """Build the worker's backend: the runtime loader, or the spec's factory."""
    if spec.factory:
        import importlib

        module, func = spec.factory.split(":")
        return getattr(importlib.import_module(module), func)(spec)
    from ...runtime import BackendOptions, load_backend

    _, _, backend = load_backend(spec.folder, BackendOptions(
        backend=spec.backend, precision=spec.precision, device=spec.device, threads=spec.threads,
        student_threads=spec.student_threads))  # type: ignore[arg-type]
    return backend


class ThreadsAround:
    """A torch backend run with more intra-op threads: torch's pool is per process, not per model."""

    def __init__(self, backend: Any, wide: int, narrow: int) -> None:
        self.backend, self.wide, self.narrow = backend, wide, narrow

    def run(self, batch: Any) -> np.ndarray:
        import torch

        torch.set_num_threads(self.wide)
        try:
            return self.backend.run(batch)
        finally:
            torch.set_num_threads(self.narrow)


def load_wide(spec: WorkerSpec, narrow: Any) -> Any | None:
    """The backend for wide batches (None if the layout has no cores to lend)."""
    if spec.wide_threads <= spec.threads:
        return None
    if getattr(narrow, "name", "") == "torch":
        return ThreadsAround(narrow, spec.wide_threads, spec.threads)
    return load(replace(spec, threads=spec.wide_threads))  # ONNX Runtime: one pool per session



def pad(ids: np.ndarray, lengths: np.ndarray, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids + lengths → padded (B, T) int64 ids and attention mask."""
    width = int(lengths.max()) if len(lengths) else 0
    mask = np.arange(width)[None, :] < lengths[:, None]  # (B, T)
    out = np.full(mask.shape, pad_id, dtype=np.int64)
    out[mask] = ids
    return out, mask.astype(np.int64)


def wait_for(conn: Connection, spin_s: float) -> None:
    """Spin on the pipe for ``spin_s`` (stay warm), then sleep until something arrives."""
    if spin_s <= 0:
        return  # recv() itself sleeps in the kernel until a message is there
    if not conn.poll(0):
        end = time.perf_counter() + spin_s
        while time.perf_counter() < end:
            if conn.poll(0):
                return
    conn.poll(None)


def measure(backend: Any, cells: list[tuple[int, int]], repeats: int, students: int,
            pad_id: int) -> list[tuple[int, int, float]]:
    """Median seconds of ``backend.run`` per (batch, length) cell."""
    from ...runtime.base import Batch

    rng = np.random.default_rng(0)
    rows = []
    for b, n in cells:
        ids = rng.integers(1000, 2000, size=(b, n), dtype=np.int64)
        batch = Batch(ids, np.ones_like(ids), np.full(b, n, dtype=np.int64), students)
        backend.run(batch)  # warm this shape
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            backend.run(batch)
            times.append(time.perf_counter() - t0)
        rows.append((b, n, float(np.median(times))))
    return rows


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Entry point of a worker process; never exits silently while the server listens."""
    # The server decides when workers stop: a Ctrl-C or a SIGTERM sent to the whole process
    # group (systemd, docker stop) must not kill them while the server drains its queue.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if spec.nice > 0:
        os.nice(spec.nice)  # the event loop (admission, answers) goes first when CPU is short
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(spec.threads)
    try:
        from ...runtime import Batch
        from ...runtime.base import pair_types

        backend = load(spec)
        wide = load_wide(spec, backend)
        for b, n in ((1, 16), (4, 32), (1, 64)):  # warm-up: first calls allocate and JIT
            ids = np.full((b, n), 1000, dtype=np.int64)
            for runner in (backend, wide) if wide is not None else (backend,):
                runner.run(Batch(ids, np.ones_like(ids), np.full(b, n)))
        conn.send(Ready(os.getpid(), int(backend.output_dim), int(getattr(backend, "max_students", 1))))
    except Exception as exc:  # report any load failure to the server, then exit
        conn.send(Fatal(f"{type(exc).__name__}: {exc}"))
        return
    while True:
        try:
            wait_for(conn, spec.spin_s)
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the server is gone
        if msg is None:
            return
        if isinstance(msg, Run):
            runner = wide if msg.wide and wide is not None else backend
            try:
                padded, mask = pad(msg.ids, msg.lengths, spec.pad_id)
                lengths = msg.lengths.astype(np.int64)
                starts = msg.type_starts
                types = None if starts is None else pair_types(starts, lengths, padded.shape[1])
                t0 = time.perf_counter()
                out = runner.run(Batch(padded, mask, lengths, msg.students, types))
                conn.send(Done(msg.batch_id, out, time.perf_counter() - t0, time.monotonic()))
            except Exception as exc:  # every batch ends answered or failed
                conn.send(Failed(msg.batch_id, type(exc).__name__, str(exc)))
        elif isinstance(msg, Profile):
            try:
                measured = {m: measure(backend, msg.cells, msg.repeats, m, spec.pad_id)
                            for m in msg.student_counts if msg.cells}
                wide_measured = {m: measure(wide, msg.wide_cells, msg.repeats, m, spec.pad_id)
                                 for m in msg.student_counts if msg.wide_cells and wide is not None}
                conn.send(Profiled(measured, wide_measured))
            except Exception as exc:
                conn.send(Fatal(f"profiling failed: {type(exc).__name__}: {exc}"))
