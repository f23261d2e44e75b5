"""``bertserve plan``: how many replicas and cores serve a rate within a p99 SLO."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import BackendOpt, PrecisionOpt

out = Console()


@app.command()
def plan(
    artifact: Annotated[str | None, typer.Argument(help="Artifact or checkpoint (default: bundled).")] = None,
    rate: Annotated[float, typer.Option(help="Requests per second to serve (one text each).")] = 100.0,
    slo_ms: Annotated[float, typer.Option(help="p99 latency target in milliseconds.")] = 100.0,
    burst: Annotated[float | None, typer.Option(
        help="Also plan for bursts of this factor × the rate (10 s in every 60 s).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Inference workers per replica.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads per worker.")] = 1,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    corpus: Annotated[str, typer.Option(
        help="Where request lengths come from: tweets, reviews or a text file.")] = "tweets",
    overhead_ms: Annotated[float, typer.Option(
        help="Latency each request pays outside batching (HTTP, tokenising, hand-offs): the idle "
             "p50 minus the batch-1 compute time. Add Ray's proxy hop when planning for Ray.")] = 2.0,
    front_cpu_ms: Annotated[float, typer.Option(
        help="CPU per request spent beside the workers on the replica's cores (HTTP, tokenising); "
             "it slows the workers as the rate grows.")] = 0.0,
    profile: Annotated[str | None, typer.Option(
        help="A saved profile JSON (the server's format); default: the server's own, else measure.")] = None,
    duration_s: Annotated[float, typer.Option(help="Simulated seconds of traffic per trial.")] = 60.0,
    max_replicas: Annotated[int, typer.Option(min=1, help="Give up above this many replicas.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Simulate the real batching policy on ARTIFACT's measured profile; print replicas, cores, p50/p99."""
    from ..config import ServerSettings
    from ..planner import PlanInputs, corpus_lengths, engine_profile, make_plan, read_profile
    from ..planner.simulate import EngineConfig

    settings = ServerSettings(model=artifact, slo_ms=slo_ms, workers=workers, threads=threads,
                              backend=backend, precision=precision)
    if profile is not None:
        model, measured = read_profile(profile), False
    else:
        with out.status("reading or measuring the run-time profile (batch × length grid)..."):
            model, measured = engine_profile(settings)
    lengths = corpus_lengths(artifact, corpus)
    max_students = max(model.coef)
    inputs = PlanInputs(
        model=model,
        engine=EngineConfig.from_settings(settings, workers=workers, max_students=max_students),
        lengths=lengths, cores_per_replica=workers * threads, overhead_s=overhead_ms / 1e3,
        front_cpu_s=front_cpu_ms / 1e3,
        duration_s=duration_s, max_replicas=max_replicas,
    )
    with out.status("simulating..."):
        rows = make_plan(inputs, rate, burst)
    if as_json:
        print(json.dumps({"rate": rate, "slo_ms": slo_ms, "burst": burst, "workers": workers,
                          "threads": threads, "profile_measured_now": measured,
                          "plan": [row.as_dict() for row in rows]}, indent=2))
        return
    table = Table(title=f"capacity plan: {rate:g} req/s, p99 ≤ {slo_ms:g} ms, "
                        f"replica = {workers} worker(s) × {threads} thread(s)")
    for col in ("scenario", "replicas", "cores", "p50 ms", "p99 ms", "refused", "mean batch", "students"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for row in rows:
        d = row.as_dict()
        table.add_row(d["scenario"], str(d["replicas"] or f"> {max_replicas}"), f"{d['cores'] or '-'}",
                      f"{d['p50_ms']:.1f}", f"{d['p99_ms']:.1f}", f"{d['rejected_share']:.2%}",
                      f"{d['mean_batch']:.1f}", " ".join(f"{k}:{v}" for k, v in d["students"].items()))
    out.print(table)
    out.print(f"lengths: {len(lengths)} {corpus} texts, p50 {int(sorted(lengths)[len(lengths) // 2])} "
              f"tokens; profile fit error ≤ {model.max_rel_error:.0%}"
              f"{' (measured now)' if measured else ''}; overhead {overhead_ms:g} ms per request")
