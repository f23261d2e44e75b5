"""Markdown tables rendered mechanically from raw JSON results that their script did not render.

    .venv/bin/python benchmarks/tables.py      # (re)writes the results/*.md listed in render_all

No number is typed here: every cell is a value of the JSON, rounded, or a ratio of two of them.
benchmarks/check_results.py checks that the committed tables are what this renders.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def students_speed(payload: dict) -> str:
    """``students.py speed`` (results/students_speed.json): ms per training step and cosine."""
    rows = payload["rows"]
    base = rows[0]["ms_per_step"]
    lines = [
        "# Training step: fp32 vs bf16 autocast, hidden-state matching",
        "",
        f"Rendered by `benchmarks/tables.py` from `results/students_speed.json` "
        f"(`benchmarks/students.py speed`, {payload['steps']} steps, {payload['threads']} thread(s), "
        f"{payload['date']} UTC); the ratio is to the first row's ms per step.",
        "",
        "| precision | hidden-state weight | ms per step | × first row | held-out cosine |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['precision']} | {r['hidden_weight']:g} | {r['ms_per_step']:.0f} | "
                     f"{r['ms_per_step'] / base:.2f} | {r['cosine']:.4f} |")
    return "\n".join(lines) + "\n"


RENDERERS = {"students_speed.md": ("students_speed.json", students_speed)}


def render_all(results: Path = RESULTS) -> dict[str, str]:
    """Each derived file's name and the text it should hold, from the JSON committed now."""
    return {out: render(json.loads((results / src).read_text()))
            for out, (src, render) in RENDERERS.items()}


def main() -> None:
    for out, text in render_all().items():
        (RESULTS / out).write_text(text)
        print(f"wrote results/{out}")


if __name__ == "__main__":
    main()
