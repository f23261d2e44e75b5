"""Numbers from a run: percentiles, goodput, capacity at an SLO, saturation, per-second timelines.

Conventions (stated once, used everywhere):
- Percentiles are *nearest-rank* over the successful answers: p99 ≤ SLO holds exactly when at
  least ⌈0.99·n⌉ answers were within the SLO. Failed requests are counted by kind, never hidden
  in a latency: capacity demands zero errors.
- A phase's window is from its start to its last answer (``wall_s``, the drain included), so an
  overloaded server is not credited with answers it gave after the window closed.
  achieved rate = answers / window; goodput = answers within the SLO / window.
- Rerank runs also count documents (query–document pairs): documents/s = the documents of the
  answered requests / window (pairs served per second), document goodput = the documents of the
  answers within the SLO / window. Latencies, capacity and saturation stay per request.
- Capacity at an SLO: the highest offered rate with p99 ≤ SLO and no errors.
- Saturation: the lowest offered rate from which on the server no longer keeps up — achieved
  rate below 95 % of the rate actually scheduled (a Poisson count, not the nominal rate), more
  than 1 % errors, or a median above 1 s (the queue grows without bound) — at that step and
  every higher one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .loadgen import PhaseResult

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "p99.9": 0.999}
KEEP_UP_FRACTION = 0.95
MAX_SATURATION_ERROR_RATE = 0.01
SATURATED_MEDIAN_S = 1.0


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]); nan for no values."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1], got {q}")
    rank = max(1, math.ceil(q * len(x)))
    return float(x[rank - 1])


@dataclass(slots=True)
class PhaseSummary:
    name: str
    offered_rate: float  # nominal rate, or scheduled requests / duration
    requests: int
    ok: int
    errors: dict[str, int]
    latency_ms: dict[str, float]  # p50 p90 p99 p99.9 max mean
    achieved_rate: float
    goodput: float  # answers within slo_ms per second
    slo_ms: float
    window_s: float
    lag_ms: dict[str, float]  # the client's scheduling lag: p50 p99 max
    duration_s: float = math.nan  # the scheduled stretch (nan in reports written before it was kept)
    # the server's CPU ms per request sent, by process ("front", "worker-0", …) and "total";
    # empty when the server does not export bertserve_process_cpu_seconds_total
    server_cpu_ms: dict[str, float] = field(default_factory=dict)
    # rerank phases (0 / nan otherwise): documents scheduled and answered, and their rates
    documents: int = 0
    documents_ok: int = 0
    documents_per_s: float = math.nan  # documents of the answered requests / window
    documents_goodput: float = math.nan  # documents of the answers within slo_ms / window
    # how fast refusals came back (due time → the 429): p50 p99 max; empty when none
    refusal_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ranked(self) -> bool:
        """A rerank phase: its requests carried a query and documents."""
        return self.documents > 0

    @property
    def documents_per_request(self) -> float:
        return self.documents / self.requests if self.requests else math.nan

    @property
    def scheduled_rate(self) -> float:
        """Requests actually scheduled per second: a Poisson draw, a few % off the nominal rate."""
        if math.isfinite(self.duration_s) and self.duration_s > 0:
            return self.requests / self.duration_s
        return self.offered_rate

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def saturated(self) -> bool:
        if self.requests == 0:
            return False
        return (self.achieved_rate < KEEP_UP_FRACTION * self.scheduled_rate
                or self.error_count > MAX_SATURATION_ERROR_RATE * self.requests
                or self.latency_ms["p50"] > SATURATED_MEDIAN_S * 1e3
                or math.isnan(self.latency_ms["p50"]))

    def meets(self, slo_ms: float) -> bool:
        p99 = self.latency_ms["p99"]
        return self.error_count == 0 and self.ok > 0 and not math.isnan(p99) and p99 <= slo_ms


def summarize(result: PhaseResult, slo_ms: float) -> PhaseSummary:
    """Percentiles, rates and error counts of one phase (see the module docstring)."""
    lat = result.latencies()
    ok_lat = lat[np.isfinite(lat)]
    errors = Counter(o.error for o in result.outcomes if o.error is not None)
    window = max(result.wall_s, 1e-9)
    latency = {k: percentile(ok_lat, q) * 1e3 for k, q in QUANTILES.items()}
    latency["max"] = float(ok_lat.max()) * 1e3 if len(ok_lat) else math.nan
    latency["mean"] = float(ok_lat.mean()) * 1e3 if len(ok_lat) else math.nan
    lags = result.lags()
    lags = lags[np.isfinite(lags)]
    lag = {"p50": percentile(lags, 0.5) * 1e3, "p99": percentile(lags, 0.99) * 1e3,
           "max": float(lags.max()) * 1e3 if len(lags) else math.nan}
    n = len(result.outcomes)
    offered = result.offered_rate if result.offered_rate is not None else n / max(result.duration_s, 1e-9)
    summary = PhaseSummary(
        name=result.name, offered_rate=float(offered), requests=n, ok=len(ok_lat),
        errors=dict(sorted(errors.items())), latency_ms=latency, achieved_rate=len(ok_lat) / window,
        goodput=int(np.sum(ok_lat <= slo_ms / 1e3)) / window, slo_ms=slo_ms, window_s=window, lag_ms=lag,
        duration_s=result.duration_s, server_cpu_ms=cpu_per_request(result))
    refused = np.array([o.error_latency_s for o in result.outcomes if o.error == "http_429"], dtype=float)
    if len(refused):
        summary.refusal_ms = {"p50": percentile(refused, 0.5) * 1e3, "p99": percentile(refused, 0.99) * 1e3,
                              "max": float(refused.max()) * 1e3}
    if result.rerank:
        docs = np.array([o.n_texts for o in result.outcomes], dtype=int)
        answered = np.isfinite(lat)
        within = answered & (np.nan_to_num(lat, nan=np.inf) <= slo_ms / 1e3)
        summary.documents = int(docs.sum())
        summary.documents_ok = int(docs[answered].sum())
        summary.documents_per_s = summary.documents_ok / window
        summary.documents_goodput = int(docs[within].sum()) / window
    return summary


def cpu_per_request(result: PhaseResult) -> dict[str, float]:
    """The server's CPU ms per request that reached it, by process and in total."""
    if not result.server_cpu_s:
        return {}
    sent = sum(1 for o in result.outcomes if o.error != "client_overflow")
    if sent == 0:
        return {}
    out = {k: v * 1e3 / sent for k, v in sorted(result.server_cpu_s.items())}
    out["total"] = sum(out.values())
    return out


