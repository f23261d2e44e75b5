"""The server's side of the worker pipe speaks multiprocessing's framing over a raw socket."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np

from bertserve.serving.workers.pool import frame, unframe, write_all
from bertserve.serving.workers.protocol import Done, Run


def test_frames_cross_to_a_plain_connection_and_back() -> None:
    server, worker = mp.Pipe(duplex=True)
    run = Run(7, np.arange(5, dtype=np.int32), np.array([2, 3], dtype=np.int32), students=2)
    os.set_blocking(server.fileno(), False)
    write_all(server.fileno(), frame(run))
    got = worker.recv()  # what the worker does
    assert (got.batch_id, got.students) == (7, 2) and np.array_equal(got.ids, run.ids)
    out = np.ones((2, 384), np.float32)
    worker.send(Done(7, out, 0.5, 1.0))
    worker.send(Done(8, out * 2, 0.25, 2.0))
    buf = bytearray()
    while len(buf) < 2 * out.nbytes:
        buf += os.read(server.fileno(), 1 << 20)
    first, second = unframe(buf)
    assert (first.batch_id, second.batch_id) == (7, 8) and np.array_equal(second.output, out * 2)
    assert buf == bytearray()


def test_a_partial_frame_waits_for_the_rest() -> None:
    data = frame(Run(1, np.zeros(3, np.int32), np.array([3], np.int32))) * 2
    buf = bytearray(data[:-5])
    assert [m.batch_id for m in unframe(buf)] == [1]  # the first is whole, the second not yet
    buf += data[-5:]
    assert [m.batch_id for m in unframe(buf)] == [1] and not buf
