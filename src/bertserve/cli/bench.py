"""``bertserve bench``: open-loop load against any embedding server, with reports and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import app

bench_app = typer.Typer(help="Measure a server's latency under open-loop load (bertserve or any peer).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
out = Console()


def _floats(text: str) -> list[float]:
    from ..errors import ConfigError

    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from exc


@bench_app.command("run")
def run(
    url: Annotated[str, typer.Argument(help="Server base URL (the API's path is added) or full URL.")],
    api: Annotated[str, typer.Option(help="simple (/embed) | openai | kserve | template.")] = "simple",
    workload: Annotated[str, typer.Option("--workload", "-w",
                                          help="poisson | burst | sweep | ramp | replay.")] = "poisson",
    rate: Annotated[float, typer.Option(help="Requests/s (poisson; base rate of burst; ramp start).")] = 10.0,
    rates: Annotated[str, typer.Option(help="Sweep rates, comma-separated.")] = "5,10,20,50,100,150,200",
    duration: Annotated[float, typer.Option(help="Seconds (poisson, burst, ramp).")] = 30.0,
    step_s: Annotated[float, typer.Option(help="Seconds per sweep step (at least).")] = 20.0,
    min_requests: Annotated[int, typer.Option(help="Requests per sweep step (at least).")] = 200,
    end_rate: Annotated[float, typer.Option(help="Ramp end rate.")] = 200.0,
    burst_factor: Annotated[float, typer.Option(help="Burst rate = rate × this.")] = 5.0,
    burst_s: Annotated[float, typer.Option(help="Burst length in seconds.")] = 3.0,
    period_s: Annotated[float, typer.Option(help="One burst every this many seconds.")] = 15.0,
    trace: Annotated[Path | None, typer.Option(help="Replay: JSONL {t,text} or CSV t,text.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed-up factor.")] = 1.0,
    corpus: Annotated[str, typer.Option(help="tweets | reviews | news | a file (a text a line).")] = "tweets",
    texts_per_request: Annotated[int, typer.Option(min=1, help="Texts in each request.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed for arrivals and texts.")] = 0,
    slo_ms: Annotated[str, typer.Option(help="SLOs on p99 in ms, comma-separated; the first sets goodput.")]
        = "100,50",
    model_name: Annotated[str, typer.Option(help="Model name for openai/kserve requests.")] = "default",
    body_template: Annotated[str | None, typer.Option(help="template API: JSON with {texts} or {text}.")]
        = None,
    response_path: Annotated[str, typer.Option(help="template API: dotted path to the embeddings.")] = "",
    input_name: Annotated[str, typer.Option(help="kserve API: name of the BYTES input.")] = "text",
    kserve_column: Annotated[bool, typer.Option(help="kserve API: send shape [N, 1] (Triton batching).")]
        = False,
    health: Annotated[str | None, typer.Option(help="URL to wait for (2xx) before sending.")] = None,
    timeout_s: Annotated[float, typer.Option(help="Per-request timeout (counted as an error).")] = 30.0,
    warmup_s: Annotated[float, typer.Option(help="Unrecorded warm-up traffic first.")] = 2.0,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Client cap on open requests.")] = 2048,
    stop_on_saturation: Annotated[bool, typer.Option(help="End a sweep after two saturated steps in a row.")]
        = True,
    quality: Annotated[int, typer.Option(help="Texts for the cosine check against sentence-transformers "
                                              "(0 = off).")] = 0,
    reference_model: Annotated[str | None, typer.Option(help="Model the reference is computed with.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Reference embeddings (.npy) instead.")] = None,
    name: Annotated[str, typer.Option(help="System name in reports.")] = "server",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write bench.json, bench.md, PNGs here.")]
        = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Send an open-loop WORKLOAD to URL and print p50/p90/p99/p99.9/max, goodput, errors, capacity."""
    from ..bench import workload as wl
    from ..bench.loadgen import LoadOptions
    from ..bench.markdown import run_markdown
    from ..bench.quality import quality_set, reference_embeddings
    from ..bench.runner import RunOptions, bench, run_async, write_outputs
    from ..bench.targets import make_target
    from ..data import corpus as load_corpus
    from ..errors import ConfigError

    target = make_target(api, url, model=model_name, input_name=input_name, template=body_template,
                         response_path=response_path, column=kserve_column)
    texts = load_corpus(corpus)
    sampler = wl.TextSampler(texts, seed=seed, texts_per_request=texts_per_request)
    if workload == "poisson":
        load = wl.poisson(rate, duration, sampler, seed)
    elif workload == "burst":
        load = wl.bursts(rate, burst_factor, burst_s, period_s, duration, sampler, seed)
    elif workload == "sweep":
        load = wl.sweep(_floats(rates), step_s, sampler, seed, min_requests)
    elif workload == "ramp":
        load = wl.ramp(rate, end_rate, duration, sampler, seed)
    elif workload == "replay":
        if trace is None:
            raise ConfigError("--workload replay needs --trace FILE")
        load = wl.replay(trace, speed)
    else:
        raise ConfigError(f"unknown workload {workload!r}: poisson | burst | sweep | ramp | replay")
    quality_texts = quality_set(texts, quality)
    ref = reference_embeddings(quality_texts, reference_model, reference) if quality else None
    options = RunOptions(system=name, slo_ms=tuple(_floats(slo_ms)), timeout_s=timeout_s,
                         load=LoadOptions(max_in_flight=max_in_flight, warmup_s=warmup_s),
                         stop_on_saturation=stop_on_saturation, health_url=health, progress=progress)
    report = run_async(bench(target, load, options, quality_texts, ref))
    print(run_markdown(report))
    if out_dir is not None:
        for path in write_outputs([report], out_dir):
            out.print(f"[green]wrote[/green] {path}")


@bench_app.command("compare")
def compare(
    reports: Annotated[list[Path], typer.Argument(help="JSON files written by `bench run --out`.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the combined report and plots.")]
        = Path("bench-compare"),
    cdf_rate: Annotated[float | None, typer.Option(help="Rate whose CDFs are compared.")] = None,
) -> None:
    """Put several runs side by side: one table, one line per system in each plot."""
    from ..bench.markdown import compare_markdown
    from ..bench.runner import read_reports, write_outputs

    runs = read_reports(reports)
    print(compare_markdown(runs))
    for path in write_outputs(runs, out_dir, cdf_rate=cdf_rate):
        out.print(f"[green]wrote[/green] {path}")
