"""Typed settings: the one source of the server's options.

Each field is a ``BERTSERVE_*`` environment variable and a flag of ``bertserve serve`` (and
``serve-ray``), generated from the field by :func:`bertserve.cli.options.with_settings`; its
description is the flag's help. Flags override the environment, which overrides the defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError

RESTORE_SHARE = 0.625  # student_restore defaults to this share of student_cut


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class ServerSettings(BaseSettings):
    """Options of ``bertserve serve``; CLI flags override the environment."""

    model_config = SettingsConfigDict(env_prefix="BERTSERVE_", extra="ignore", protected_namespaces=())

    # -- model ---------------------------------------------------------------------------
    model: str | None = Field(None, description="artifact or HF checkpoint folder; None → bundled MiniLM")
    model_name: str | None = Field(None, description="name the APIs use; default: the manifest's")
    backend: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="runtime; auto runs ONNX artifacts on onnxruntime and exports a torch "
        "checkpoint to ONNX (once, cached) on CPU")
    precision: Literal["fp32", "bf16", "fp16", "int8"] | None = Field(
        None, description="None keeps the artifact's; int8 needs an INT8 artifact, bf16 torch or openvino")
    device: str = Field("cpu", description="cpu | cuda | cuda:N | auto")
    auto_measure: bool = Field(True, description="with backend auto on CPU, time onnxruntime and "
                               "OpenVINO (fp32, bf16) once per machine (cached) and serve the fastest "
                               "whose outputs keep cosine ≥ 0.9999; off: always onnxruntime")

    # -- network -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="bind address; loopback unless asked otherwise")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free one)")
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "warning", description="log level of the server and of uvicorn")

    # -- access ----------------------------------------------------------------------------
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accept requests that bear this key (Authorization: Bearer "
        "KEY, or an x-api-key header); repeat the flag for several, or separate them by commas in "
        "the variable; none and no --api-key-file: no authentication")
    api_key_file: str | None = Field(None, description="a file of API keys, one per line ('#' starts a "
                                     "comment), read at start-up")
    keys_for_health: bool = Field(False, description="with keys on, /health, /v2/health/* and /metrics "
                                  "need one too (off: open to probes and scrapers; /health then shows "
                                  "its details only to a caller with a key)")
    request_log: Literal["off", "text", "json"] = Field(
        "off", description="one access-log line per request on stderr, with its request ID: text, or "
        "JSON lines for a log collector")

    # -- workers -------------------------------------------------------------------------
    workers: int | None = Field(
        None,
        ge=1,
        description="inference processes; None → one per core (more throughput under "
        "load; 1 process × all cores answers a lone request a little faster)",
    )
    threads: int | None = Field(None, ge=1, description="intra-op threads per worker; None → cores / workers")
    student_threads: int = Field(
        1, ge=1, description="student ensembles: each worker owns threads × student_threads cores and "
        "runs a prefix of up to this many students side by side, one thread each (more students, or "
        "one, split every op over those cores); 1 runs them one after another")
    worker_spin_ms: float = Field(
        0.0,
        ge=0,
        description="a worker polls for the next batch this long before it sleeps in the kernel: "
        "each ms costs up to that much CPU per batch; 0 (the default) sleeps at once, which "
        "benchmarks/serving_cost.py measured as no slower at low load",
    )
    hot_spin_ms: float = Field(
        0.0,
        ge=0,
        description="with several workers, worker 0 (the batcher's first choice when several "
        "are idle) polls this long instead, for up to one core of CPU while requests keep "
        "coming; 0 (the default) treats it like the others",
    )
    widen: bool = Field(
        False, description="on an idle server, run a lone batch on every core of the layout "
        "(one worker borrows the others' cores) where the start-up profile measured a gain; "
        "whether it lowers latency depends on the machine (docs/serving.md); each worker holds "
        "a second, wide copy of the model")
    worker_nice: int = Field(
        10, ge=0, le=19, description="workers run this much nicer than the server process, so on a "
        "busy machine the event loop (admission, 429s, reading answers) is never starved by "
        "inference (benchmarks/serving_path.py: under 3× overload the 429s came back within "
        "≈ 5 ms at p99 with 10, 8–16 ms with 0); 0 treats them alike")

    # -- batching and the SLO ------------------------------------------------------------
    slo_ms: float = Field(
        100.0,
        gt=0,
        description="latency target per request (overridable per request); the batcher "
        "dispatches before it runs out and admission rejects what cannot meet it",
    )
    max_batch_size: int = Field(32, ge=1, description="texts per batch")
    max_batch_tokens: int = Field(8192, ge=1, description="padded tokens per batch (memory/latency cap)")
    bin_width: int = Field(16, ge=1, description="tokens per length bin: padding stays below this")
    pipeline_depth: int = Field(
        2,
        ge=1,
        le=4,
        description="batches a worker may hold (1 running + queued in its pipe): 2 hides "
        "the hand-off between batches, 1 keeps batches open longest",
    )

    # -- start-up profile ----------------------------------------------------------------
    profile_max_tokens: int = Field(
        2048, ge=16, description="largest batch (tokens) measured at start-up; bigger ones extrapolate"
    )
    profile_repeats: int = Field(3, ge=1, description="timed runs per profile cell (median kept)")

    # -- back-pressure and limits --------------------------------------------------------
    max_queue_requests: int = Field(1024, ge=1, description="requests waiting before 429")
    max_queue_tokens: int = Field(131_072, ge=1, description="tokens waiting before 429")
    max_texts_per_request: int = Field(256, ge=1, description="texts one request may hold (else 422)")
    max_tokens_per_request: int = Field(
        32_768, ge=1, description="tokens one request may hold (else 413): it bounds how long one "
        "request can hold the workers while other clients get 429")
    max_chars_per_text: int = Field(
        20_000, ge=1, description="characters of one text that are tokenised: a longer text is cut "
        "to its first N (and counted as truncated) when truncating, else 422")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="bytes one request body may hold "
                                "(else 413)")
    truncate: bool = Field(True, description="cut texts longer than the model allows (else reject)")

    # -- adaptive student pruning (student-ensemble artifacts) ----------------------------
    min_students: int = Field(1, ge=1, description="never prune below this many students")
    adaptive_students: bool = Field(True, description="drop the last students when the SLO is at risk")
    student_cut: float = Field(
        0.8, gt=0, description="drop a student when the queue's predicted finish uses more than "
        "this share of a waiting request's slack (lower: prune earlier, more goodput, less quality)")
    student_restore: float | None = Field(
        None, gt=0, description="add a student back when, with it, less than this share is used "
        "(below student_cut, so the count does not flap); None → 0.625 × student_cut (0.5)")

    @field_validator("api_key", mode="before")
    @classmethod
    def _keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    def api_keys(self) -> list[str]:
        """The keys of --api-key and of --api-key-file together (empty: no authentication)."""
        keys = list(self.api_key)
        if self.api_key_file is not None:
            try:
                lines = Path(self.api_key_file).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the API key file {self.api_key_file!r}: "
                                  f"{exc.strerror or exc}") from exc
            keys += [line.split("#", 1)[0].strip() for line in lines]
        keys = [k for k in keys if k]
        if self.api_key_file is not None and not keys:
            raise ConfigError(f"the API key file {self.api_key_file!r} holds no key")
        return keys

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value in ("cpu", "auto") or re.fullmatch(r"cuda(:\d+)?", value):
            return value
        raise ValueError(f"{value!r} is not one of cpu, auto, cuda, cuda:N")

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.max_batch_tokens < self.max_batch_size:
            raise ConfigError("max_batch_tokens must be at least max_batch_size")
        if self.student_restore is None:
            self.student_restore = RESTORE_SHARE * self.student_cut
        if self.student_restore >= self.student_cut:
            raise ConfigError(f"student_restore ({self.student_restore:g}) must be below student_cut "
                              f"({self.student_cut:g}), or the student count flaps")
        return self

    def worker_layout(self) -> tuple[int, int]:
        """(workers, threads per worker) from the options and the usable cores."""
        cores = max(1, usable_cores() // self.student_threads)  # cores left for intra-op pools
        if self.workers is None and self.threads is None:
            return cores, 1
        if self.workers is None:
            return max(1, cores // (self.threads or 1)), int(self.threads or 1)
        return self.workers, self.threads or max(1, cores // self.workers)
