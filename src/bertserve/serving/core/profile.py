"""Run-time model of a backend: measured once on a batch × length grid, then fitted and saved.

The batcher needs to know how long a batch will take *before* running it. Cost of a transformer
batch is well described by ``c0 + c1·B + c2·B·L + c3·B·L²`` (fixed overhead, per-sequence work,
per-token matmuls, attention); the coefficients are fitted (relative-error weighted) to the
grid measured at start-up. The profile is saved under the cache folder keyed by the artifact
and the worker layout, so a restart does not measure again.

When widening is on (``--widen``) and the layout has several workers, the profile also measures small batches
run *wide* (on every core of the layout at once): the batcher widens a lone batch on an idle
machine only where this measurement says it pays.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...cache import cache_root

PROFILE_VERSION = 2
BATCHES = (1, 2, 4, 8, 16, 32, 64)
WIDE_MAX_BATCH = 4  # widening only happens with an empty queue: batches stay small
LENGTHS = (8, 16, 32, 64, 128, 256, 512)


def profile_grid(max_batch: int, max_len: int, max_tokens: int) -> list[tuple[int, int]]:
    """(batch, length) cells to measure, smallest first; never above ``max_tokens``."""
    batches = sorted({b for b in BATCHES if b <= max_batch} | {1})
    lengths = sorted({n for n in LENGTHS if n <= max_len} | {min(max_len, 8)})
    cells = [(b, n) for b in batches for n in lengths if b * n <= max_tokens]
    return sorted(cells, key=lambda c: (c[0] * c[1], c[0]))


def wide_grid(cells: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The cells measured wide as well: small batches of every length."""
    return [(b, n) for b, n in cells if b <= WIDE_MAX_BATCH]


def features(batch: np.ndarray, length: np.ndarray) -> np.ndarray:
    b = batch.astype(np.float64)
    n = length.astype(np.float64)
    return np.stack([np.ones_like(b), b, b * n, b * n * n / 512.0], axis=-1)


def _cost(c: list[float], batch: int, length: int) -> float:
    """The same terms as :func:`features`, on plain floats."""
    return c[0] + c[1] * batch + c[2] * batch * length + c[3] * batch * length * length / 512.0


@dataclass(slots=True)
class RunTimeModel:
    """Predicts seconds for a batch of ``batch`` texts padded to ``length`` tokens.

    ``coef[m]`` holds the fitted coefficients for an ensemble run with ``m`` students (only
    ``1`` for a plain model); other student counts interpolate linearly between them.
    """

    coef: dict[int, list[float]]
    cells: dict[int, list[tuple[int, int, float]]] = field(default_factory=dict)
    max_rel_error: float = 0.0
    wide_coef: dict[int, list[float]] = field(default_factory=dict)  # empty: never measured wide
    wide_cells: dict[int, list[tuple[int, int, float]]] = field(default_factory=dict)

    @classmethod
    def fit(cls, measured: dict[int, list[tuple[int, int, float]]],
            wide: dict[int, list[tuple[int, int, float]]] | None = None) -> RunTimeModel:
        """Fit the narrow grid (``measured``) and, if given, the wide one."""
        coef, worst = _fit_all(measured)
        wide_coef, _ = _fit_all(wide or {})
        return cls(coef, _rows(measured), worst, wide_coef, _rows(wide or {}))

    def predict(self, batch: int, length: int, students: int = 1) -> float:
        return _interpolate(self.coef, batch, length, students)

    def predict_wide(self, batch: int, length: int, students: int = 1) -> float | None:
        """Seconds for the batch run on every core of the layout; None if never measured."""
        if not self.wide_coef:
            return None
        return _interpolate(self.wide_coef, batch, length, students)

    def to_json(self) -> dict:
        data = asdict(self)
        for name in ("coef", "wide_coef"):
            data[name] = {str(k): v for k, v in data[name].items()}
        for name in ("cells", "wide_cells"):
            data[name] = {str(k): [list(c) for c in v] for k, v in data[name].items()}
        return {"version": PROFILE_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict) -> RunTimeModel:
        def coefs(name: str) -> dict[int, list[float]]:
            return {int(k): [float(x) for x in v] for k, v in data.get(name, {}).items()}

        def cells(name: str) -> dict[int, list[tuple[int, int, float]]]:
            return {int(k): [tuple(c) for c in v] for k, v in data.get(name, {}).items()}

        return cls(coefs("coef"), cells("cells"), float(data.get("max_rel_error", 0.0)),
                   coefs("wide_coef"), cells("wide_cells"))


def _rows(measured: dict[int, list[tuple[int, int, float]]]) -> dict[int, list[tuple[int, int, float]]]:
    return {m: [tuple(r) for r in rows] for m, rows in measured.items()}  # type: ignore[misc]


def _fit_all(measured: dict[int, list[tuple[int, int, float]]]) -> tuple[dict[int, list[float]], float]:
    """Coefficients per student count, and the worst relative error of the fit on its cells."""
    coef: dict[int, list[float]] = {}
    worst = 0.0
    for m, rows in measured.items():
        arr = np.asarray(rows, dtype=np.float64)
        x = features(arr[:, 0], arr[:, 1])
        y = arr[:, 2]
        w = 1.0 / np.maximum(y, 1e-5)  # relative error: small batches matter as much
        c, *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
        c = np.maximum(c, 0.0)  # a negative cost term only fits noise
        if c.sum() == 0:
            c[0] = float(y.mean())
        coef[m] = [float(v) for v in c]
        pred = x @ c
        worst = max(worst, float(np.max(np.abs(pred - y) / np.maximum(y, 1e-5))))
    return coef, worst


def _interpolate(coef: dict[int, list[float]], batch: int, length: int, students: int) -> float:
    """Cost at ``students``, linear between the measured student counts around it."""
    # Plain floats, no numpy: admission calls this for every waiting batch on the event loop.
    keys = sorted(coef)
    lo = max((k for k in keys if k <= students), default=keys[0])
    hi = min((k for k in keys if k >= students), default=keys[-1])
    t_lo = _cost(coef[lo], batch, length)
    if hi == lo:
        return t_lo
    t_hi = _cost(coef[hi], batch, length)
    return t_lo + (t_hi - t_lo) * (students - lo) / (hi - lo)


def profile_key(folder: Path, manifest_json: str, layout: dict) -> str:
    """Identify a profile by artifact contents, run options and the machine's CPU."""
    stamp: list[str] = [str(folder.resolve()), manifest_json, json.dumps(layout, sort_keys=True)]
    for f in sorted(folder.rglob("*")):
        if f.suffix in (".onnx", ".safetensors", ".data"):
            st = f.stat()
            stamp.append(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}")
    try:
        cpu = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        cpu = ""
    stamp.append(cpu)
    stamp.append(str(os.cpu_count()))
    return hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:20]


def profile_path(key: str) -> Path:
    return cache_root() / "profiles" / f"{key}.json"


def load_profile(key: str) -> RunTimeModel | None:
    path = profile_path(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("version") != PROFILE_VERSION:
        return None
    try:
        return RunTimeModel.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def save_profile(key: str, model: RunTimeModel) -> Path | None:
    """Write atomically; a read-only cache only costs a re-profile at the next start."""
    path = profile_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(model.to_json(), indent=1))
        tmp.replace(path)
    except OSError:
        return None
    return path
