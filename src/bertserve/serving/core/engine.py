"""The serving engine: validates and tokenises texts, batches them, runs them on the workers.

The HTTP layer only calls :meth:`Engine.infer`; everything about queues, batches and worker
processes stays behind it. All state lives on the event loop's thread: worker replies arrive
through ``loop.add_reader`` callbacks, so no locks are needed and a request costs two process
hand-offs (server → worker → server).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path

import numpy as np

from ...artifact import Manifest
from ...config import ServerSettings
from ...errors import (
    ArtifactError,
    BackendError,
    BertserveError,
    InputError,
    OverloadedError,
    RequestTooLargeError,
    UnavailableError,
    by_name,
)
from ...export.choose import cached_choice, measuring
from ...export.prepare import prepare
from ...runtime.loader import BackendOptions
from ...tokenizer import TextTokenizer
from ..workers.pool import WorkerPool
from ..workers.protocol import Done, Failed, Fatal, FromWorker, Profile, Profiled, Ready, Run
from ..workers.worker import WorkerSpec
from .batcher import Batcher, Dispatch
from .buffer import Item, LengthBuffer
from .info import ModelInfo
from .metrics import Metrics
from .policy import StudentPolicy
from .profile import RunTimeModel, load_profile, profile_grid, profile_key, save_profile, wide_grid

log = logging.getLogger("bertserve.engine")

# A text needs one character that is white space neither to Python nor to ECMA-262 (the regex
# dialect of JSON Schema): the same pattern is the OpenAPI document's (serving.http.schemas).
VISIBLE_PATTERN = r"[^\s\u001c-\u001f\u0085\ufeff]"
VISIBLE = re.compile(VISIBLE_PATTERN)
INLINE_TOKENIZE_CHARS = 4096  # below this, tokenising on the loop is cheaper than a thread hop
# uvloop (libuv) keeps timers in whole milliseconds, rounded to the nearest: a timer asked for
# under 0.5 ms away fires at once, finds its batch not due yet and is armed again, so the loop
# spun through several wake-ups per queued batch. Timers are armed at least this far ahead; one
# that fires late costs nothing, since a worker's answer dispatches the next batch anyway.
TIMER_STEP_S = 0.001


@dataclass(slots=True)
class Outcome:
    """What one request gets back: head outputs in input order, plus how they were made."""

    outputs: np.ndarray  # (N, D) float32
    tokens: int
    truncated: int
    students: int
    queue_s: float
    compute_s: float


@dataclass(slots=True, eq=False)
class _Request:
    future: asyncio.Future[Outcome]
    outputs: np.ndarray
    remaining: int
    tokens: int
    truncated: int
    students: int
    queue_s: float = 0.0
    compute_s: float = 0.0
    failed: bool = field(default=False)


def worker_error(msg: Failed) -> BertserveError:
    """A batch's failure as the error the worker raised: a bertserve error keeps its class (an
    input error stays a 4xx); anything else is a :class:`BackendError`."""
    cls = by_name(msg.kind)
    if cls is None or cls is BertserveError:
        return BackendError(f"the model failed on a batch: {msg.kind}: {msg.message}")
    return cls(msg.message)


def resolve_artifact(settings: ServerSettings) -> tuple[Path, Manifest, str, str | None]:
    """The folder the workers load (an ONNX export for onnxruntime/openvino) and its backend."""
    return prepare(settings.model, backend_options(settings))


def backend_options(settings: ServerSettings) -> BackendOptions:
    """The options prepare() and backend auto's measurement see (with one worker's threads)."""
    return BackendOptions(backend=settings.backend, precision=settings.precision,  # type: ignore[arg-type]
                          device=settings.device, threads=settings.worker_layout()[1],
                          student_threads=settings.student_threads, auto_measure=settings.auto_measure)


class Engine:
    """Owns the workers, the batcher and every request in flight."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None, *,
                 backend_factory: str | None = None) -> None:
        self.settings = settings
        self.backend_factory = backend_factory
        self.metrics = metrics or Metrics()
        self.ready = False
        self.accepting = True
        self.error: str | None = None
        self.manifest: Manifest | None = None
        self.tokenizer: TextTokenizer | None = None
        self.output_dim = 0
        self.max_students = 1
        self.batcher: Batcher | None = None
        self.pool: WorkerPool | None = None
        self.runtime_model: RunTimeModel | None = None
        self.worker_pids: list[int | None] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_waiters: dict[int, asyncio.Future[Ready]] = {}
        self._profile_waiter: asyncio.Future[tuple[dict, dict]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._restarts: list[float] = []
        self.info = ModelInfo(settings.model_name or "model")
        self.metrics.watch_processes(lambda: list(self.pool.pids) if self.pool is not None else [])

    # -- life cycle ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        if self.manifest is None:
            return self.settings.model_name or "model"
        return self.settings.model_name or self.manifest.name

    async def start(self) -> None:
        """Resolve the artifact, start and warm the workers, profile; then accept requests."""
        loop = self._loop = asyncio.get_running_loop()
        s = self.settings
        folder, manifest, backend, precision = await asyncio.to_thread(resolve_artifact, s)
        self.manifest = manifest
        self.tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
        workers, threads = s.worker_layout()
        wide = workers * threads if s.widen and workers > 1 and s.device == "cpu" else 0
        spec = WorkerSpec(str(folder), backend, precision, s.device, threads,
                          spin_s=s.worker_spin_ms / 1e3, pad_id=self.tokenizer.pad_id,
                          factory=self.backend_factory, nice=s.worker_nice, wide_threads=wide,
                          hot_spin_s=s.hot_spin_ms / 1e3 if workers > 1 else 0.0,  # 1 worker: no spare core
                          student_threads=s.student_threads)
        self.pool = WorkerPool(spec, workers, self._on_message, self._on_worker_exit)
        self._ready_waiters = {i: loop.create_future() for i in range(workers)}
        self.pool.start_all()
        infos = await asyncio.gather(*self._ready_waiters.values())
        self.worker_pids = [info.pid for info in infos]
        self.output_dim = infos[0].output_dim
        self.max_students = max(1, infos[0].max_students)
        self.runtime_model = await self._profile(folder, manifest, backend, precision, workers, threads,
                                                 wide > 0)
        policy = StudentPolicy(self.max_students, min_students=s.min_students, enabled=s.adaptive_students,
                               cut_fraction=s.student_cut,
                               restore_fraction=float(s.student_restore))  # the settings fill it in
        buffer = LengthBuffer(bin_width=s.bin_width, max_batch=s.max_batch_size,
                              max_tokens=s.max_batch_tokens)
        self.batcher = Batcher(buffer=buffer, model=self.runtime_model, policy=policy, workers=workers,
                               pipeline_depth=s.pipeline_depth, max_queue_items=s.max_queue_requests,
                               max_queue_tokens=s.max_queue_tokens, widen=wide > 0)
        for i in range(workers):
            self.batcher.worker_up(i)
        self.metrics.follow(self.batcher, lambda: self._active)
        self.metrics.max_students.set(self.max_students)
        self.metrics.active_students.set(self.max_students)
        choice = cached_choice(folder, manifest, threads) if measuring(backend_options(s)) else None
        self.info = ModelInfo(self.name, manifest.task, tuple(manifest.labels or ()), self.output_dim,
                              self.max_students, manifest.pairs, backend, precision or manifest.precision,
                              choice.to_json() if choice is not None else None)
        self.ready = True
        self.metrics.ready.set(1)

    async def _profile(self, folder: Path, manifest: Manifest, backend: str, precision: str | None,
                       workers: int, threads: int, wide: bool) -> RunTimeModel:
        """The saved profile for this artifact and layout, or measure one (on worker 0).

        A saved profile without the wide measurements (e.g. one the planner measured) is
        completed rather than measured again.
        """
        s = self.settings
        layout = {"backend": backend, "precision": precision, "device": s.device, "threads": threads,
                  "workers": workers, "max_batch": s.max_batch_size, "max_tokens": s.profile_max_tokens,
                  "factory": self.backend_factory}
        key = profile_key(folder, manifest.model_dump_json(), layout)
        cached = load_profile(key)
        if cached is not None and (cached.wide_coef or not wide):
            return cached
        cells = profile_grid(s.max_batch_size, manifest.max_seq_length,
                             min(s.profile_max_tokens, s.max_batch_tokens))
        counts = sorted({1, self.max_students})
        if self.pool is None or self._loop is None:
            raise RuntimeError("workers not started")
        self._profile_waiter = self._loop.create_future()
        narrow_cells = cells if cached is None else []
        self.pool.send(0, Profile(narrow_cells, s.profile_repeats, counts, wide_grid(cells) if wide else []))
        measured, wide_measured = await self._profile_waiter
        if cached is None:
            model = RunTimeModel.fit(measured, wide_measured)
        else:
            wide_model = RunTimeModel.fit(wide_measured)
            model = replace(cached, wide_coef=wide_model.coef, wide_cells=wide_model.cells)
        save_profile(key, model)
        log.info("profiled %d cells (%d wide); worst fit error %.0f%%", len(narrow_cells),
                 len(wide_grid(cells)) if wide else 0, model.max_rel_error * 100)
        return model

    async def stop(self) -> None:
        """Refuse new work, finish everything accepted, then stop the workers."""
        self.accepting = False
        await self._idle.wait()
        if self._timer is not None:
            self._timer.cancel()
        if self.pool is not None:
            await self.pool.stop()
        self.ready = False
        self.metrics.ready.set(0)

    # -- requests ------------------------------------------------------------------------
    def validate(self, texts: object, *, truncate: bool = False,
                 what: str = "text") -> tuple[list[str], list[bool]]:
        """The texts to tokenise, and which of them were cut to ``max_chars_per_text``.

        A text over the character cap is cut to its first ``max_chars_per_text`` characters when
        ``truncate`` is on (so the cap bounds the tokeniser's memory and CPU), else refused.
        ``what`` names the texts in messages (the second texts of pairs are "text_pair").
        """
        s = self.settings
        if not isinstance(texts, list) or not texts:
            raise InputError(f"send at least one {what}")
        if len(texts) > s.max_texts_per_request:
            raise InputError(f"{len(texts)} {what}s in one request; the limit is {s.max_texts_per_request}")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"{what} {i} is a {type(t).__name__}, not a string")
            if VISIBLE.search(t) is None:
                raise InputError(f"{what} {i} is empty (nothing but white space)")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(f"{what} {i} is not valid Unicode (a lone surrogate at "
                                 f"{exc.start})") from exc
        cap = s.max_chars_per_text
        cut = [len(t) > cap for t in texts]
        if not any(cut):
            return texts, cut
        if not truncate:
            i = cut.index(True)
            raise InputError(f"{what} {i} has {len(texts[i])} characters; the limit is {cap} "
                             "(send it shorter, or enable truncation)")
        return [t[:cap] if c else t for t, c in zip(texts, cut, strict=True)], cut

    def count_tokens(self, texts: list[str]) -> list[int]:
        if self.tokenizer is None:
            raise UnavailableError("the model is still loading")
        return self.tokenizer.count(texts)

    async def infer(self, texts: object, *, text_pairs: object = None, slo_ms: float | None = None,
                    truncate: bool | None = None) -> Outcome:
        """Head outputs for ``texts`` (and, for a pair model, ``text_pairs``: one second text per
        text); raises a :class:`BertserveError` the app maps to a status.

        The deadline counts from here, so tokenisation is inside the SLO. ``stop()`` waits for
        every call that got past the ``accepting`` check. Each pair is one text of the batches,
        binned by its total length; a rerank request of N documents is N pairs.
        """
        if not self.accepting:
            raise UnavailableError("the server is shutting down")
        if not self.ready or self.batcher is None or self.tokenizer is None or self._loop is None:
            raise UnavailableError(self.error or "the model is still loading; retry shortly")
        self._active += 1
        self._idle.clear()
        try:
            return await self._infer(texts, text_pairs, slo_ms, truncate)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    def validate_pairs(self, texts: object, text_pairs: object, *,
                       truncate: bool) -> tuple[list[str], list[str] | None, list[bool]]:
        """:meth:`validate` for both sides; a pair model needs pairs, a single-text one refuses them."""
        pairs = self.manifest is not None and self.manifest.pairs
        if text_pairs is None:
            if pairs:
                raise InputError(f"model {self.name!r} reads text pairs: send a second text for each "
                                 "text (text_pair)")
            checked, cut = self.validate(texts, truncate=truncate)
            return checked, None, cut
        if not pairs:
            raise InputError(f"model {self.name!r} reads single texts, not pairs: send texts alone")
        checked, cut = self.validate(texts, truncate=truncate)
        second, cut2 = self.validate(text_pairs, truncate=truncate, what="text_pair")
        if len(second) != len(checked):
            raise InputError(f"{len(checked)} texts but {len(second)} text_pairs: "
                             "send one text_pair per text")
        return checked, second, [a or b for a, b in zip(cut, cut2, strict=True)]

    async def _infer(self, texts: object, text_pairs: object, slo_ms: float | None,
                     truncate: bool | None) -> Outcome:
        if self.batcher is None or self.tokenizer is None or self._loop is None:
            raise UnavailableError("the model is still loading; retry shortly")
        loop = self._loop
        arrival = loop.time()
        cut = self.settings.truncate if truncate is None else truncate
        checked, second, char_cut = self.validate_pairs(texts, text_pairs, truncate=cut)
        if slo_ms is not None and not slo_ms > 0:
            raise InputError("slo_ms must be a positive number of milliseconds")
        chars = sum(len(t) for t in checked) + (sum(len(t) for t in second) if second else 0)
        if chars <= INLINE_TOKENIZE_CHARS:
            tok = self.tokenizer.encode(checked, pairs=second, truncate=cut)
        else:
            tok = await asyncio.to_thread(self.tokenizer.encode, checked, pairs=second, truncate=cut)
        if tok.total_tokens > self.settings.max_tokens_per_request:
            raise RequestTooLargeError(
                f"this request has {tok.total_tokens} tokens; the limit is "
                f"{self.settings.max_tokens_per_request} (--max-tokens-per-request): split it")
        deadline = arrival + (slo_ms if slo_ms is not None else self.settings.slo_ms) / 1e3
        req = _Request(loop.create_future(), np.empty((len(checked), self.output_dim), np.float32),
                       len(checked), tok.total_tokens,
                       sum(a or b for a, b in zip(tok.truncated, char_cut, strict=True)), self.max_students)
        items = [Item(ids, arrival, deadline, req, i) for i, ids in enumerate(tok.ids)]
        if tok.type_starts is not None:
            for item, start in zip(items, tok.type_starts, strict=True):
                item.type_start = start
        try:
            self.batcher.admit(items, loop.time())
        except OverloadedError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            raise
        self._pump()
        try:
            return await req.future
        except asyncio.CancelledError:  # the client has gone (serving.http.hotpath)
            self._abandon(req)
            raise

    def _abandon(self, req: _Request) -> None:
        """Forget a request nobody waits for: its queued texts leave; running ones finish unused."""
        req.failed = True
        if self.batcher is not None:
            dropped = self.batcher.buffer.discard(req)
            self.metrics.abandoned_texts.inc(dropped)
            self._pump()

    # -- scheduling ----------------------------------------------------------------------
    def _pump(self) -> None:
        """Send every batch the batcher releases now and arm the timer for the next one."""
        if self.batcher is None or self._loop is None or self.pool is None:
            return
        now = self._loop.time()
        for d in self.batcher.poll(now):
            self._send(d)
        due = self.batcher.next_due(now)
        if due is None:
            return
        due = max(due, now + TIMER_STEP_S)
        if self._timer is not None and not self._timer.cancelled() and self._timer_at <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _send(self, d: Dispatch) -> None:
        items = d.batch.items
        ids = np.fromiter(chain.from_iterable(it.ids for it in items), dtype=np.int32,
                          count=sum(it.length for it in items))
        lengths = np.fromiter((it.length for it in items), dtype=np.int32, count=len(items))
        starts = None
        if items[0].type_start >= 0:  # a pair model's batches hold pairs only
            starts = np.fromiter((it.type_start for it in items), dtype=np.int32, count=len(items))
        students = d.students if self.max_students > 1 else None
        if d.wide:
            self.metrics.widened_batches.inc()
        if self.pool is not None:
            self.pool.send(d.worker, Run(d.batch.id, ids, lengths, students, d.wide, starts))

    # -- worker messages -----------------------------------------------------------------
    def _on_message(self, worker: int, msg: FromWorker) -> None:
        if isinstance(msg, Done):
            if self.batcher is not None and self._loop is not None:
                self.batcher.observe_lag(self._loop.time() - msg.sent_at)
            self._done(worker, msg.batch_id, msg.output, msg.seconds)
        elif isinstance(msg, Failed):
            self._failed(worker, msg.batch_id, worker_error(msg))
        elif isinstance(msg, Ready):
            waiter = self._ready_waiters.get(worker)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            elif self.batcher is not None:  # a restarted worker
                if self.pool is not None:
                    self.worker_pids[worker] = msg.pid
                self.batcher.worker_up(worker)
                self.error = None  # a load error is stale once a worker has loaded again
                if not self.ready and self.accepting:  # back from a spell with no worker able to run
                    self.ready = True
                    self.metrics.ready.set(1)
                self._pump()
        elif isinstance(msg, Profiled):
            if self._profile_waiter is not None and not self._profile_waiter.done():
                self._profile_waiter.set_result((msg.measured, msg.wide_measured))
        elif isinstance(msg, Fatal):
            self._fatal(worker, msg.message)

    def _fatal(self, worker: int, message: str) -> None:
        err = ArtifactError(f"worker {worker} could not run the model: {message}")
        for fut in (*self._ready_waiters.values(), self._profile_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(err)
                return
        self.error = str(err)
        log.error("%s", err)
        if self.batcher is not None and self.batcher.live_workers() == 0:
            # Nothing can run the queue until a restart loads the model again (they go on, with
            # back-off): answer the waiting requests now and report not ready meanwhile.
            self.ready = False
            self.metrics.ready.set(0)
            gone = UnavailableError(f"no worker can run the model now ({message}); retry later")
            for batch in list(self.batcher.buffer.batches()):
                self.batcher.buffer.remove(batch)
                for item in batch.items:
                    self._fail(item.owner, gone)

    def _done(self, worker: int, batch_id: int, out: np.ndarray, compute_s: float) -> None:
        if self.batcher is None or self._loop is None:
            return
        now = self._loop.time()
        d = self.batcher.finished(worker, batch_id, now)
        if d is None:
            return
        self.batcher.observe(d, compute_s)
        m = self.metrics
        m.prediction_ratio.observe(compute_s / max(d.predicted_s, 1e-9))
        batch = d.batch
        m.batch_size.observe(batch.size)
        m.padding_ratio.observe(1.0 - batch.tokens / max(1, batch.padded_tokens))
        m.tokens.inc(batch.tokens)
        m.active_students.set(d.students)
        m.student_texts.labels(str(d.students)).inc(batch.size)
        m.compute_time.observe(compute_s)
        for row, item in enumerate(batch.items):
            req: _Request = item.owner
            queue_s = d.sent_at - item.arrival
            m.queue_time.observe(queue_s)
            if req.failed:
                continue
            req.outputs[item.index] = out[row]
            req.students = min(req.students, d.students)
            req.queue_s = max(req.queue_s, queue_s)
            req.compute_s = max(req.compute_s, compute_s)
            req.remaining -= 1
            if req.remaining == 0 and not req.future.done():
                req.future.set_result(Outcome(req.outputs, req.tokens, req.truncated, req.students,
                                              req.queue_s, req.compute_s))
        self._pump()

    def _failed(self, worker: int, batch_id: int, err: BertserveError) -> None:
        if self.batcher is None or self._loop is None:
            return
        d = self.batcher.finished(worker, batch_id, self._loop.time())
        if d is None:
            return
        for item in d.batch.items:
            self._fail(item.owner, err)
        self._pump()

    @staticmethod
    def _fail(req: _Request, err: BertserveError) -> None:
        req.failed = True
        if not req.future.done():
            req.future.set_exception(err)

    def _on_worker_exit(self, worker: int) -> None:
        """Re-queue what the dead worker held (once per text) and start a new one."""
        if self.batcher is None or self.pool is None or self._loop is None:  # still starting
            waiter = self._ready_waiters.get(worker)
            if waiter is not None and not waiter.done():
                waiter.set_exception(ArtifactError(f"worker {worker} died while loading the model"))
            elif worker == 0 and self._profile_waiter is not None and not self._profile_waiter.done():
                self._profile_waiter.set_exception(
                    ArtifactError(f"worker {worker} died while profiling the model"))
            return
        lost = self.batcher.worker_down(worker)
        retry: list[Item] = []
        for k, d in enumerate(lost):
            self.metrics.retried_batches.inc()
            for item in d.batch.items:
                if k == 0:  # the batch it was running; the others only waited in its pipe
                    item.attempts += 1
                if item.attempts > 1:
                    self._fail(item.owner, UnavailableError(
                        "a worker died twice while computing this request; it was not retried again"))
                elif not item.owner.failed:
                    retry.append(item)
        self.batcher.requeue(retry)
        self.metrics.worker_restarts.inc()
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        delay = 0.0 if len(self._restarts) <= 3 else min(10.0, 2.0 ** (len(self._restarts) - 3))
        self._loop.call_later(delay, self.pool.start, worker)
        self._pump()
