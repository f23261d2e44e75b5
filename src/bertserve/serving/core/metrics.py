"""Every Prometheus metric of the server: names, help texts and buckets, in one place.

Each engine owns its own registry, so several servers (or tests) in one process never clash.
Tokens per second is ``rate(bertserve_tokens_total[1m])``. Gauges of state the engine already
keeps (queue depth, batches in flight, calibration, …) are read when ``/metrics`` is scraped,
not set on every request: on 2 cores the front's CPU per request is capacity.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Latency buckets in seconds: fine below 50 ms, where the SLOs of interest live.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
PADDING_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75)
RATIO_BUCKETS = (0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from .batcher import Batcher


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (all its threads), from /proc; None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


class ProcessCPU:
    """``bertserve_process_cpu_seconds_total{process}``: the CPU of the front and of each worker.

    Read from /proc at scrape time, so a client (``bertserve bench run``) can divide its change by
    the requests it sent and see what one request costs the server, machine by machine.
    """

    def __init__(self, workers: Callable[[], list[int | None]]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("bertserve_process_cpu_seconds",
                                     "CPU time used by each of the server's processes.", labels=["process"])
        workers = [(f"worker-{i}", pid) for i, pid in enumerate(self.workers())]
        for name, pid in [("front", os.getpid()), *workers]:
            seconds = cpu_seconds(pid) if pid is not None else None
            if seconds is not None:
                family.add_metric([name], seconds)
        yield family


class Metrics:
    """The server's metrics on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_latency = Histogram(
            "bertserve_request_latency_seconds", "Time from admission to answer, per request.",
            ["api"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram(
            "bertserve_queue_time_seconds", "Time a text waited in the buffer before its batch ran.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.compute_time = Histogram(
            "bertserve_compute_time_seconds", "Model time of the batch a text ran in.",
            buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "bertserve_requests_total", "Requests answered, by API and HTTP status.",
            ["api", "status"], registry=r)
        self.rejected = Counter(
            "bertserve_rejected_requests_total", "Requests refused by back-pressure or limits.",
            ["reason"], registry=r)
        self.queue_depth = Gauge(
            "bertserve_queue_depth", "Texts waiting in the buffer (not yet sent to a worker).",
            registry=r)
        self.queue_tokens = Gauge(
            "bertserve_queue_tokens", "Tokens waiting in the buffer.", registry=r)
        self.requests_in_progress = Gauge(
            "bertserve_requests_in_progress", "Requests admitted and not yet answered.", registry=r)
        self.in_flight = Gauge(
            "bertserve_batches_in_flight", "Batches sent to workers and not yet answered.", registry=r)
        self.batch_size = Histogram(
            "bertserve_batch_size", "Texts per batch.", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.padding_ratio = Histogram(
            "bertserve_batch_padding_ratio", "Share of computed tokens that are padding.",
            buckets=PADDING_BUCKETS, registry=r)
        self.tokens = Counter(
            "bertserve_tokens_total", "Tokens computed (without padding).", registry=r)
        self.student_texts = Counter(
            "bertserve_texts_by_students_total",
            "Texts computed, by how many students ran on them (ensembles; 1 for a plain model).",
            ["students"], registry=r)
        self.widened_batches = Counter(
            "bertserve_widened_batches_total",
            "Lone batches run on every core of the layout while the other workers were idle.",
            registry=r)
        self.active_students = Gauge(
            "bertserve_active_students", "Students the last batch ran with (1 for a plain model).",
            registry=r)
        self.max_students = Gauge(
            "bertserve_max_students", "Students the model has.", registry=r)
        self.worker_restarts = Counter(
            "bertserve_worker_restarts_total", "Worker processes restarted after dying.", registry=r)
        self.retried_batches = Counter(
            "bertserve_retried_batches_total", "Batches re-run after their worker died.", registry=r)
        self.abandoned_texts = Counter(
            "bertserve_abandoned_texts_total",
            "Queued texts dropped before they ran because their client disconnected.", registry=r)
        self.prediction_ratio = Histogram(
            "bertserve_batch_time_prediction_ratio", "Measured / predicted run time of each batch.",
            buckets=RATIO_BUCKETS, registry=r)
        self.calibration = Gauge(
            "bertserve_runtime_calibration", "Factor the start-up profile is scaled by now.", registry=r)
        self.loop_lag = Gauge(
            "bertserve_event_loop_lag_seconds", "Smoothed delay before the server reads a worker's "
            "answer (a busy event loop); admission adds it to every predicted finish.", registry=r)
        self.ready = Gauge("bertserve_ready", "1 once the model is loaded and warm.", registry=r)

    def follow(self, batcher: Batcher, active: Callable[[], int]) -> None:
        """Read the batcher's state (and ``active()``, the requests in progress) at scrape time."""
        self.queue_depth.set_function(lambda: len(batcher.buffer))
        self.queue_tokens.set_function(lambda: batcher.buffer.tokens)
        self.in_flight.set_function(batcher.in_flight)
        self.calibration.set_function(lambda: batcher.calibration)
        self.loop_lag.set_function(lambda: batcher.lag_s)
        self.requests_in_progress.set_function(active)

    def watch_processes(self, workers: Callable[[], list[int | None]]) -> None:
        """Export the CPU of this process and of the workers ``workers()`` lists (pids)."""
        self.registry.register(ProcessCPU(workers))  # type: ignore[arg-type]

    def render(self) -> bytes:
        return generate_latest(self.registry)
