"""Open-loop workloads: when each request is sent, and which texts it carries.

Arrivals are fixed before the run starts (a request goes out at its scheduled time whether or
not earlier ones were answered), so a slow server shows up as queueing instead of slowing the
client down. Every process is piecewise-constant-rate Poisson, drawn from a seeded generator:
the same seed gives the same schedule, whatever the corpus.

- ``poisson``: one rate for a duration.
- ``bursts``: a base rate, multiplied by ``factor`` for ``burst_s`` seconds in every period.
- ``sweep``: a step of rates, one phase each (long enough for ``min_requests``), to find capacity.
- ``ramp``: one phase whose rate rises linearly (thinning), a quick first look at capacity.
- ``replay``: timestamps and texts from a trace file (JSONL ``{"t", "text"|"texts"}`` or CSV ``t,text``;
  rerank requests as JSONL ``{"t", "query", "documents"}``).

What each request carries comes from a sampler: :class:`TextSampler` (texts to embed) or
:class:`~bertserve.bench.ranking.RerankSampler` (a query and its documents, for rerank APIs).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time with a constant arrival rate (requests per second)."""

    start_s: float
    end_s: float
    rate: float


@dataclass(slots=True)
class Phase:
    """One measured stretch of a run: its schedule (seconds from the phase start) and texts."""

    name: str
    duration_s: float
    arrivals: np.ndarray  # (N,) sorted offsets in seconds
    texts: list[list[str]]  # (N,) texts of each request (a rerank request's documents)
    offered_rate: float | None = None  # the nominal rate; None for bursts and traces
    segments: list[Segment] = field(default_factory=list)
    queries: list[str] | None = None  # (N,) each request's query: a rerank phase; None: texts to embed

    def __post_init__(self) -> None:
        if len(self.arrivals) != len(self.texts):
            raise ConfigError(f"phase {self.name}: {len(self.arrivals)} arrivals but {len(self.texts)} texts")
        if self.queries is not None and len(self.queries) != len(self.texts):
            raise ConfigError(f"phase {self.name}: {len(self.texts)} requests but "
                              f"{len(self.queries)} queries")

    @property
    def count(self) -> int:
        return len(self.arrivals)


@dataclass(slots=True)
class Workload:
    """What a run sends: phases one after another (the client drains between them)."""

    kind: str
    phases: list[Phase]
    params: dict[str, object] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(p.count for p in self.phases)


def _check_rate(rate: float, what: str = "rate") -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ConfigError(f"{what} must be a positive number of requests per second, got {rate}")


def _check_duration(duration_s: float) -> None:
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ConfigError(f"duration must be positive seconds, got {duration_s}")


