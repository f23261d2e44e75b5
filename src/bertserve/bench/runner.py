"""One benchmark run end to end: wait for the server, warm up, send the workload with a progress
bar, check the client kept up, measure quality, build the report, write JSON/Markdown/PNGs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import BertserveError, ConfigError, UnavailableError
from .client import HttpSender, check_reachable, describe
from .loadgen import LoadOptions, Outcome, late_warning, run_workload, warm_up
from .markdown import compare_markdown, run_markdown
from .quality import fetch_embeddings, quality_summary
from .report import RunReport, build_report, saturated_stop
from .targets import RankTarget, Target, is_rank_target, request_bodies
from .workload import Phase, Workload

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunOptions:
    system: str = "server"
    slo_ms: tuple[float, ...] = (100.0,)
    timeout_s: float = 30.0
    load: LoadOptions = LoadOptions()
    stop_on_saturation: bool = True
    health_url: str | None = None  # waited for before anything is sent
    ready_timeout_s: float = 120.0
    progress: bool = True


CPU_METRIC = "bertserve_process_cpu_seconds_total"


class ServerCPU:
    """Reads a bertserve server's CPU seconds by process from its ``/metrics``.

    Gives None for any other server (no such metric, or no ``/metrics``), and stops asking then.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.url = f"{parts.scheme}://{parts.netloc}/metrics"
        self.absent = False

    async def __call__(self) -> dict[str, float] | None:
        if self.absent:
            return None
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                page = (await client.get(self.url)).text
        except httpx.HTTPError:
            page = ""
        found = parse_cpu(page)
        self.absent = not found
        return found or None


def parse_cpu(page: str) -> dict[str, float]:
    """``{process: seconds}`` from a Prometheus text page."""
    out = {}
    for line in page.splitlines():
        if line.startswith(CPU_METRIC + "{"):
            labels, _, value = line.rpartition(" ")
            name = labels.split('process="', 1)[1].split('"', 1)[0]
            out[name] = float(value)
    return out


def machine() -> dict[str, object]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


async def wait_ready(sender: HttpSender, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await sender.get_ok(url):
            return
        await asyncio.sleep(0.25)
    raise UnavailableError(f"{url} did not answer 2xx within {timeout_s:g} s")


async def discover(api: str, url: str, health_url: str | None = None, ready_timeout_s: float = 120.0,
                   timeout_s: float = 10.0) -> list[str]:
    """The models the server at ``url`` serves (see :mod:`.discovery`), once it is ready and reachable."""
    from .discovery import discover_models

    async with HttpSender(url, timeout_s) as sender:
        if health_url:
            await wait_ready(sender, health_url, ready_timeout_s)
        await check_reachable(url, min(timeout_s, 10.0))
        return await discover_models(api, url, sender)


async def bench(target: Target | RankTarget, workload: Workload, options: RunOptions,
                quality_texts: Sequence[str] = (), reference: np.ndarray | None = None,
                console: Console | None = None) -> RunReport:
    """Run ``workload`` against ``target`` and return its report (nothing written yet).

    Raises :class:`UnavailableError` before sending anything when nothing listens at the target's
    host and port. A run in which requests fail still returns its report (errors by kind); the
    first failure's message is kept in ``meta["first_error"]`` (see :func:`failure`).

    A rerank workload (phases with queries) goes to a rerank target, texts to an embedding one;
    a mismatch is a :class:`ConfigError` before anything is sent. Quality is measured for
    embedding targets only.
    """
    console = console or Console(stderr=True)
    bodies = [request_bodies(target, phase) for phase in workload.phases]
    started = dt.datetime.now(dt.UTC)
    sender = HttpSender(target.url, options.timeout_s, max_connections=options.load.max_in_flight)
    async with sender:
        if options.health_url:
            await wait_ready(sender, options.health_url, options.ready_timeout_s)
        await check_reachable(target.url, min(options.timeout_s, 10.0))
        first_error: list[str] = []

        async def send(body: bytes) -> bytes:
            try:
                return await sender(body)
            except Exception as exc:
                if not first_error:
                    first_error.append(describe(exc)[:300])
                raise

        await warm_up(workload, bodies, sender, options.load)
        cpu0, wall0 = time.process_time(), time.monotonic()
        stop = saturated_stop(options.slo_ms[0]) if options.stop_on_saturation else None
        behind: list[float] = []  # the live warning is printed once
        with _progress(options.progress, console) as bar:
            task = bar.add_task(options.system, total=workload.count)

            def on_phase(phase: Phase) -> None:
                bar.update(task, description=f"{options.system}: {phase.name}")

            def on_done(outcome: Outcome) -> None:
                bar.advance(task)
                if outcome.lag_s * 1e3 > options.load.lag_warn_ms * 4 and not behind:
                    behind.append(outcome.lag_s)
                    lag_ms = outcome.lag_s * 1e3
                    console.print(f"[yellow]warning:[/yellow] the load generator is {lag_ms:.0f} ms behind "
                                  "its schedule (reported at the end)", highlight=False)

            results = await run_workload(workload, bodies, send, options=options.load, on_done=on_done,
                                         on_phase=on_phase, stop=stop, cpu=ServerCPU(target.url))
        client_cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
        quality = None
        answered = any(o.error is None for r in results for o in r.outcomes)
        if len(quality_texts) and reference is not None and answered and not is_rank_target(target):
            embed: Any = target
            quality = quality_summary(await fetch_embeddings(embed, sender, quality_texts), reference)
    warnings = [w for w in [late_warning(results, options.load.lag_warn_ms)] if w]
    meta = {"started_utc": started.isoformat(timespec="seconds"), "machine": machine(),
            "client_cpu_fraction": round(client_cpu, 3), "timeout_s": options.timeout_s}
    if first_error:
        meta["first_error"] = first_error[0]
    return build_report(options.system, target.url, target.api, {"kind": workload.kind, **workload.params},
                        results, options.slo_ms, timelines=workload.kind in ("burst", "ramp", "replay"),
                        quality=quality, warnings=warnings, meta=meta)


def failure(report: RunReport) -> BertserveError | None:
    """The error to stop with when the run measured nothing: every request failed (or none was sent).

    Such a report holds no latency at all, so a command must not present it as a result.
    """
    requests = sum(p.requests for p in report.phases)
    ok = sum(p.ok for p in report.phases)
    if ok:
        return None
    if not requests:
        return ConfigError("the workload scheduled no request: raise the rate or the duration")
    errors: dict[str, int] = {}
    for p in report.phases:
        for kind, n in p.errors.items():
            errors[kind] = errors.get(kind, 0) + n
    kinds = ", ".join(f"{k} × {n}" for k, n in sorted(errors.items(), key=lambda kv: -kv[1]))
    first = report.meta.get("first_error")
    detail = f"; the first: {first}" if first else ""
    message = f"all {requests} requests to {report.url} failed ({kinds}){detail}"
    client_side = all(k.startswith("http_4") and k != "http_429" for k in errors)
    return ConfigError(message) if client_side else UnavailableError(message)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (less client CPU per request), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *_: object, **__: object) -> int:
        return 0

    def update(self, *_: object, **__: object) -> None:
        return None

    def advance(self, *_: object) -> None:
        return None