def capacity(summaries: Sequence[PhaseSummary], slo_ms: float) -> float:
    """Highest offered rate with p99 ≤ ``slo_ms`` and no errors; 0 when none meets it."""
    rates = [s.offered_rate for s in summaries if s.meets(slo_ms)]
    return max(rates, default=0.0)


def saturation_rate(summaries: Sequence[PhaseSummary]) -> float | None:
    """Lowest offered rate from which every higher step was saturated; None if the last was not.

    A lone bad step below a good one (a blip on a shared machine) is not saturation.
    """
    ordered = sorted(summaries, key=lambda s: s.offered_rate)
    rate = None
    for s in reversed(ordered):
        if not s.saturated:
            break
        rate = s.offered_rate
    return rate


def saturated_stop(slo_ms: float, patience: int = 2):
    """A stop rule for sweeps: end after ``patience`` saturated steps in a row."""
    streak = 0

    def stop(result: PhaseResult) -> bool:
        nonlocal streak
        streak = streak + 1 if summarize(result, slo_ms).saturated else 0
        return streak >= patience
    return stop


@dataclass(slots=True)
class Timeline:
    """Per-second view of a phase, binned by scheduled time: what a burst did to the server."""

    t_s: list[float]
    offered: list[float]  # scheduled requests per second
    answered: list[float]  # successful answers per second (of requests scheduled in the bin)
    p99_ms: list[float]  # nan where nothing was answered
    errors: list[float]
    bursts: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of raised-rate stretches
    documents: list[float] = field(default_factory=list)  # rerank: answered documents per second; else []


