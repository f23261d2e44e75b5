"""``backend=auto`` on CPU: measure the installed runtimes once and run the fastest lossless one.

The candidates are ONNX Runtime fp32 (the reference), OpenVINO fp32 and, where the CPU
multiplies bf16 (AVX-512-BF16 or AMX), OpenVINO bf16 — all from the same fp32 graph. Each runs
real sentences (pairs for a cross-encoder) at a few serving shapes, interleaved, with the
threads one worker gets; a candidate qualifies if its outputs keep a cosine of at least
:data:`LOSSLESS` to the reference's, and wins if it is also the fastest by :data:`MARGIN`.
INT8 is never chosen (it costs accuracy: ask for it). The choice and its figures are cached
(by artifact, threads, CPU and runtime versions), so a server measures once per machine.

Set ``BERTSERVE_AUTO_MEASURE=0`` (or ``--no-auto-measure``) to keep the fixed choice
(onnxruntime), e.g. where start-up time matters more than speed, or for exact numerics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import Manifest
from ..cache import cache_root
from ..errors import BertserveError
from ..runtime.base import Batch
from ..runtime.loader import BackendOptions, load_backend

log = logging.getLogger("bertserve.choose")

LOSSLESS = 0.9999  # mean cosine to the reference's outputs that still counts as the same model
MARGIN = 1.05  # a candidate must be this much faster than the reference to replace it
CELLS = ((1, 16), (1, 48), (8, 32))  # (batch, tokens): a lone short text, a long one, a batch
REPEATS = 12
CHOICE_REVISION = 1


@dataclass(slots=True)
class Candidate:
    backend: str
    precision: str
    ms: float = 0.0  # sum over CELLS of the median milliseconds per call
    fidelity: float = 1.0  # mean cosine of its outputs to the reference's
    error: str | None = None  # why it could not run


@dataclass(slots=True)
class Choice:
    backend: str
    precision: str
    candidates: list[Candidate] = field(default_factory=list)
    threads: int | None = None

    def summary(self) -> str:
        ref = next((c for c in self.candidates if c.backend == "onnxruntime"), None)
        picked = (self.backend, self.precision)
        best = next((c for c in self.candidates if (c.backend, c.precision) == picked), None)
        if ref is None or best is None or not best.ms:
            return f"{self.backend} {self.precision}"
        return (f"{self.backend} {self.precision}: {ref.ms / best.ms:.2f}× onnxruntime fp32, "
                f"cosine {best.fidelity:.5f}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Choice:
        return cls(data["backend"], data["precision"], [Candidate(**c) for c in data["candidates"]],
                   data.get("threads"))


def measuring(opts: BackendOptions) -> bool:
    """Whether ``auto`` measures: on CPU, for the artifact's own precision, unless switched off."""
    flag = opts.auto_measure
    if flag is None:
        flag = os.environ.get("BERTSERVE_AUTO_MEASURE", "1").lower() not in ("0", "false", "no", "off")
    return (bool(flag) and opts.backend == "auto" and opts.device == "cpu"
            and opts.precision in (None, "fp32") and opts.student_threads <= 1)


def eligible(manifest: Manifest) -> bool:
    return manifest.precision == "fp32" and manifest.backend in ("torch", "onnxruntime")


def candidates() -> list[Candidate]:
    out = [Candidate("onnxruntime", "fp32")]
    try:
        from ..runtime.openvino_backend import cpu_has_bf16
    except ImportError:  # pragma: no cover - openvino is a dependency
        return out
    try:
        bf16 = cpu_has_bf16()
    except BertserveError:
        return out
    out.append(Candidate("openvino", "fp32"))
    if bf16:
        out.append(Candidate("openvino", "bf16"))
    return out


