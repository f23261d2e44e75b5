"""The candidates built from a teacher, each by one bertserve command.

Every candidate that needs building is made by running the bertserve command its report
prints (``python -m bertserve.cli …`` in a child process), so the report's commands are what ran,
the progress bars are the commands' own, and ``optimize`` calls the compression commands instead
of being a parallel path to them. A candidate is an artifact plus the backend and precision it is
served and measured with: the teacher at each precision is a candidate without a new artifact.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import Manifest

TEACHER = "teacher"


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    step: str  # teacher | quantize | prune-vocab | distill | stack
    source: str = TEACHER  # the candidate it is built from
    params: dict[str, Any] = field(default_factory=dict)  # the command's flags (training: filled later)
    backend: str = "onnxruntime"  # served and measured with this backend …
    precision: str | None = "fp32"  # … and precision (None: the artifact's own)
    layers: int = 0  # transformer layers it trains (distill, stack: K × L); 0: not trained

    @property
    def trained(self) -> bool:
        return self.step in ("distill", "stack")

    def serve_flags(self) -> list[str]:
        flags = ["--backend", self.backend]
        return flags + (["--precision", self.precision] if self.precision else [])


@dataclass(frozen=True, slots=True)
class Space:
    """What to try. Defaults cover the issue's list; tests shrink it."""

    layers: tuple[int, ...] = (1, 2, 3, 4)
    stacks: tuple[tuple[int, int], ...] = ((2, 2),)  # (K students, L layers each), refitted
    int8: bool = True
    openvino: bool = True
    vocab: bool = True
    transfer: str = ""  # --corpus of the students ("" : by task, see :func:`default_transfer`)
    augment: int = 0
    label_weight: float = 0.9  # classifiers: weight of the true label where the transfer text has one
    lr: float = 1e-3
    calibration_texts: int = 256


def default_transfer(manifest: Manifest) -> str:
    """Labelled reviews for a sentiment teacher mixed with tweets (another domain, so the
    students see more than the teacher's training texts); tweets and news for an embedder."""
    return "reviews+tweets" if manifest.task == "classify" else "tweets+news"


def openvino_precisions() -> list[str]:
    """OpenVINO precisions this machine runs besides fp32: bf16 where the CPU multiplies it."""
    try:
        from ..runtime.openvino_backend import cpu_has_bf16

        return ["bf16"] if cpu_has_bf16() else []
    except Exception:  # noqa: BLE001 - no openvino, or it cannot tell: leave it out
        return []


def candidates(manifest: Manifest, space: Space) -> list[Candidate]:
    """Every candidate, teachers first, each after the one it is built from."""
    corpus = space.transfer or default_transfer(manifest)
    quant = {"method": "static-int8", "calibration-texts": space.calibration_texts, "corpus": "tweets"}
    out = [Candidate(TEACHER, "teacher")]
    if space.openvino:
        out += [Candidate(f"teacher-ov-{p}", "teacher", backend="openvino", precision=p)
                for p in openvino_precisions()]
    if space.int8:
        out.append(Candidate("teacher-int8", "quantize", params=quant, precision=None))
        if space.openvino:
            out.append(Candidate("teacher-ov-int8", "quantize", params={**quant, "method": "ov-int8"},
                                 backend="openvino", precision=None))
    if space.vocab:
        corpora = [c for c in corpus.split("+") if c]
        out.append(Candidate("teacher-vocab", "prune-vocab",
                             params={"corpus": [c if c != "reviews" else "reviews:train" for c in corpora]}))
    train = {"corpus": corpus, "lr": space.lr, "augment": space.augment}
    if manifest.task == "classify":
        train["label-weight"] = space.label_weight
    for n in space.layers:
        name = f"student-{n}l"
        out.append(Candidate(name, "distill", params={**train, "layers": n}, layers=n))
        if space.int8:  # a student is a one-member ensemble: INT8 by its ONNX export
            out.append(Candidate(f"{name}-int8", "quantize", source=name, params={"method": "dynamic-int8"},
                                 precision=None))
    for k, n in space.stacks:
        name = f"stack-{k}x{n}"
        out.append(Candidate(name, "stack", params={**train, "students": k, "layers": n,
                                                   "refit-epochs": 0.5}, layers=k * n))
        if space.int8:
            out.append(Candidate(f"{name}-int8", "quantize", source=name,
                                 params={"method": "dynamic-int8"}, precision=None))
    return out


def argv(c: Candidate, teacher: str, src: str, out: Path) -> list[str]:
    """The bertserve command (after ``bertserve``) that builds ``c`` into ``out``."""
    flags: list[str] = []
    for key, value in c.params.items():
        if key in ("augment",) and not value:
            continue
        for v in value if isinstance(value, list) else [value]:
            flags += [f"--{key}", str(v)]
    if c.step in ("quantize", "prune-vocab"):
        return [c.step, src, str(out), *flags]
    if c.step == "distill":
        return ["distill", str(out), "--teacher", teacher, "--eval-n", "0", *flags]
    if c.step == "stack":
        return ["stack", str(out), "--teacher", teacher, "--eval-n", "0", *flags]
    raise ValueError(f"{c.name} is not built")


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "bertserve.cli", *args]


def shown(args: list[str]) -> str:
    """The command as a user types it."""
    return shlex.join(["bertserve", *args])
