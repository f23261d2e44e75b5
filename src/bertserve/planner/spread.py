"""How much a real batch's run time scatters around its prediction, to draw simulated batch times from.

The profile gives each (batch, length) cell one time: the median of a few runs on a quiet
machine. A served batch takes that time scaled by a *level* (the workers share their cores with
the front end: :func:`.plan.cpu_slowdown`) and by a *scatter* around that level (preemption by the
event loop, the load generator and the other worker; caches; frequency). Near capacity the scatter
is what builds the queue tail, so the simulation draws each batch's time as
``profile × level × ratio`` with ``ratio`` from a :class:`Spread` of mean 1.

A spread is measured, never assumed:

- from a running server's ``/metrics``: the histogram ``bertserve_batch_time_prediction_ratio``
  (measured / predicted time of every batch), taken as the difference of two scrapes around a
  stretch of real traffic (:meth:`Spread.from_metrics`);
- from per-batch ratios (:meth:`Spread.from_samples`), e.g. a probe's measured batch times over
  the profile's.

Only its *shape* is used (it is scaled to mean 1): the server's histogram is relative to its
live-calibrated prediction, whose level drifts with load, and the level is modelled separately.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

METRIC = "bertserve_batch_time_prediction_ratio"


@dataclass(frozen=True, slots=True)
class Spread:
    """A distribution of batch-time ratios: bins ``[lo, hi]`` with weights (lo == hi: a point).

    Drawing picks a bin by weight, then a value uniformly inside it.
    """

    lo: np.ndarray
    hi: np.ndarray
    weight: np.ndarray
    source: str = ""
    batches: int = 0  # how many measured batches it rests on

    def __post_init__(self) -> None:
        if not (len(self.lo) == len(self.hi) == len(self.weight)) or len(self.lo) == 0:
            raise ConfigError("a spread needs at least one bin, with as many bounds as weights")
        if np.any(self.weight < 0) or self.weight.sum() <= 0:
            raise ConfigError("a spread's weights must be ≥ 0 and not all 0")
        if np.any(self.lo < 0) or np.any(self.hi < self.lo):
            raise ConfigError("a spread's bins must satisfy 0 ≤ lo ≤ hi")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_samples(cls, ratios: Sequence[float] | np.ndarray, source: str = "samples") -> Spread:
        """Measured ratios, each a point of equal weight."""
        r = np.asarray(ratios, dtype=float)
        r = r[np.isfinite(r) & (r > 0)]
        if len(r) == 0:
            raise ConfigError("no positive ratios to build a spread from")
        return cls(r, r.copy(), np.ones(len(r)), source, len(r))

    @classmethod
    def from_histogram(cls, buckets: Sequence[tuple[float, float]], source: str = "histogram") -> Spread:
        """Prometheus buckets ``(le, cumulative count)``, ``le`` = ∞ for the last one.

        Bucket k holds the values in ``(le[k-1], le[k]]``. The open ends get the width of their
        neighbour on a log scale: below the first bound down to ``le0² / le1``, above the last
        finite one up to ``le_n² / le_{n-1}`` (so 0.5, 0.67, … opens at 0.37; …, 3, 5 ends at 8.3).
        """
        rows = sorted((float(le), float(c)) for le, c in buckets)
        finite = [le for le, _ in rows if math.isfinite(le)]
        if len(finite) < 2:
            raise ConfigError("a ratio histogram needs at least two finite bucket bounds")
        counts = np.diff([0.0] + [c for _, c in rows])
        if np.any(counts < -1e-9):
            raise ConfigError("histogram counts must be cumulative (non-decreasing)")
        bottom = finite[0] ** 2 / finite[1]
        top = finite[-1] ** 2 / finite[-2]
        lo, hi = [], []
        prev = bottom
        for le, _ in rows:
            upper = top if math.isinf(le) else le
            lo.append(prev)
            hi.append(upper)
            prev = upper
        weight = np.clip(counts, 0, None)
        if weight.sum() <= 0:
            raise ConfigError("the ratio histogram is empty: no batch ran between the two scrapes")
        return cls(np.array(lo), np.array(hi), weight, source, int(round(weight.sum())))

    @classmethod
    def from_metrics(cls, after: str, before: str | None = None, source: str = "/metrics") -> Spread:
        """The ratio histogram of a server's ``/metrics`` text; with ``before``, only what ran between."""
        now = histogram_buckets(after)
        if before is not None:
            then = dict(histogram_buckets(before))
            now = [(le, c - then.get(le, 0.0)) for le, c in now]
        return cls.from_histogram(now, source)

    @classmethod
    def load(cls, where: str) -> Spread:
        """A spread from a saved ``/metrics`` text, a server's ``/metrics`` URL or a spread JSON."""
        if where.startswith(("http://", "https://")):
            import urllib.request

            try:
                with urllib.request.urlopen(where, timeout=10) as r:
                    return cls.from_metrics(r.read().decode(), source=where)
            except OSError as exc:
                raise ConfigError(f"cannot read {where}: {exc}") from exc
        try:
            text = Path(where).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read spread {where}: {exc}") from exc
        if text.lstrip().startswith("{"):
            try:
                return cls.from_json(json.loads(text))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"cannot read spread {where}: {exc}") from exc
        return cls.from_metrics(text, source=where)

    def to_json(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "weight": self.weight.tolist(),
                "source": self.source, "batches": self.batches}

    @classmethod
    def from_json(cls, data: dict) -> Spread:
        return cls(np.asarray(data["lo"], float), np.asarray(data["hi"], float),
                   np.asarray(data["weight"], float), str(data.get("source", "")),
                   int(data.get("batches", 0)))

    # -- use -------------------------------------------------------------------------------
    @property
    def mean(self) -> float:
        p = self.weight / self.weight.sum()
        return float(np.sum(p * (self.lo + self.hi) / 2))

    def normalised(self) -> Spread:
        """The same shape scaled to mean 1: the scatter without the level."""
        m = self.mean
        return Spread(self.lo / m, self.hi / m, self.weight, self.source, self.batches)

    def widened(self, factor: float) -> Spread:
        """Each value's distance from the mean times ``factor`` (what-if; ≥ 0 values kept)."""
        m = self.mean
        lo = np.clip(m + (self.lo - m) * factor, 0, None)
        hi = np.clip(m + (self.hi - m) * factor, 0, None)
        return Spread(np.minimum(lo, hi), np.maximum(lo, hi), self.weight, self.source, self.batches)

    def quantile(self, q: float, n: int = 200_000, seed: int = 0) -> float:
        return float(np.quantile(self.draw(np.random.default_rng(seed), n), q))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        p = self.weight / self.weight.sum()
        k = rng.choice(len(p), size=n, p=p)
        return self.lo[k] + (self.hi[k] - self.lo[k]) * rng.random(n)

    def sampler(self, rng: np.random.Generator, chunk: int = 4096) -> RatioStream:
        return RatioStream(self, rng, chunk)

    def summary(self) -> str:
        q = np.quantile(self.draw(np.random.default_rng(0), 100_000), [0.1, 0.5, 0.9, 0.99])
        return (f"p10 {q[0]:.2f}, p50 {q[1]:.2f}, p90 {q[2]:.2f}, p99 {q[3]:.2f} of the mean "
                f"({self.batches} batches, {self.source})")


class RatioStream:
    """Draws ratios one at a time from a spread, in vectorised chunks (the simulation's hot path)."""

    def __init__(self, spread: Spread, rng: np.random.Generator, chunk: int) -> None:
        self.spread, self.rng, self.chunk = spread, rng, chunk
        self._buf: list[float] = []

    def __call__(self) -> float:
        if not self._buf:
            self._buf = self.spread.draw(self.rng, self.chunk).tolist()[::-1]
        return self._buf.pop()


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)')


def histogram_buckets(text: str, name: str = METRIC) -> list[tuple[float, float]]:
    """``(le, cumulative count)`` of one histogram in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = _SAMPLE.match(line.strip())
        if not m or m.group("name") != f"{name}_bucket":
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        if "le" not in labels:
            continue
        out.append((float(labels["le"].replace("+Inf", "inf")), float(m.group("value"))))
    if not out:
        raise ConfigError(f"no {name} histogram in the metrics text")
    return sorted(out)
