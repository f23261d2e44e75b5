"""``bertserve bench``: open-loop load against any embedding or rerank server, with reports and plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from . import app
from .options import positive

if TYPE_CHECKING:
    from ..bench.ranking import RerankSampler

bench_app = typer.Typer(help="Measure a server's latency under open-loop load (bertserve or any peer; "
                             "embedding or rerank APIs).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
out = Console()
err = Console(stderr=True)
DEFAULT_MODEL = "default"


def _positive_floats(text: str, flag: str) -> list[float]:
    """``--rates``/``--slo-ms``: one or more comma-separated finite numbers above 0."""
    from ..errors import ConfigError

    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        values = []
    if not values or not all(v > 0 and math.isfinite(v) for v in values):
        raise ConfigError(f"{flag} takes positive comma-separated numbers, got {text!r}")
    return values


def _model_name(api: str, url: str, given: str | None, health: str | None, timeout_s: float) -> str:
    """``--model-name``, else the one model the server says it serves, else 'default' (warned)."""
    from ..bench.runner import discover, run_async
    from ..errors import ConfigError

    if given is not None:
        return given
    if api not in ("openai", "kserve", "cohere-rerank"):
        return DEFAULT_MODEL
    names = run_async(discover(api, url, health_url=health, timeout_s=timeout_s))
    if len(names) == 1:
        err.print(f"model: {names[0]} (as the server lists it; --model-name to choose)", highlight=False)
        return names[0]
    if names:
        raise ConfigError(f"{url} serves several models ({', '.join(names)}): choose one with --model-name")
    err.print(f"[yellow]warning:[/yellow] the server did not say which model it serves; sending "
              f"{DEFAULT_MODEL!r} (set --model-name)", highlight=False)
    return DEFAULT_MODEL


def _rerank_sampler(documents: str | None, queries: str | None, corpus: str | None, quality: int,
                    texts_per_request: int, seed: int) -> RerankSampler:
    """The rerank requests: --queries × --documents drawn from --corpus (news sentences by default)."""
    from ..bench.ranking import DocumentCount, RerankSampler, rerank_texts
    from ..errors import ConfigError

    if quality:
        raise ConfigError("--quality compares embeddings; a rerank API answers scores (use --quality 0)")
    if texts_per_request != 1:
        raise ConfigError("a rerank request carries one query and --documents N documents; "
                          "--texts-per-request is for the embedding APIs")
    counts = DocumentCount.parse(documents if documents is not None else "20")
    query_set, document_set = queries or "titles", corpus or "news"
    return RerankSampler(rerank_texts(query_set, queries=True), rerank_texts(document_set, queries=False),
                         counts, seed=seed, describe={"queries": query_set, "corpus": document_set})


@bench_app.command("run")
def run(
    url: Annotated[str, typer.Argument(help="Server base URL (the API's path is added) or full URL.")],
    api: Annotated[str, typer.Option(help="simple (/embed) | openai | kserve | template; rerank APIs: "
                                          "rerank (TEI's POST /rerank) | cohere-rerank (POST /v2/rerank).")] \
        = "simple",
    workload: Annotated[str, typer.Option("--workload", "-w",
                                          help="poisson | burst | sweep | ramp | replay.")] = "poisson",
    rate: Annotated[float, typer.Option(help="Requests/s (poisson; base rate of burst; ramp start).",
                                        callback=positive)] = 10.0,
    rates: Annotated[str, typer.Option(help="Sweep rates, comma-separated.")] = "5,10,20,50,100,150,200",
    duration: Annotated[float, typer.Option(help="Seconds (poisson, burst, ramp).", callback=positive)] \
        = 30.0,
    step_s: Annotated[float, typer.Option(min=0, help="Seconds per sweep step (at least).")] = 20.0,
    min_requests: Annotated[int, typer.Option(min=0, help="Requests per sweep step (at least).")] = 200,
    end_rate: Annotated[float, typer.Option(help="Ramp end rate.", callback=positive)] = 200.0,
    burst_factor: Annotated[float, typer.Option(min=1, help="Burst rate = rate × this.")] = 5.0,
    burst_s: Annotated[float, typer.Option(help="Burst length in seconds.", callback=positive)] = 3.0,
    period_s: Annotated[float, typer.Option(help="One burst every this many seconds.", callback=positive)]
        = 15.0,
    trace: Annotated[Path | None, typer.Option(help="Replay: JSONL {t,text} or CSV t,text.")] = None,
    speed: Annotated[float, typer.Option(help="Replay speed-up factor.", callback=positive)] = 1.0,
    corpus: Annotated[str | None, typer.Option(
        help="tweets | reviews | news | a file (a text a line); rerank APIs: the documents, also passages "
             "(≈60-word news passages). Default: tweets; news sentences for rerank APIs.")] = None,
    texts_per_request: Annotated[int, typer.Option(min=1, help="Texts in each request.")] = 1,
    documents: Annotated[str | None, typer.Option(
        help="Rerank APIs: documents per request, N | LO-HI (uniform) | lognormal:MEAN[:SIGMA[:MAX]] "
             "(capped at MAX, default 4×MEAN). Default: 20.")] = None,
    queries: Annotated[str | None, typer.Option(
        help="Rerank APIs: the queries, titles (news headlines) | tweets | reviews | news | a file. "
             "Default: titles.")] = None,
    top_n: Annotated[int | None, typer.Option(min=1, help="cohere-rerank API: top_n sent (default: "
                                                          "none, every document returned).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for arrivals and texts.")] = 0,
    slo_ms: Annotated[str, typer.Option(help="SLOs on p99 in ms, comma-separated; the first sets goodput.")]
        = "100,50",
    model_name: Annotated[str | None, typer.Option(
        help="Model name for openai/kserve/cohere-rerank requests. Default: the one model the server lists "
             "(GET /v1/models; kserve: /v2/repository/index, /v2/models, /v1/models), else 'default'.")] \
        = None,
    body_template: Annotated[str | None, typer.Option(help="template API: JSON with {texts} or {text}.")]
        = None,
    response_path: Annotated[str, typer.Option(help="template API: dotted path to the embeddings.")] = "",
    input_name: Annotated[str, typer.Option(help="kserve API: name of the BYTES input.")] = "text",
    kserve_column: Annotated[bool, typer.Option(help="kserve API: send shape [N, 1] (Triton batching).")]
        = False,
    health: Annotated[str | None, typer.Option(help="URL to wait for (2xx) before sending.")] = None,
    timeout_s: Annotated[float, typer.Option(help="Per-request timeout (counted as an error).",
                                             callback=positive)] = 30.0,
    warmup_s: Annotated[float, typer.Option(min=0, help="Unrecorded warm-up traffic first.")] = 2.0,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Client cap on open requests.")] = 2048,
    stop_on_saturation: Annotated[bool, typer.Option(help="End a sweep after two saturated steps in a row.")]
        = True,
    quality: Annotated[int, typer.Option(min=0, help="Texts for the cosine check against "
                                                     "sentence-transformers (0 = off).")] = 0,
    reference_model: Annotated[str | None, typer.Option(help="Model the reference is computed with.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Reference embeddings (.npy) instead.")] = None,
    name: Annotated[str, typer.Option(help="System name in reports.")] = "server",
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write bench.json, bench.md, PNGs here.")]
        = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Send an open-loop WORKLOAD to URL and print p50/p90/p99/p99.9/max, goodput, errors, capacity.

    With a rerank API each request is one query and --documents documents (real news text), and
    the report gives documents/s (query–document pairs served) beside requests/s.
    Exits 1 with one line, writing nothing, when nothing listens at URL or when every request failed.
    """
    from ..bench import workload as wl
    from ..bench.loadgen import LoadOptions
    from ..bench.markdown import run_markdown
    from ..bench.quality import quality_set, reference_embeddings
    from ..bench.runner import RunOptions, bench, failure, run_async, write_outputs
    from ..bench.targets import RERANK_API_NAMES, make_target
    from ..data import corpus as load_corpus
    from ..errors import ConfigError

    slos = _positive_floats(slo_ms, "--slo-ms")
    if reference is not None and not quality:
        err.print("[yellow]warning:[/yellow] --reference is only used with --quality N", highlight=False)
    make_target(api, url, model=DEFAULT_MODEL, input_name=input_name, template=body_template,
                response_path=response_path, column=kserve_column,
                top_n=top_n)  # a wrong --api or URL fails first
    sampler: wl.Sampler
    quality_texts: list[str] = []
    ref = None
    if api in RERANK_API_NAMES:
        sampler = _rerank_sampler(documents, queries, corpus, quality, texts_per_request, seed)
        if workload == "replay" and documents is not None:
            err.print("[yellow]warning:[/yellow] --documents is not used by a replay: the trace gives "
                      "each request's documents", highlight=False)
    else:
        for flag, given in (("--documents", documents), ("--queries", queries), ("--top-n", top_n)):
            if given is not None:
                raise ConfigError(f"{flag} is for the rerank APIs (--api {' | '.join(RERANK_API_NAMES)}), "
                                  f"not {api}")
        texts = load_corpus(corpus or "tweets")
        quality_texts = quality_set(texts, quality)
        ref = reference_embeddings(quality_texts, reference_model, reference) if quality else None
        sampler = wl.TextSampler(texts, seed=seed, texts_per_request=texts_per_request)
    if workload == "poisson":
        load = wl.poisson(rate, duration, sampler, seed)
    elif workload == "burst":
        load = wl.bursts(rate, burst_factor, burst_s, period_s, duration, sampler, seed)
    elif workload == "sweep":
        load = wl.sweep(_positive_floats(rates, "--rates"), step_s, sampler, seed, min_requests)
    elif workload == "ramp":
        load = wl.ramp(rate, end_rate, duration, sampler, seed)
    elif workload == "replay":
        if trace is None:
            raise ConfigError("--workload replay needs --trace FILE")
        load = wl.replay(trace, speed)
    else:
        raise ConfigError(f"unknown workload {workload!r}: poisson | burst | sweep | ramp | replay")
    model_name = _model_name(api, url, model_name, health, timeout_s)
    target = make_target(api, url, model=model_name, input_name=input_name, template=body_template,
                         response_path=response_path, column=kserve_column, top_n=top_n)
    options = RunOptions(system=name, slo_ms=tuple(slos), timeout_s=timeout_s,
                         load=LoadOptions(max_in_flight=max_in_flight, warmup_s=warmup_s),
                         stop_on_saturation=stop_on_saturation, health_url=health, progress=progress)
    report = run_async(bench(target, load, options, quality_texts, ref))
    failed = failure(report)
    if failed is not None:
        raise failed
    print(run_markdown(report))
    if out_dir is not None:
        for path in write_outputs([report], out_dir):
            out.print(f"[green]wrote[/green] {path}")


@bench_app.command("compare")
def compare(
    reports: Annotated[list[Path], typer.Argument(
        help="bench.json files written by `bench run --out DIR` (or those DIRs).")],
    out_dir: Annotated[Path, typer.Option("--out", help=(
        "Folder for the combined bench.json, bench.md and plots (files of those names there are "
        "replaced); a folder holding one of the input reports is refused."))] = Path("bench-compare"),
    cdf_rate: Annotated[float | None, typer.Option(help="Rate whose CDFs are compared.", callback=positive)]
        = None,
) -> None:
    """Put several runs side by side: one table, one line per system in each plot."""
    from ..bench.markdown import compare_markdown
    from ..bench.runner import check_out_dir, read_reports, write_outputs

    runs = read_reports(reports)
    check_out_dir(reports, out_dir)
    print(compare_markdown(runs))
    for path in write_outputs(runs, out_dir, cdf_rate=cdf_rate):
        out.print(f"[green]wrote[/green] {path}")