def sample_batches(folder: Path, manifest: Manifest) -> list[Batch]:
    """Real sentences (pairs for a pair model) cut to each cell's length, padded to it."""
    from ..data import rotten_tomatoes
    from ..tokenizer import TextTokenizer

    texts = rotten_tomatoes()[0][::97][:64]
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    batches = []
    for b, n in CELLS:
        rows = texts[: max(b, 8)]
        enc = tok.encode(rows, pairs=rows[::-1] if manifest.pairs else None, max_length=n)
        starts = enc.type_starts[:b] if enc.type_starts is not None else None
        batches.append(Batch.from_ids(enc.ids[:b], tok.pad_id, type_starts=starts))
    batches.append(Batch.from_ids(enc.ids, tok.pad_id, type_starts=enc.type_starts))  # fidelity only
    return batches


def fidelity(out: np.ndarray, ref: np.ndarray) -> float:
    """Mean row cosine for embeddings; for scores and logits, the cosine of all of them centred
    (a one-logit row's own cosine is always ±1)."""
    if out.shape[1] == 1 or ref.shape[1] <= 8:
        a, b = out.ravel() - ref.mean(), ref.ravel() - ref.mean()
        return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    num = (out * ref).sum(1)
    den = np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return float((num / den).mean())


def measure(folder: Path, manifest: Manifest, threads: int | None) -> Choice:
    """Time every candidate on the same batches, interleaved, and pick the fastest lossless one."""
    batches = sample_batches(folder, manifest)
    runners = {}
    cands = candidates()
    for c in cands:
        try:
            runners[c.backend, c.precision] = load_backend(
                folder, BackendOptions(backend=c.backend, precision=c.precision, threads=threads))[2]  # type: ignore[arg-type]
        except BertserveError as exc:
            c.error = str(exc)
    live = [c for c in cands if c.error is None]
    ref_out = runners["onnxruntime", "fp32"].run(batches[-1])
    times: dict[tuple[str, str], list[list[float]]] = {(c.backend, c.precision): [[] for _ in CELLS]
                                                       for c in live}
    for c in live:  # warm every shape, and compare outputs on the fidelity batch
        runner = runners[c.backend, c.precision]
        for batch in batches[:-1]:
            runner.run(batch)
        c.fidelity = fidelity(runner.run(batches[-1]), ref_out)
    for _ in range(REPEATS):
        for c in live:
            runner = runners[c.backend, c.precision]
            for i, batch in enumerate(batches[:-1]):
                t0 = time.perf_counter()
                runner.run(batch)
                times[c.backend, c.precision][i].append(time.perf_counter() - t0)
    for c in live:
        c.ms = round(sum(float(np.median(t)) for t in times[c.backend, c.precision]) * 1e3, 3)
        c.fidelity = round(c.fidelity, 6)
    ref = live[0]
    best = ref
    for c in live[1:]:
        if c.fidelity >= LOSSLESS and c.ms * MARGIN < best.ms:
            best = c
    return Choice(best.backend, best.precision, cands, threads)


def choice_key(folder: Path, manifest: Manifest, threads: int | None) -> str:
    import onnxruntime

    from ..version import __version__

    try:
        import openvino

        ov = openvino.__version__
    except ImportError:  # pragma: no cover
        ov = None
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    stamp = [str(folder.resolve()), manifest.model_dump_json(), threads, cpu, os.cpu_count(),
             onnxruntime.__version__, ov, __version__, CHOICE_REVISION]
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]


def choice_path(folder: Path, manifest: Manifest, threads: int | None) -> Path:
    return cache_root() / "choices" / f"{manifest.name}-{choice_key(folder, manifest, threads)}.json"


def cached_choice(folder: Path, manifest: Manifest, threads: int | None) -> Choice | None:
    path = choice_path(folder, manifest, threads)
    try:
        return Choice.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose(folder: Path, manifest: Manifest, threads: int | None) -> Choice:
    """The cached choice for this fp32 graph artifact, or measure one now (and cache it)."""
    found = cached_choice(folder, manifest, threads)
    if found is not None:
        return found
    choice = measure(folder, manifest, threads)
    path = choice_path(folder, manifest, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(choice.to_json(), indent=2) + "\n")
    tmp.replace(path)
    log.info("backend auto: %s", choice.summary())
    return choice