def _progress(enabled: bool, console: Console) -> Progress | _NoProgress:
    if not enabled:
        return _NoProgress()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, refresh_per_second=4, transient=True)


def write_outputs(reports: Sequence[RunReport], out_dir: Path, stem: str = "bench",
                  cdf_rate: float | None = None) -> list[Path]:
    """``<stem>.json`` (all reports), ``<stem>.md`` and the plots that fit the runs."""
    from .plots import plot_cdf, plot_documents, plot_latency_vs_rate, plot_timeline

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps([r.to_dict() for r in reports], indent=1))
    written.append(path)
    md = [compare_markdown(reports), *[run_markdown(r) for r in reports]]
    path = out_dir / f"{stem}.md"
    path.write_text("\n".join(md))
    written.append(path)
    written.append(plot_cdf(reports, out_dir / f"{stem}_cdf.png", rate=cdf_rate))
    if any(len(r.phases) > 1 for r in reports):
        written.append(plot_latency_vs_rate(reports, out_dir / f"{stem}_latency_vs_rate.png"))
    if any(r.timelines for r in reports):
        written.append(plot_timeline(reports, out_dir / f"{stem}_timeline.png"))
    if any(r.ranked for r in reports):
        written.append(plot_documents(reports, out_dir / f"{stem}_documents.png"))
    return written


REPORT_HINT = "expected the bench.json that `bertserve bench run --out DIR` writes"


def report_path(path: Path, stem: str = "bench") -> Path:
    """A report file: ``path`` itself, or ``<stem>.json`` inside it when it is a folder."""
    p = Path(path)
    if p.is_dir():
        inside = p / f"{stem}.json"
        if not inside.is_file():
            raise ConfigError(f"{p} is a folder without a report ({inside.name}); {REPORT_HINT}")
        return inside
    if not p.exists():
        raise ConfigError(f"{p}: no such file; {REPORT_HINT}")
    return p


def read_reports(paths: Sequence[Path]) -> list[RunReport]:
    """Reports from JSON files written by :func:`write_outputs` (each a list or one report).

    A folder stands for its ``bench.json``. A missing, unreadable or non-report input is a
    :class:`ConfigError` that names the file.
    """
    out = []
    for given in paths:
        p = report_path(given)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {p}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"{p} is not JSON ({exc}); {REPORT_HINT}") from exc
        items = data if isinstance(data, list) else [data]
        if not items:
            raise ConfigError(f"{p} holds no report (an empty list); {REPORT_HINT}")
        try:
            out.extend(RunReport.from_dict(d) for d in items)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{p} is not a bench report ({type(exc).__name__}: {exc}); {REPORT_HINT}") \
                from exc
    return out


def check_out_dir(inputs: Sequence[Path], out_dir: Path, stem: str = "bench") -> None:
    """Refuse an output folder whose ``<stem>.json`` is one of the ``inputs`` (it would be overwritten)."""
    target = (Path(out_dir) / f"{stem}.json").resolve()
    for given in inputs:
        path = report_path(given)
        if path.resolve() == target:
            raise ConfigError(f"--out {out_dir} would overwrite the input {path} with the comparison; "
                              "choose another folder (e.g. --out bench-compare)")
