"""``bertserve plan``: how many replicas and cores serve a rate within a p99 SLO."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import BackendOpt, PrecisionOpt, positive

out = Console()


@app.command()
def plan(
    artifact: Annotated[str | None, typer.Argument(help="Artifact or checkpoint (default: bundled).")] = None,
    rate: Annotated[float, typer.Option(help="Requests per second to serve (one text each).",
                                        callback=positive)] = 100.0,
    slo_ms: Annotated[float, typer.Option(help="p99 latency target in milliseconds.",
                                          callback=positive)] = 100.0,
    burst: Annotated[float | None, typer.Option(
        min=1.0, help="Also plan for bursts of this factor × the rate (10 s in every 60 s).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Inference workers per replica.")] = 2,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads per worker.")] = 1,
    backend: BackendOpt = "auto",
    precision: PrecisionOpt = None,
    corpus: Annotated[str, typer.Option(
        help="Where request lengths come from: tweets, reviews or a text file.")] = "tweets",
    overhead_ms: Annotated[float, typer.Option(
        min=0.0, help="Latency each request pays outside batching (HTTP, tokenising, hand-offs): the idle "
             "p50 minus the batch-1 compute time. Add Ray's proxy hop when planning for Ray.")] = 2.0,
    overhead_samples: Annotated[str | None, typer.Option(
        help="A file of measured overheads in ms (a JSON list or one a line): each simulated request "
             "draws one, instead of --overhead-ms for all.")] = None,
    front_cpu_ms: Annotated[float, typer.Option(
        min=0.0, help="CPU per request spent on the replica's cores beside the batches' compute (HTTP, "
             "tokenising, the workers' polling); it slows batches and overhead as the rate grows.")] = 0.0,
    spread: Annotated[str | None, typer.Option(
        help="Measured scatter of real batch times: a server's /metrics URL, a saved /metrics text "
             "(its bertserve_batch_time_prediction_ratio histogram; best the difference of two "
             "scrapes: --spread-before) or a spread JSON. Default: every batch takes its profile time, "
             "which under-predicts p99 near capacity.")] = None,
    spread_before: Annotated[str | None, typer.Option(
        help="An earlier /metrics text of the same server: only the batches between count.")] = None,
    profile: Annotated[str | None, typer.Option(
        help="A saved profile JSON (the server's format); default: the server's own, else measure.")] = None,
    duration_s: Annotated[float, typer.Option(help="Simulated seconds of traffic per trial.",
                                              callback=positive)] = 60.0,
    max_replicas: Annotated[int, typer.Option(min=1, help="Give up above this many replicas.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Simulate the real batching policy on ARTIFACT's measured profile; print replicas, cores, p50/p99."""
    from ..config import ServerSettings
    from ..errors import ConfigError
    from ..planner import PlanInputs, Spread, corpus_lengths, engine_profile, make_plan, read_profile
    from ..planner.simulate import EngineConfig

    if spread_before is not None and spread is None:
        raise ConfigError("--spread-before is the earlier scrape of --spread: give --spread too")
    settings = ServerSettings(model=artifact, slo_ms=slo_ms, workers=workers, threads=threads,
                              backend=backend, precision=precision)
    if profile is not None:
        model, measured = read_profile(profile), False
    else:
        with out.status("reading or measuring the run-time profile (batch × length grid)..."):
            model, measured = engine_profile(settings)
    lengths = corpus_lengths(artifact, corpus)
    scatter = None
    if spread is not None:
        if spread_before is not None:
            try:
                from pathlib import Path

                scatter = Spread.from_metrics(Path(spread).read_text(), Path(spread_before).read_text(),
                                              source=spread)
            except OSError as exc:
                raise ConfigError(f"cannot read spread: {exc}") from exc
        else:
            scatter = Spread.load(spread)
    overhead: float | list[float] = overhead_ms / 1e3
    if overhead_samples is not None:
        overhead = [x / 1e3 for x in _numbers(overhead_samples)]
    max_students = max(model.coef)
    inputs = PlanInputs(
        model=model,
        engine=EngineConfig.from_settings(settings, workers=workers, max_students=max_students),
        lengths=lengths, cores_per_replica=workers * threads, overhead_s=np.asarray(overhead),
        front_cpu_s=front_cpu_ms / 1e3, spread=scatter,
        duration_s=duration_s, max_replicas=max_replicas,
    )
    with out.status("simulating..."):
        rows = make_plan(inputs, rate, burst)
    if as_json:
        print(json.dumps({"rate": rate, "slo_ms": slo_ms, "burst": burst, "workers": workers,
                          "threads": threads, "profile_measured_now": measured,
                          "spread": None if scatter is None else scatter.summary(),
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
              f"{' (measured now)' if measured else ''}; overhead "
              f"{float(np.median(overhead)) * 1e3:.3g} ms per request (median)")
    out.print("batch times: " + ("profile × CPU-share slowdown only (no --spread: p99 near capacity is "
                                 "under-predicted)" if scatter is None else f"scatter {scatter.summary()}"))


def _numbers(path: str) -> list[float]:
    """Numbers from a JSON list or one per line."""
    from pathlib import Path

    from ..errors import ConfigError

    try:
        text = Path(path).read_text()
        values = json.loads(text) if text.lstrip().startswith("[") else \
            [float(x) for x in text.split() if x.strip()]
        values = [float(v) for v in values]
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read overhead samples {path}: {exc}") from exc
    if not values:
        raise ConfigError(f"no overhead samples in {path}")
    return values
