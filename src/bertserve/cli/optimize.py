"""``bertserve optimize``: from a teacher to the cheapest served model meeting an SLO and a quality floor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import positive

out = Console()


def _ints(text: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise ConfigError(f"expected comma-separated layer counts like 1,2,3, got {text!r}") from exc
    if any(v < 1 for v in values):
        raise ConfigError(f"layer counts must be ≥ 1, got {text!r}")
    return values


def _stacks(text: str) -> tuple[tuple[int, int], ...]:
    from ..errors import ConfigError

    out_: list[tuple[int, int]] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        k, sep, n = part.partition("x")
        if not sep or not k.isdigit() or not n.isdigit() or int(k) < 1 or int(n) < 1:
            raise ConfigError(f"stacks are K×L like 2x2,3x1, got {part!r}")
        out_.append((int(k), int(n)))
    return tuple(out_)


@app.command()
def optimize(
    teacher: Annotated[str, typer.Argument(help="Teacher artifact or HF checkpoint ('default' = bundled).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for candidates/, best/ and report.md "
                                            "(a rerun resumes: what is done is kept).")],
    slo_ms: Annotated[float, typer.Option(help="p99 latency target.", callback=positive)] = 50.0,
    min_quality: Annotated[float, typer.Option(
        help="Quality floor: classifiers, the share of the teacher's held-out accuracy; embedders, "
             "recall@10 of the teacher's nearest neighbours.")] = 0.99,
    min_ood_quality: Annotated[float, typer.Option(
        help="Classifiers: floor on the share of the teacher's accuracy on out-of-domain text "
             "(0: no floor).")] = 0.97,
    budget: Annotated[str, typer.Option(
        help="Time for the whole run (90s, 20m, 2h, 1h30m); training gets 60 % of it, split evenly "
             "over the students' steps.")] = "2h",
    layers: Annotated[str, typer.Option(help="Single students to distil, by depth.")] = "1,2,3,4",
    stacks: Annotated[str, typer.Option(
        help="Student stacks K×L, boosted then refitted ('' : none).")] = "2x2",
    transfer: Annotated[str | None, typer.Option(
        help="The students' --corpus (default: reviews+tweets for a classifier, tweets+news for an "
             "embedder).")] = None,
    augment: Annotated[int, typer.Option(min=0, help="Distorted copies per transfer text.")] = 0,
    int8: Annotated[bool, typer.Option(help="INT8 of the teacher and of every student.")] = True,
    openvino: Annotated[bool, typer.Option(help="OpenVINO candidates (bf16 teacher, INT8).")] = True,
    vocab: Annotated[bool, typer.Option(help="A vocabulary-pruned teacher.")] = True,
    verify: Annotated[int, typer.Option(
        min=0, help="Serve the best this many (and the teacher) for real under open-loop load.")] = 3,
    target_rate: Annotated[float | None, typer.Option(
        help="Also say how many replicas serve this many requests/s.", callback=positive)] = None,
    workers: Annotated[int, typer.Option(min=1, help="Workers of the served replica.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Threads per worker.")] = 1,
    max_steps: Annotated[int | None, typer.Option(
        min=1, help="Train every student exactly this many steps (instead of by --budget).")] = None,
    eval_n: Annotated[int, typer.Option(min=10, help="Held-out texts per quality set.")] = 1000,
    retrieval_texts: Annotated[int, typer.Option(
        min=20, help="Embedders: corpus size of the recall@10 check.")] = 3000,
    verify_step_s: Annotated[float, typer.Option(
        help="Seconds per rate of the served sweep.", callback=positive)] = 8.0,
    verify_min_requests: Annotated[int, typer.Option(min=1, help="Requests per rate, at least.")] = 200,
) -> None:
    """Compress TEACHER into candidates; keep the one serving most within the SLO above the floor."""
    from ..optimize import OptimizeOptions
    from ..optimize import optimize as run
    from ..optimize.budget import parse_duration
    from ..optimize.candidates import Space
    from ..optimize.capacity import Layout
    from ..optimize.report import floor

    space = Space(layers=_ints(layers), stacks=_stacks(stacks), int8=int8, openvino=openvino, vocab=vocab,
                  transfer=transfer or "", augment=augment)
    opts = OptimizeOptions(min_quality=min_quality, min_ood_quality=min_ood_quality or None,
                           budget_s=parse_duration(budget), space=space,
                           layout=Layout(slo_ms=slo_ms, workers=workers, threads=threads), verify=verify,
                           max_steps=max_steps, target_rate=target_rate, eval_n=eval_n,
                           corpus_n=retrieval_texts,
                           verify_step_s=verify_step_s, verify_min_requests=verify_min_requests)
    result = run(teacher, out_dir, opts)
    table = Table(title=f"candidates (p99 ≤ {slo_ms:g} ms)")
    for col in ("candidate", "quality", "out of domain", "predicted req/s", "served req/s", "passes"):
        table.add_column(col, justify="left" if col == "candidate" else "right")
    for r in result.rows:
        ood = r["quality"].get("ood")
        table.add_row(r["name"], f"{r['quality']['value']:.4f}", "–" if ood is None else f"{ood:.4f}",
                      f"{r['predicted']:g}", "–" if r.get("served") is None else f"{r['served']:g}",
                      floor(r))
    out.print(table)
    out.print(f"[green]best:[/green] {result.best} → {result.out / 'best'}; report {result.report}")