def piecewise_poisson(segments: Sequence[Segment], rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a Poisson process whose rate is constant on each segment.

    Exact: the count on a segment is Poisson(rate × length) and, given the count, the times
    are independent uniforms on it.
    """
    parts = []
    for seg in segments:
        length = seg.end_s - seg.start_s
        if length <= 0 or seg.rate <= 0:
            continue
        n = rng.poisson(seg.rate * length)
        parts.append(np.sort(rng.uniform(seg.start_s, seg.end_s, n)))
    return np.concatenate(parts) if parts else np.empty(0)


def poisson_arrivals(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    _check_rate(rate)
    _check_duration(duration_s)
    return piecewise_poisson([Segment(0.0, duration_s, rate)], rng)


def burst_segments(base_rate: float, factor: float, burst_s: float, period_s: float,
                   duration_s: float, burst_at_s: float | None = None) -> list[Segment]:
    """Base rate, times ``factor`` for ``burst_s`` seconds starting ``burst_at_s`` into each period.

    The burst starts half-way through the period by default, so every period opens at the
    base rate and the timeline shows the server before, during and after each burst.
    """
    _check_rate(base_rate, "base rate")
    _check_duration(duration_s)
    if factor < 1:
        raise ConfigError(f"burst factor must be ≥ 1, got {factor}")
    if not 0 < burst_s <= period_s:
        raise ConfigError(f"burst length must be in (0, period]; got {burst_s} s and period {period_s} s")
    at = period_s / 2 if burst_at_s is None else burst_at_s
    if not 0 <= at <= period_s - burst_s:
        raise ConfigError(f"the burst must fit in its period: start {at} s + {burst_s} s > {period_s} s")
    segments = []
    t = 0.0
    while t < duration_s:
        edges = [t, t + at, t + at + burst_s, t + period_s]
        rates = [base_rate, base_rate * factor, base_rate]
        for lo, hi, r in zip(edges, edges[1:], rates, strict=False):
            hi = min(hi, duration_s)
            if hi > lo:
                segments.append(Segment(lo, hi, r))
        t += period_s
    return segments


def ramp_arrivals(start_rate: float, end_rate: float, duration_s: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Rate rising linearly from ``start_rate`` to ``end_rate`` (Lewis–Shedler thinning)."""
    _check_rate(start_rate, "start rate")
    _check_rate(end_rate, "end rate")
    _check_duration(duration_s)
    peak = max(start_rate, end_rate)
    candidates = poisson_arrivals(peak, duration_s, rng)
    rate_at = start_rate + (end_rate - start_rate) * candidates / duration_s
    keep = rng.uniform(0.0, peak, len(candidates)) < rate_at
    return candidates[keep]


class Sampler(Protocol):
    """What the requests carry: ``sample(n)`` → (texts of each request, queries or None)."""

    params: dict[str, object]  # added to the workload's parameters (in the report)

    def sample(self, n: int) -> tuple[list[list[str]], list[str] | None]: ...


class TextSampler:
    """Texts drawn at random (seeded) from a corpus, so lengths follow its real distribution."""


    def __init__(self, texts: Sequence[str], seed: int = 0, texts_per_request: int = 1,
                 max_chars: int | None = None) -> None:
        pool = [t for t in texts if t]
        if max_chars is not None:
            pool = [t[:max_chars] for t in pool]
        if not pool:
            raise ConfigError("the corpus has no non-empty texts")
        if texts_per_request < 1:
            raise ConfigError(f"texts per request must be ≥ 1, got {texts_per_request}")
        self.pool = pool
        self.per_request = texts_per_request
        self.params: dict[str, object] = {}  # nothing added: an embedding run's report is as before
        self.rng = np.random.default_rng([seed, 1])  # its own stream: arrivals do not depend on it

    def draw(self, n: int) -> list[list[str]]:
        idx = self.rng.integers(0, len(self.pool), size=(n, self.per_request))
        return [[self.pool[i] for i in row] for row in idx]

    def sample(self, n: int) -> tuple[list[list[str]], None]:
        return self.draw(n), None


def _phase(name: str, duration_s: float, arrivals: np.ndarray, sampler: Sampler,
           offered_rate: float | None = None, segments: list[Segment] | None = None) -> Phase:
    texts, queries = sampler.sample(len(arrivals))
    return Phase(name, duration_s, arrivals, texts, offered_rate, segments or [], queries)


def _arrival_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, 0])


def poisson(rate: float, duration_s: float, sampler: Sampler, seed: int = 0) -> Workload:
    times = poisson_arrivals(rate, duration_s, _arrival_rng(seed))
    phase = _phase(f"{rate:g}/s", duration_s, times, sampler, offered_rate=rate,
                   segments=[Segment(0.0, duration_s, rate)])
    params = {"rate": rate, "duration_s": duration_s, "seed": seed, **sampler.params}
    return Workload("poisson", [phase], params)


def bursts(base_rate: float, factor: float, burst_s: float, period_s: float, duration_s: float,
           sampler: Sampler, seed: int = 0) -> Workload:
    segments = burst_segments(base_rate, factor, burst_s, period_s, duration_s)
    times = piecewise_poisson(segments, _arrival_rng(seed))
    phase = _phase(f"burst {base_rate:g}/s ×{factor:g}", duration_s, times, sampler, segments=segments)
    params = {"base_rate": base_rate, "factor": factor, "burst_s": burst_s, "period_s": period_s,
              "duration_s": duration_s, "seed": seed, **sampler.params}
    return Workload("burst", [phase], params)


def sweep(rates: Sequence[float], step_s: float, sampler: Sampler, seed: int = 0,
          min_requests: int = 0) -> Workload:
    """One Poisson phase per rate; each lasts ``step_s`` or long enough for ``min_requests``."""
    if not rates:
        raise ConfigError("a sweep needs at least one rate")
    if not (step_s >= 0 and math.isfinite(step_s)) or min_requests < 0:
        raise ConfigError(f"sweep steps need step_s ≥ 0 and min_requests ≥ 0, got {step_s} and "
                          f"{min_requests}")
    if step_s == 0 and min_requests == 0:
        raise ConfigError("a sweep step needs a length: step_s > 0 or min_requests > 0")
    rng = _arrival_rng(seed)
    phases = []
    for rate in rates:
        _check_rate(rate)
        duration = max(step_s, min_requests / rate)
        times = poisson_arrivals(rate, duration, rng)
        phases.append(_phase(f"{rate:g}/s", duration, times, sampler, offered_rate=rate,
                             segments=[Segment(0.0, duration, rate)]))
    params = {"rates": list(rates), "step_s": step_s, "min_requests": min_requests, "seed": seed,
              **sampler.params}
    return Workload("sweep", phases, params)