def timeline(result: PhaseResult, bin_s: float = 1.0) -> Timeline:
    n_bins = max(1, math.ceil(result.duration_s / bin_s))
    sched = np.array([o.scheduled_s for o in result.outcomes], dtype=float)
    lat = result.latencies()
    err = np.array([o.error is not None for o in result.outcomes], dtype=bool)
    idx = np.minimum((sched // bin_s).astype(int), n_bins - 1) if len(sched) else np.empty(0, int)
    docs = np.array([o.n_texts for o in result.outcomes], dtype=int)
    t, offered, answered, p99, errors, documents = [], [], [], [], [], []
    for b in range(n_bins):
        sel = idx == b
        ok = lat[sel & np.isfinite(lat)]
        t.append(b * bin_s)
        offered.append(int(sel.sum()) / bin_s)
        answered.append(len(ok) / bin_s)
        p99.append(percentile(ok, 0.99) * 1e3)
        errors.append(int((sel & err).sum()) / bin_s)
        documents.append(int(docs[sel & np.isfinite(lat)].sum()) / bin_s)
    base = min((r for _, _, r in result.segments), default=0.0)
    bursts = [(s, e) for s, e, r in result.segments if r > base]
    return Timeline(t, offered, answered, p99, errors, bursts, documents if result.rerank else [])


@dataclass(slots=True)
class RunReport:
    """Everything a run produced; ``to_dict``/``from_dict`` round-trip through JSON."""

    system: str
    url: str
    api: str
    workload: dict[str, Any]
    slo_ms: list[float]
    phases: list[PhaseSummary]
    capacity: dict[str, float]  # str(slo_ms) → rate
    saturation_rate: float | None
    peak_rate: float
    latencies_ms: dict[str, list[float]]  # phase name → successful latencies, for CDF plots
    timelines: dict[str, Timeline] = field(default_factory=dict)
    quality: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        d = dict(d)
        d["phases"] = [PhaseSummary(**_nan(p)) for p in d["phases"]]
        d["timelines"] = {k: Timeline(**_nan(v)) for k, v in d.get("timelines", {}).items()}
        return cls(**d)

    @property
    def ranked(self) -> bool:
        """A rerank run: its phases count documents (pairs) beside requests."""
        return any(p.ranked for p in self.phases)

    @property
    def peak_documents_per_s(self) -> float:
        """The highest documents/s any phase achieved (nan for a run that is not a rerank run)."""
        rates = [p.documents_per_s for p in self.phases if p.ranked]
        return max(rates) if rates else math.nan

    def documents_at_capacity(self, slo: str) -> float:
        """Documents/s of the phase at the capacity for SLO ``slo`` (a key of :attr:`capacity`)."""
        rate = self.capacity.get(slo, 0.0)
        p = self.phase_at(rate) if rate else None
        return p.documents_per_s if p is not None and p.ranked else math.nan

    def phase_at(self, rate: float) -> PhaseSummary | None:
        """The phase whose offered rate is closest to ``rate`` (within 1 %)."""
        best = min(self.phases, key=lambda p: abs(p.offered_rate - rate), default=None)
        return best if best is not None and abs(best.offered_rate - rate) <= 0.01 * rate else None


def build_report(system: str, url: str, api: str, workload: dict[str, Any], results: Sequence[PhaseResult],
                 slo_ms: Sequence[float], timelines: bool = False, quality: dict[str, float] | None = None,
                 warnings: Sequence[str] = (), meta: dict[str, Any] | None = None) -> RunReport:
    slos = list(slo_ms)
    summaries = [summarize(r, slos[0]) for r in results]
    return RunReport(
        system=system, url=url, api=api, workload=workload, slo_ms=slos, phases=summaries,
        capacity={f"{s:g}": capacity(summaries, s) for s in slos},
        saturation_rate=saturation_rate(summaries),
        peak_rate=max((s.achieved_rate for s in summaries), default=0.0),
        latencies_ms={r.name: [round(x * 1e3, 3) for x in r.latencies() if math.isfinite(x)]
                      for r in results},
        timelines={r.name: timeline(r) for r in results} if timelines else {},
        quality=quality, warnings=list(warnings), meta=dict(meta or {}))


def _clean(obj: Any) -> Any:
    """JSON has no NaN: store it as null (and read it back with :func:`_nan`)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, 4)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _nan(obj: Any) -> Any:
    if obj is None:
        return math.nan
    if isinstance(obj, dict):
        return {k: (v if k in ("errors", "name") else _nan(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan(v) for v in obj]
    return obj
