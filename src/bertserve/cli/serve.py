"""``bertserve serve``: the HTTP server. Every flag is also a ``BERTSERVE_*`` environment variable.

A flag left out keeps the environment's value (or the default in :mod:`bertserve.config`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import app
from .options import Backend, PrecisionOpt, check_device


def _opt(help_text: str, **kw: object):
    return typer.Option(help=help_text, **kw)  # type: ignore[arg-type]


@app.command()
def serve(
    model: Annotated[str | None, typer.Argument(help="Artifact or HF checkpoint (default: bundled).")] = None,
    host: Annotated[str | None, _opt("Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, _opt("TCP port (default 8000).")] = None,
    model_name: Annotated[str | None, _opt("Name the APIs use (default: the manifest's).")] = None,
    backend: Annotated[Backend | None, _opt("Runtime (default auto: ONNX Runtime on CPU).")] = None,
    precision: PrecisionOpt = None,
    device: Annotated[str | None, _opt("cpu | cuda | cuda:N | auto (default cpu).", callback=check_device)]
    = None,
    workers: Annotated[int | None, _opt("Worker processes (default: one per core).", min=1)] = None,
    threads: Annotated[int | None, _opt("Intra-op threads per worker (default: cores / workers).",
                                        min=1)] = None,
    slo_ms: Annotated[float | None, _opt("Latency target per request in ms (default 100).")] = None,
    max_batch_size: Annotated[int | None, _opt("Texts per batch (default 32).", min=1)] = None,
    max_batch_tokens: Annotated[int | None, _opt("Padded tokens per batch (default 8192).", min=1)] = None,
    bin_width: Annotated[int | None, _opt("Tokens per length bin (default 16).", min=1)] = None,
    max_queue_requests: Annotated[int | None, _opt("Texts waiting before 429 (default 1024).")] = None,
    max_queue_tokens: Annotated[int | None, _opt("Tokens waiting before 429 (default 131072).")] = None,
    max_texts_per_request: Annotated[int | None, _opt("Texts per request (default 256).")] = None,
    max_tokens_per_request: Annotated[int | None, _opt("Tokens per request, else 413 (default 32768).",
                                                       min=1)] = None,
    max_chars_per_text: Annotated[int | None, _opt("Characters per text (default 20000).")] = None,
    max_body_bytes: Annotated[int | None, _opt("Request body size limit (default 4 MiB).")] = None,
    truncate: Annotated[bool | None, _opt("Truncate over-long texts (else reject with 413).")] = None,
    worker_spin_ms: Annotated[float | None, _opt("Worker polls this long before sleeping (default 0).")]
    = None,
    hot_spin_ms: Annotated[float | None, _opt("With several workers, worker 0 (the first choice at low "
                                              "load) polls this long (default 0: like the others).")]
    = None,
    widen: Annotated[bool | None, _opt("Idle server: run a lone batch on every core where the profile "
                                       "measured a gain (default off).")] = None,
    min_students: Annotated[int | None, _opt("Ensembles: never prune below this many students.")] = None,
    adaptive_students: Annotated[bool | None, _opt("Ensembles: prune students under bursts.")] = None,
    student_cut: Annotated[float | None, _opt("Ensembles: drop a student when the queue's predicted finish "
                                              "uses more than this share of the SLO slack (default 0.8).")]
    = None,
    student_restore: Annotated[float | None, _opt("Ensembles: add one back below this share "
                                                  "(default 0.625 × the cut: 0.5).")]
    = None,
    student_threads: Annotated[int | None, _opt("Ensembles: run up to this many students side by side "
                                                "per worker, one thread (and core) each (default 1).",
                                                min=1)]
    = None,
    log_level: Annotated[str | None, _opt("uvicorn log level (default warning).")] = None,
    ray: Annotated[bool, _opt("Serve through Ray Serve (one replica, private local Ray; see serve-ray).")]
    = False,
) -> None:
    """Serve MODEL over HTTP: KServe v2, OpenAI /v1/embeddings, /embed, /classify, /metrics."""
    from ..config import ServerSettings
    from ..serving.http.server import serve as run_server

    given = dict(model=model, host=host, port=port, model_name=model_name, backend=backend,
                 precision=precision, device=device,
                 workers=workers, threads=threads, slo_ms=slo_ms, max_batch_size=max_batch_size,
                 max_batch_tokens=max_batch_tokens, bin_width=bin_width,
                 max_queue_requests=max_queue_requests, max_queue_tokens=max_queue_tokens,
                 max_texts_per_request=max_texts_per_request, max_tokens_per_request=max_tokens_per_request,
                 max_chars_per_text=max_chars_per_text,
                 max_body_bytes=max_body_bytes, truncate=truncate, worker_spin_ms=worker_spin_ms,
                 hot_spin_ms=hot_spin_ms, widen=widen,
                 min_students=min_students, adaptive_students=adaptive_students, student_cut=student_cut,
                 student_restore=student_restore, student_threads=student_threads, log_level=log_level)
    # a flag given wins over its BERTSERVE_* variable, even when it names the default
    settings = ServerSettings(**{k: v for k, v in given.items() if v is not None})
    if ray:
        from ..integrations.ray_serve import serve_forever

        serve_forever(settings)
        return
    run_server(settings)
