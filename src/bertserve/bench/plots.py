"""PNG plots of run reports (matplotlib, Agg: no display needed).

- latency CDF: one line per system (or per phase for a single run);
- latency vs offered rate: p50 dashed, p99 solid, one colour per system, SLOs as grey lines;
- timeline of a burst run: offered and answered rate, p99 per second, errors per second,
  one column per system so bertserve and a peer sit side by side (rerank runs: answered
  documents per second too, on the right axis);
- rerank runs: documents/s served (and within the SLO) against the offered request rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .report import RunReport  # noqa: E402


def _log_ms(ax: plt.Axes, axis: str = "y") -> None:
    """Log scale with plain 1-2-5 tick labels (10, 20, 50 ms rather than 10^1)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _cdf(ax: plt.Axes, values: Sequence[float], label: str) -> None:
    x = np.sort(np.asarray(values, dtype=float))
    if len(x):
        ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=label, drawstyle="steps-post")


def plot_cdf(reports: Sequence[RunReport], path: Path, rate: float | None = None) -> Path:
    return _save(cdf_figure(reports, rate), path)


def cdf_figure(reports: Sequence[RunReport], rate: float | None = None) -> plt.Figure:
    """Latency CDF. Several systems: each one's phase at ``rate``; one system: every phase."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(reports) == 1 and rate is None:
        for name, values in reports[0].latencies_ms.items():
            _cdf(ax, values, name)
        ax.set_title(f"latency CDF — {reports[0].system}")
    else:
        for r in reports:
            p = r.phase_at(rate) if rate is not None else r.phases[0]
            if p is not None:
                _cdf(ax, r.latencies_ms.get(p.name, []), f"{r.system} ({p.name})")
        ax.set_title("latency CDF" + (f" at {rate:g} requests/s" if rate else ""))
    for slo in reports[0].slo_ms if reports else []:
        ax.axvline(slo, color="grey", lw=0.8, ls=":")
    _log_ms(ax, "x")
    ax.set_xlabel("latency (ms, from scheduled send)")
    ax.set_ylabel("fraction of answers")
    ax.grid(alpha=0.3, which="both")
    if ax.lines:
        ax.legend(fontsize=8)
    return fig


def plot_latency_vs_rate(reports: Sequence[RunReport], path: Path) -> Path:
    return _save(latency_vs_rate_figure(reports), path)


def latency_vs_rate_figure(reports: Sequence[RunReport]) -> plt.Figure:
    """p50 (dashed) and p99 (solid) against offered rate, one colour per system."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(reports):
        colour = f"C{i}"
        rates = [p.offered_rate for p in r.phases]
        ax.plot(rates, [p.latency_ms["p99"] for p in r.phases], "o-", color=colour, label=f"{r.system} p99")
        ax.plot(rates, [p.latency_ms["p50"] for p in r.phases], "x--", color=colour, alpha=0.6,
                label=f"{r.system} p50")
    for slo in reports[0].slo_ms if reports else []:
        ax.axhline(slo, color="grey", lw=0.8, ls=":")
    _log_ms(ax)
    all_rates = [p.offered_rate for r in reports for p in r.phases]
    if all_rates and max(all_rates) > 20 * min(all_rates):  # 5 … 800 req/s reads better on a log axis
        _log_ms(ax, "x")
    ax.set_xlabel("offered rate (requests/s, Poisson)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("latency vs offered rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_documents(reports: Sequence[RunReport], path: Path) -> Path:
    return _save(documents_figure(reports), path)


def documents_figure(reports: Sequence[RunReport]) -> plt.Figure:
    """Rerank runs: documents/s served (solid) and within the first SLO (dashed) against the offered
    request rate, with requests/s achieved on the right axis (dotted), one colour per system."""
    shown = [r for r in reports if r.ranked]
    if not shown:
        raise ConfigError("no report is a rerank run (use a rerank API with --documents)")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    req_ax = ax.twinx()
    for i, r in enumerate(shown):
        colour = f"C{i}"
        phases = sorted((p for p in r.phases if p.ranked), key=lambda p: p.offered_rate)
        rates = [p.offered_rate for p in phases]
        ax.plot(rates, [p.documents_per_s for p in phases], "o-", color=colour, label=f"{r.system} docs/s")
        ax.plot(rates, [p.documents_goodput for p in phases], "x--", color=colour, alpha=0.7,
                label=f"{r.system} docs/s within {r.slo_ms[0]:g} ms")
        req_ax.plot(rates, [p.achieved_rate for p in phases], ":", color=colour, alpha=0.6,
                    label=f"{r.system} requests/s")
    ax.set_xlabel("offered rate (requests/s)")
    ax.set_ylabel("documents/s (query–document pairs served)")
    req_ax.set_ylabel("requests/s answered (dotted)")
    ax.set_ylim(bottom=0)
    req_ax.set_ylim(bottom=0)
    ax.set_title("rerank throughput vs offered rate")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    more = req_ax.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper left")
    return fig


def plot_timeline(reports: Sequence[RunReport], path: Path) -> Path:
    return _save(timeline_figure(reports), path)


def timeline_figure(reports: Sequence[RunReport]) -> plt.Figure:
    """Per-second timeline of each report's first timeline (a burst run), one column per system."""
    shown = [(r, next(iter(r.timelines.values()))) for r in reports if r.timelines]
    if not shown:
        raise ConfigError("no report has a timeline (run a burst workload)")
    fig, axes = plt.subplots(3, len(shown), figsize=(5.5 * len(shown), 7), sharex=True, sharey="row",
                             squeeze=False)
    for col, (r, tl) in enumerate(shown):
        rate_ax, p99_ax, err_ax = axes[:, col]
        end = tl.t_s[-1] + (tl.t_s[1] - tl.t_s[0] if len(tl.t_s) > 1 else 1.0)
        t = [*tl.t_s, end]  # repeat the last value so the last bin is drawn to its end

        def last(values: list[float]) -> list[float]:
            return [*values, values[-1]]

        for ax in (rate_ax, p99_ax, err_ax):
            for start, stop in tl.bursts:
                ax.axvspan(start, stop, color="grey", alpha=0.12, lw=0)
        rate_ax.step(t, last(tl.offered), where="post", label="offered")
        rate_ax.step(t, last(tl.answered), where="post", ls="--", label="answered")
        rate_ax.set_title(r.system + (" (grey: bursts)" if tl.bursts else ""))
        rate_ax.set_ylabel("requests/s")
        rate_ax.legend(fontsize=8, loc="upper left")
        if tl.documents:  # a rerank run: the pairs it served, on their own scale
            docs_ax = rate_ax.twinx()
            docs_ax.step(t, last(tl.documents), where="post", color="C2", alpha=0.7,
                         label="documents answered")
            docs_ax.set_ylabel("documents/s")
            docs_ax.set_ylim(bottom=0)
            docs_ax.legend(fontsize=8, loc="upper right")
        p99_ax.step(t, last(tl.p99_ms), where="post", color="C3")
        for slo in r.slo_ms:
            p99_ax.axhline(slo, color="grey", lw=0.8, ls=":")
        _log_ms(p99_ax)
        p99_ax.set_ylabel("p99 per second (ms)")
        err_ax.bar(tl.t_s, tl.errors, width=1.0, align="edge", color="C1")
        err_ax.set_ylabel("errors/s")
        err_ax.set_ylim(0, max(1.0, *(max(t.errors, default=0) for _, t in shown)) * 1.1)
        err_ax.set_xlabel("time (s, by scheduled send)")
        for ax in (rate_ax, p99_ax, err_ax):
            ax.grid(alpha=0.3)
    return fig
