"""Markdown tables of run reports: one run in detail, several systems side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .report import RunReport


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


def rerank_markdown(report: RunReport) -> str:
    """A rerank run: requests/s and documents/s (query–document pairs served) side by side."""
    slo = report.slo_ms[0]
    lines = [_title(report), "",
             f"| phase | offered req/s | requests | docs/req | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms "
             f"| achieved req/s | docs/s | goodput req/s (≤{slo:g} ms) | goodput docs/s | errors "
             f"| client lag p99 ms | server CPU ms/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for p in report.phases:
        lat = p.latency_ms
        lines.append(
            f"| {p.name} | {p.offered_rate:.1f} | {p.requests} | {p.documents_per_request:.1f} "
            f"| {_ms(lat['p50'])} | {_ms(lat['p90'])} | {_ms(lat['p99'])} | {_ms(lat['p99.9'])} "
            f"| {_ms(lat['max'])} | {p.achieved_rate:.1f} | {p.documents_per_s:.1f} | {p.goodput:.1f} "
            f"| {p.documents_goodput:.1f} | {_errors(p.errors)} | {_ms(p.lag_ms['p99'])} "
            f"| {server_cpu(p.server_cpu_ms)} |")
    lines.append("")
    caps = []
    for k, v in report.capacity.items():
        docs = report.documents_at_capacity(k)
        at = "" if math.isnan(docs) else f" ({docs:.0f} docs/s)"
        caps.append(f"p99 ≤ {k} ms: **{_rate(v)} req/s**{at}")
    lines.append(f"Highest request rate meeting the SLO (no errors) — {', '.join(caps)}. "
                 f"Saturates at: {_rate(report.saturation_rate)} req/s; peak achieved "
                 f"{report.peak_rate:.1f} req/s, {report.peak_documents_per_s:.0f} docs/s.")
    for w in report.warnings:
        lines.append(f"\n> warning: {w}")
    return "\n".join(lines) + "\n"


def run_markdown(report: RunReport) -> str:
    """A run: its phases (latency percentiles, rates, errors, client lag), capacity, warnings."""
    if report.ranked:
        return rerank_markdown(report)
    slo = report.slo_ms[0]
    lines = [f"### {report.system} — {report.workload.get('kind', '?')} ({report.api} API, {report.url})", "",
             f"| phase | offered/s | requests | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | achieved/s "
             f"| goodput/s (≤{slo:g} ms) | errors | client lag p99 ms | server CPU ms/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for p in report.phases:
        lat = p.latency_ms
        lines.append(
            f"| {p.name} | {p.offered_rate:.1f} | {p.requests} | {_ms(lat['p50'])} | {_ms(lat['p90'])} "
            f"| {_ms(lat['p99'])} | {_ms(lat['p99.9'])} | {_ms(lat['max'])} | {p.achieved_rate:.1f} "
            f"| {p.goodput:.1f} | {_errors(p.errors)} | {_ms(p.lag_ms['p99'])} "
            f"| {server_cpu(p.server_cpu_ms)} |")
    lines.append("")
    caps = ", ".join(f"p99 ≤ {k} ms: **{_rate(v)}/s**" for k, v in report.capacity.items())
    lines.append(f"Highest rate meeting the SLO (no errors) — {caps}. "
                 f"Saturates at: {_rate(report.saturation_rate)}/s; peak achieved {report.peak_rate:.1f}/s.")
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
