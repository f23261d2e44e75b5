"""``OUT/report.md``, ``OUT/report.json`` and ``OUT/pareto.png``: every candidate, the choice,
and the commands that rebuild each."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def floor(row: dict) -> str:
    if row["name"] == "teacher":
        return "reference"
    if row.get("error"):
        return f"failed: {row['error'][:80]}"
    return "yes" if row.get("passes") else "no"


def _ratio(row: dict, teacher: dict | None) -> float | None:
    """Capacity over the teacher's: served over served where both ran, else predicted over predicted."""
    if teacher is None:
        return None
    key = "served" if row.get("served") is not None and teacher.get("served") else "predicted"
    return row[key] / teacher[key] if teacher.get(key) else None


def table(rows: list[dict], teacher: dict | None) -> list[str]:
    lines = ["| candidate | quality | out of domain | predicted req/s | served req/s | "
             "× teacher fp32 (served, else predicted) | meets floor | build s |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        ratio = _ratio(r, teacher)
        lines.append(f"| {r['name']} | {_fmt(r['quality']['value'])} | {_fmt(r['quality']['ood'])} | "
                     f"{_fmt(r.get('predicted'), 1)} | {_fmt(r.get('served'), 1)} | {_fmt(ratio, 2)} | "
                     f"{floor(r)} | {_fmt(r.get('seconds'), 0)} |")
    return lines


def pareto_plot(rows: list[dict], path: Path, metric: str, slo_ms: float) -> None:
    """Capacity at the SLO (served where measured, else predicted) against quality; the teacher
    marked, the front of candidates no other beats on both drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = [(r.get("served") or r.get("predicted") or 0.0, r["quality"]["value"], r) for r in rows]
    for cap, q, r in pts:
        served = r.get("served") is not None
        ax.scatter(cap, q, marker="o" if served else "x", color="C3" if r["name"] == "teacher" else "C0")
        ax.annotate(r["name"], (cap, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((p for p in pts if not any(o[0] >= p[0] and o[1] > p[1] or o[0] > p[0] and o[1] >= p[1]
                                              for o in pts)), key=lambda p: p[0])
    ax.plot([p[0] for p in front], [p[1] for p in front], color="C1", lw=1, label="Pareto front")
    ax.set_xlabel(f"requests/s at p99 ≤ {slo_ms:g} ms (o: served, x: predicted)")
    ax.set_ylabel(metric)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(out: Path, result: dict) -> Path:
    """Write the three files; returns the report's path."""
    rows = result["candidates"]
    (out / "report.json").write_text(json.dumps(result, indent=1))
    metric = rows[0]["quality"]["metric"] if rows else "quality"
    teacher = next((r for r in rows if r["name"] == "teacher"), None)
    if rows:
        pareto_plot(rows, out / "pareto.png", metric, result["slo_ms"])
    best = result.get("best")
    lines = [
        f"# bertserve optimize: {result['teacher']}",
        "",
        f"- Machine: {result['machine']}",
        f"- SLO: p99 ≤ {result['slo_ms']:g} ms, one replica of {result['layout']}; quality floor: "
        f"{metric} ≥ {result['min_quality']:g}"
        + (f", out of domain ≥ {result['min_ood_quality']:g}" if result.get("min_ood_quality") else ""),
        f"- Quality: {result['quality_note']}",
        "- Capacity: *predicted* by the planner on each candidate's start-up profile; "
        + (f"*served* by `bertserve bench` (open-loop Poisson, real texts) against `bertserve serve` for "
           f"the best {result['verify']} and the teacher, in this run." if result.get("verify") else
           "none served (`--verify 0`): the choice rests on the predictions."),
        f"- Budget: {result['budget_s']:.0f} s; took {result['seconds']:.0f} s.",
        "",
        "## Choice",
        "",
        (f"**{best}**, in `best/`; serve it with `{result['best_serve']}`." if best else
         f"No candidate meets the floor: {result.get('reason', '')}"),
        "",
        "## Candidates",
        "",
        *table(rows, teacher),
        "",
        "![capacity vs quality](pareto.png)",
        "",
        "## Commands",
        "",
        "Each candidate, rebuilt (the teacher's own: no build) and served:",
        "",
        "```sh",
        *[f"{r['command']}\n# served: {r['serve']}" if r.get("command") else f"# {r['name']}: {r['serve']}"
          for r in rows],
        "```",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