def ramp(start_rate: float, end_rate: float, duration_s: float, sampler: Sampler,
         seed: int = 0) -> Workload:
    times = ramp_arrivals(start_rate, end_rate, duration_s, _arrival_rng(seed))
    phase = _phase(f"ramp {start_rate:g}→{end_rate:g}/s", duration_s, times, sampler)
    params = {"start_rate": start_rate, "end_rate": end_rate, "duration_s": duration_s, "seed": seed,
              **sampler.params}
    return Workload("ramp", [phase], params)


def load_trace(path: str | Path, speed: float = 1.0) -> tuple[np.ndarray, list[list[str]]]:
    """Read a trace: JSONL lines ``{"t": s, "text": ...}`` / ``{"t", "texts": [...]}``, or CSV ``t,text``.

    Times are made relative to the first arrival and divided by ``speed`` (2 = twice as fast).
    """
    times, texts, _ = read_trace(path, speed)
    return times, texts


def read_trace(path: str | Path, speed: float = 1.0) -> tuple[np.ndarray, list[list[str]], list[str] | None]:
    """:func:`load_trace`, and rerank traces: JSONL ``{"t", "query", "documents": [...]}`` lines
    give each request's documents as its texts, and the queries (else None)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"trace file {p} does not exist")
    if speed <= 0:
        raise ConfigError(f"replay speed must be positive, got {speed}")
    rows: list[tuple[float, list[str], str | None]] = []
    try:
        if p.suffix in (".csv", ".tsv"):
            with p.open(encoding="utf-8", newline="") as f:
                for r in csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ","):
                    rows.append((float(r["t"]), [r["text"]], None))
        else:
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                obj = json.loads(line)
                query = obj.get("query")
                if query is not None:
                    texts = obj["documents"] if "documents" in obj else obj["texts"]
                else:
                    texts = obj["texts"] if "texts" in obj else [obj["text"]]
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise ConfigError(f"{p}:{n}: 'texts' must be a list of strings")
                if query is not None and (not isinstance(query, str) or not texts):
                    raise ConfigError(f"{p}:{n}: a rerank line needs a string 'query' and a non-empty "
                                      "'documents' list")
                rows.append((float(obj["t"]), texts, query))
    except (KeyError, ValueError, AttributeError) as exc:
        raise ConfigError(f"cannot read trace {p}: {exc!r}; expected JSONL {{t, text}} or CSV t,text "
                          "(rerank: JSONL {t, query, documents})") from exc
    if not rows:
        raise ConfigError(f"trace {p} is empty")
    ranked = {r[2] is not None for r in rows}
    if len(ranked) > 1:
        raise ConfigError(f"trace {p} mixes rerank lines (with a 'query') and lines of texts")
    rows.sort(key=lambda r: r[0])
    t = np.array([r[0] for r in rows], dtype=float)
    queries = [str(r[2]) for r in rows] if ranked == {True} else None
    return (t - t[0]) / speed, [r[1] for r in rows], queries


def replay(path: str | Path, speed: float = 1.0) -> Workload:
    times, texts, queries = read_trace(path, speed)
    duration = float(times[-1]) + 1e-3 if len(times) else 0.0
    phase = Phase(f"replay {Path(path).name}", max(duration, 1e-3), times, texts, queries=queries)
    params: dict[str, object] = {"trace": str(path), "speed": speed}
    if queries is not None:
        params |= {"request": "rerank", "documents": "trace"}
    return Workload("replay", [phase], params)


def offered_per_second(phase: Phase, bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(bin starts, scheduled requests per second in each bin): the offered-rate line of a timeline."""
    edges = np.arange(0.0, phase.duration_s + bin_s, bin_s)
    counts, _ = np.histogram(phase.arrivals, bins=edges)
    return edges[:-1], counts / bin_s
