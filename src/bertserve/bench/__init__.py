"""Open-loop benchmarking of embedding and rerank servers (``bertserve bench``).

The request's path through the package:
``workload`` (when, and which texts; ``ranking``: a query and N documents, for rerank APIs) →
``targets`` (the bytes for the server's API) →
``loadgen`` (send on schedule, record outcomes) over ``client`` (pooled aiohttp) →
``report`` (percentiles, goodput, capacity) → ``markdown`` / ``plots``; ``quality`` checks the
answers against reference embeddings; ``runner`` ties one run together.
"""

from .loadgen import LoadOptions
from .ranking import DocumentCount, RerankSampler
from .report import RunReport
from .runner import RunOptions, bench, read_reports, run_async, write_outputs
from .targets import make_target
from .workload import TextSampler, Workload, bursts, poisson, ramp, replay, sweep

__all__ = [
    "DocumentCount",
    "LoadOptions",
    "RerankSampler",
    "RunOptions",
    "RunReport",
    "TextSampler",
    "Workload",
    "bench",
    "bursts",
    "make_target",
    "poisson",
    "ramp",
    "read_reports",
    "replay",
    "run_async",
    "sweep",
    "write_outputs",
]
