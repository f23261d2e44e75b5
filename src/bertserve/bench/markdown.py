"""Markdown tables of run reports: one run in detail, several systems side by side."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .report import PhaseSummary, RunReport


def _ms(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _rate(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:g}" if x == int(x) else f"{x:.1f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"


def server_cpu(cpu: dict[str, float]) -> str:
    """``2.31 (front 0.62, worker-0 0.90, …)``, or — for servers that do not export it."""
    if not cpu:
        return "—"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "total")
    return f"{cpu['total']:.2f} ({parts})"


def _title(report: RunReport) -> str:
    kind = report.workload.get("kind", "?")
    if report.ranked:
        kind = f"{kind}, rerank {report.workload.get('documents', '?')} documents/request"
    return f"### {report.system} — {kind} ({report.api} API, {report.url})"


Column = tuple[str, str, Callable[[PhaseSummary], str]]  # header, alignment, cell


def _columns(report: RunReport) -> list[Column]:
    """The per-phase table's columns; a rerank run adds documents beside requests."""
    ranked = report.ranked
    per_s = " req/s" if ranked else "/s"

    def docs(header: str, cell: Callable[[PhaseSummary], str]) -> list[Column]:
        return [(header, "---:", cell)] if ranked else []

    return [
        ("phase", "---", lambda p: p.name),
        (f"offered{per_s}", "---:", lambda p: f"{p.offered_rate:.1f}"),
        ("requests", "---:", lambda p: str(p.requests)),
        *docs("docs/req", lambda p: f"{p.documents_per_request:.1f}"),
        *[(f"{q} ms", "---:", lambda p, q=q: _ms(p.latency_ms[q]))
          for q in ("p50", "p90", "p99", "p99.9", "max")],
        (f"achieved{per_s}", "---:", lambda p: f"{p.achieved_rate:.1f}"),
        *docs("docs/s", lambda p: f"{p.documents_per_s:.1f}"),
        (f"goodput{per_s} (≤{report.slo_ms[0]:g} ms)", "---:", lambda p: f"{p.goodput:.1f}"),
        *docs("goodput docs/s", lambda p: f"{p.documents_goodput:.1f}"),
        ("errors", "---", lambda p: _errors(p.errors)),
        ("client lag p99 ms", "---:", lambda p: _ms(p.lag_ms["p99"])),
        ("server CPU ms/req", "---", lambda p: server_cpu(p.server_cpu_ms)),
    ]


def _capacity(report: RunReport) -> str:
    if not report.ranked:
        caps = ", ".join(f"p99 ≤ {k} ms: **{_rate(v)}/s**" for k, v in report.capacity.items())
        return (f"Highest rate meeting the SLO (no errors) — {caps}. "
                f"Saturates at: {_rate(report.saturation_rate)}/s; peak achieved {report.peak_rate:.1f}/s.")
    caps_docs = []
    for k, v in report.capacity.items():
        docs = report.documents_at_capacity(k)
        at = "" if math.isnan(docs) else f" ({docs:.0f} docs/s)"
        caps_docs.append(f"p99 ≤ {k} ms: **{_rate(v)} req/s**{at}")
    return (f"Highest request rate meeting the SLO (no errors) — {', '.join(caps_docs)}. "
            f"Saturates at: {_rate(report.saturation_rate)} req/s; peak achieved "
            f"{report.peak_rate:.1f} req/s, {report.peak_documents_per_s:.0f} docs/s.")


def run_markdown(report: RunReport) -> str:
    """A run: its phases (latency percentiles, rates, errors, client lag; a rerank run's
    documents too), capacity, quality, warnings."""
    columns = _columns(report)
    lines = [_title(report), "",
             "| " + " | ".join(c[0] for c in columns) + " |",
             "|" + "|".join(c[1] for c in columns) + "|"]
    lines += ["| " + " | ".join(c[2](p) for c in columns) + " |" for p in report.phases]
    lines += ["", _capacity(report)]
    if report.quality:
        q = report.quality
        lines.append(f"Quality: mean cosine to the reference {q['mean_cosine']:.5f} "
                     f"(min {q['min_cosine']:.5f}, n = {int(q['n'])}).")
    for w in report.warnings:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


def compare_markdown(reports: Sequence[RunReport], low_rate: float = 10, mid_rate: float = 50) -> str:
    """One row per system: capacity at each SLO, saturation, latency at two fixed rates, quality."""
    slos = list(reports[0].capacity) if reports else []
    ranked = any(r.ranked for r in reports)  # rerank runs: documents/s beside requests/s
    head = ["system", *[f"max rate p99 ≤ {s} ms" for s in slos], "saturates at", "peak/s",
            *(["peak docs/s"] if ranked else []),
            f"p50 / p99 @ {low_rate:g}/s (ms)", f"p50 / p99 @ {mid_rate:g}/s (ms)", "cosine to reference"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for r in reports:
        cells = [r.system, *[_rate(r.capacity.get(s, 0.0)) for s in slos], _rate(r.saturation_rate),
                 f"{r.peak_rate:.0f}"]
        if ranked:
            cells.append("—" if math.isnan(r.peak_documents_per_s) else f"{r.peak_documents_per_s:.0f}")
        for rate in (low_rate, mid_rate):
            p = r.phase_at(rate)
            cells.append("—" if p is None else f"{_ms(p.latency_ms['p50'])} / {_ms(p.latency_ms['p99'])}")
        cells.append(f"{r.quality['mean_cosine']:.4f}" if r.quality else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
