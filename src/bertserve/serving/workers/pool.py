"""The server side of the workers: start, watch, restart and stop their processes.

The server watches every worker's pipe with ``loop.add_reader`` (no extra threads, one hand-off
each way); messages are :mod:`.protocol`'s dataclasses, pickled in ``multiprocessing``'s framing
(a 4-byte big-endian length, then the pickle), so the worker keeps a plain ``Connection``. The
server side reads and writes the socket itself: one ``read`` takes every message that is there
(``Connection.recv`` costs a ``poll`` and two reads per message) and one ``write`` sends one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from .protocol import STOP, FromWorker, ToWorker
from .worker import WorkerSpec, worker_main

log = logging.getLogger("bertserve.workers")

Handler = Callable[[int, FromWorker], None]

READ_SIZE = 1 << 20


def frame(msg: ToWorker) -> bytes:
    """One message in ``multiprocessing.Connection``'s framing."""
    payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    n = len(payload)
    head = struct.pack("!i", n) if n <= 0x7FFFFFFF else struct.pack("!iQ", -1, n)
    return head + payload


def unframe(buf: bytearray) -> list[FromWorker]:
    """Every whole message at the start of ``buf`` (consumed); a partial one stays."""
    out = []
    pos = 0
    while len(buf) - pos >= 4:
        (n,) = struct.unpack_from("!i", buf, pos)
        head = 4
        if n == -1:
            if len(buf) - pos < 12:
                break
            (n,) = struct.unpack_from("!Q", buf, pos + 4)
            head = 12
        if len(buf) - pos < head + n:
            break
        out.append(pickle.loads(buf[pos + head:pos + head + n]))
        pos += head + n
    del buf[:pos]
    return out


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a non-blocking socket (waiting only if its buffer is full)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


class WorkerPool:
    """Starts, watches, restarts and stops the worker processes of one engine."""

    def __init__(self, spec: WorkerSpec, count: int, on_message: Handler, on_exit: Callable[[int], None]):
        self.spec = spec
        self.count = count
        self.on_message = on_message
        self.on_exit = on_exit
        self._ctx = mp.get_context("spawn")
        self.procs: list[Any] = [None] * count
        self.conns: list[Connection | None] = [None] * count
        self.pids: list[int | None] = [None] * count
        self._buffers: list[bytearray] = [bytearray() for _ in range(count)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("WorkerPool.start_all() must run first")
        return self._loop

    def start_all(self) -> None:
        self._loop = asyncio.get_running_loop()
        for i in range(self.count):
            self.start(i)

    def start(self, i: int) -> None:
        """(Re)start worker ``i``; it reports ``ready`` through ``on_message`` when loaded."""
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=worker_main, args=(child, self.spec.for_worker(i)), daemon=True,
                                 name=f"bertserve-worker-{i}")
        proc.start()
        child.close()
        self.procs[i], self.conns[i], self.pids[i] = proc, parent, proc.pid
        self._buffers[i] = bytearray()
        os.set_blocking(parent.fileno(), False)
        self.loop.add_reader(parent.fileno(), self._readable, i, parent)

    def _readable(self, i: int, conn: Connection) -> None:
        buf = self._buffers[i]
        try:
            while True:
                chunk = os.read(conn.fileno(), READ_SIZE)
                if not chunk:
                    raise EOFError
                buf += chunk
                if len(chunk) < READ_SIZE:
                    break
        except BlockingIOError:
            pass
        except (EOFError, OSError):
            self._lost(i, conn)
            return
        for msg in unframe(buf):
            if self.conns[i] is not conn:
                return  # a message handler found the worker gone
            self.on_message(i, msg)

    def _lost(self, i: int, conn: Connection) -> None:
        if self.conns[i] is not conn:
            return
        self.loop.remove_reader(conn.fileno())
        conn.close()
        self.conns[i] = None
        proc = self.procs[i]
        if proc is not None:
            proc.join(timeout=0.2)
        if not self.stopping:
            log.warning("worker %d (pid %s) died with exit code %s", i, self.pids[i],
                        getattr(proc, "exitcode", None))
            self.loop.call_soon(self.on_exit, i)  # not re-entrantly inside a send()

    def send(self, i: int, msg: ToWorker) -> bool:
        conn = self.conns[i]
        if conn is None:
            return False
        try:
            write_all(conn.fileno(), frame(msg))
        except OSError:
            self._lost(i, conn)
            return False
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to exit, then make sure it has."""
        self.stopping = True
        for i, conn in enumerate(self.conns):
            if conn is not None:
                self.send(i, STOP)
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            while proc.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if proc.is_alive():
                proc.kill()  # it ignores SIGTERM (see worker_main)
                proc.join(timeout=2.0)
            conn = self.conns[i]
            if conn is not None and self._loop is not None:
                self._loop.remove_reader(conn.fileno())
                conn.close()
                self.conns[i] = None
