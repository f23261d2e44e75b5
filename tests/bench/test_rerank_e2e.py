"""Rerank runs end to end over HTTP: a small Starlette app in the test answers TEI's ``/rerank`` and
Cohere's ``/v2/rerank`` and counts the pairs it scored; the report's documents/s must be exactly
those pairs over the run's window. Then the same through ``bertserve bench run``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from ports import free_port
from served import bertserve_serving
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from bertserve.bench.loadgen import LoadOptions
from bertserve.bench.ranking import DocumentCount, RerankSampler, news_titles
from bertserve.bench.runner import RunOptions, bench
from bertserve.bench.targets import make_target
from bertserve.bench.workload import poisson
from bertserve.data import news_sentences

MAX_DOCUMENTS = 40  # the fake server refuses longer lists (413), as a server's limit would


@dataclass
class Seen:
    bodies: list[dict] = field(default_factory=list)
    pairs_answered: int = 0  # documents of the requests answered 200
    refused: int = 0


def fake_reranker(seen: Seen) -> Starlette:
    """TEI and Cohere rerank shapes, strictly checked; a score per document from its length."""

    def scored(query: str, docs: list[str]) -> list[tuple[int, float]]:
        return sorted(((i, 1.0 / (1 + abs(len(d) - len(query)))) for i, d in enumerate(docs)),
                      key=lambda r: -r[1])

    async def tei(request: Request) -> JSONResponse:
        body = await request.json()
        seen.bodies.append(body)
        texts = body.get("texts")
        well_formed = (not set(body) - {"query", "texts", "raw_scores", "return_text", "truncate"}
                       and isinstance(body.get("query"), str) and isinstance(texts, list) and texts
                       and all(isinstance(t, str) for t in texts)
                       and isinstance(body.get("truncate", True), bool))
        if not well_formed:
            return JSONResponse({"error": "malformed", "error_type": "Validation"}, status_code=422)
        if len(texts) > MAX_DOCUMENTS:
            seen.refused += 1
            return JSONResponse({"error": "too many texts", "error_type": "Validation"}, status_code=413)
        seen.pairs_answered += len(texts)
        return JSONResponse([{"index": i, "score": s} for i, s in scored(body["query"], texts)])

    async def cohere(request: Request) -> JSONResponse:
        body = await request.json()
        seen.bodies.append(body)
        docs = body.get("documents")
        if set(body) - {"model", "query", "documents", "top_n"} or body.get("model") != "ranker-1" or \
                not isinstance(body.get("query"), str) or not isinstance(docs, list) or not docs:
            return JSONResponse({"id": "x", "message": "malformed"}, status_code=422)
        seen.pairs_answered += len(docs)
        ranked = scored(body["query"], docs)[: body.get("top_n") or len(docs)]
        return JSONResponse({"id": "x", "results": [{"index": i, "relevance_score": s} for i, s in ranked],
                             "meta": {"billed_units": {"search_units": 1}}})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "ranker-1", "object": "model"}]})

    return Starlette(routes=[Route("/rerank", tei, methods=["POST"]),
                             Route("/v2/rerank", cohere, methods=["POST"]), Route("/v1/models", models)])


@pytest.fixture
def reranker() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    port = free_port()
    config = uvicorn.Config(fake_reranker(seen), host="127.0.0.1", port=port, log_level="error",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake reranker did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


OPTIONS = RunOptions(system="fake", slo_ms=(1000.0,), load=LoadOptions(warmup_s=0), progress=False)


def test_documents_per_second_is_the_pairs_answered_over_the_window(reranker) -> None:
    url, seen = reranker
    sampler = RerankSampler(news_titles(), news_sentences(), DocumentCount.parse("5-50"), seed=4)
    load = poisson(30, 2.0, sampler, seed=4)
    report = asyncio.run(bench(make_target("rerank", url), load, OPTIONS))
    [p] = report.phases
    [phase] = load.phases
    # every request reached the server as TEI's body, with the workload's query and documents
    assert len(seen.bodies) == p.requests == phase.count > 20
    assert sorted((b["query"], tuple(b["texts"])) for b in seen.bodies) == \
        sorted(zip(phase.queries, map(tuple, phase.texts), strict=True))
    assert all(b["truncate"] is True for b in seen.bodies)
    # those over the server's limit failed, and their documents are not counted as served
    assert seen.refused > 0 and p.errors == {"http_413": seen.refused}
    assert p.documents == sum(len(b["texts"]) for b in seen.bodies)
    assert p.documents_ok == seen.pairs_answered < p.documents
    assert p.documents_per_s == pytest.approx(seen.pairs_answered / p.window_s, rel=1e-9)
    assert p.achieved_rate == pytest.approx(p.ok / p.window_s)
    assert p.documents_goodput <= p.documents_per_s and p.latency_ms["p50"] <= p.latency_ms["p99"]
    assert report.workload["request"] == "rerank" and report.workload["documents"] == "5-50"


def test_cohere_target_is_driven_the_same_way(reranker) -> None:
    url, seen = reranker
    counts = DocumentCount.parse("lognormal:8:0.5:30")
    sampler = RerankSampler(news_titles(), news_sentences(), counts, seed=5)
    load = poisson(20, 1.0, sampler, seed=5)
    report = asyncio.run(bench(make_target("cohere-rerank", url, model="ranker-1", top_n=3), load, OPTIONS))
    [p] = report.phases
    assert p.ok == p.requests == len(seen.bodies) > 5 and not p.errors
    assert all(b["top_n"] == 3 and 1 <= len(b["documents"]) <= 30 for b in seen.bodies)
    assert p.documents_ok == p.documents == seen.pairs_answered
    assert p.documents_per_s == pytest.approx(seen.pairs_answered / p.window_s, rel=1e-9)


def cli(*args: str) -> tuple[int, str]:
    import bertserve.cli.bench  # noqa: F401 - registers the bench commands
    from bertserve.cli import app
    from bertserve.errors import BertserveError

    result = CliRunner().invoke(app, ["bench", "run", *args], env={"COLUMNS": "250", "NO_COLOR": "1"})
    if isinstance(result.exception, BertserveError):
        return 1, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


QUICK = ["--rate", "20", "--duration", "1", "--warmup-s", "0", "--no-progress", "--slo-ms", "1000"]


def test_cli_rerank_run_writes_documents_per_second(reranker, tmp_path: Path) -> None:
    url, seen = reranker
    code, output = cli(url, "--api", "rerank", "--documents", "3-12", "--corpus", "passages", *QUICK,
                       "--out", str(tmp_path))
    assert code == 0, output
    assert "docs/s" in output and "rerank 3-12 documents/request" in output
    [report] = json.loads((tmp_path / "bench.json").read_text())
    [p] = report["phases"]
    assert p["documents_ok"] == seen.pairs_answered and p["ok"] == p["requests"] == len(seen.bodies)
    assert all(3 <= len(b["texts"]) <= 12 for b in seen.bodies)
    assert report["workload"] | {"queries": "titles", "corpus": "passages"} == report["workload"]
    assert (tmp_path / "bench_documents.png").stat().st_size > 0


def test_cli_cohere_run_asks_the_server_for_its_model(reranker) -> None:
    url, seen = reranker
    code, output = cli(url, "--api", "cohere-rerank", "--documents", "4", *QUICK)
    assert code == 0, output
    assert {b["model"] for b in seen.bodies} == {"ranker-1"}
    assert {len(b["documents"]) for b in seen.bodies} == {4}


@pytest.mark.parametrize(("args", "words"), [
    (["--api", "simple", "--documents", "5"], ["--documents", "rerank APIs"]),
    (["--api", "openai", "--model-name", "m", "--queries", "titles"], ["--queries", "rerank APIs"]),
    (["--api", "rerank", "--quality", "4"], ["--quality", "scores"]),
    (["--api", "rerank", "--texts-per-request", "3"], ["--texts-per-request"]),
    (["--api", "rerank", "--documents", "50-5"], ["--documents", "low ≤ high"]),
    (["--api", "cohere-rerank", "--top-n", "0"], ["--top-n"]),
])
def test_cli_refuses_rerank_options_that_do_not_fit(args: list[str], words: list[str]) -> None:
    code, output = cli("http://127.0.0.1:9", *QUICK, *args)  # never reached: refused before
    assert code in (1, 2) and all(w in output for w in words) and "nothing answers" not in output, output


# ---- against bertserve itself, serving a cross-encoder ----------------------------------------------


@pytest.fixture(scope="module")
def bertserve_reranker(rerank_dir: Path) -> Iterator[str]:
    """`bertserve serve RERANK_DIR` in its own process; its base URL once it is ready."""
    with bertserve_serving(str(rerank_dir)) as url:
        yield url


@pytest.mark.slow
@pytest.mark.parametrize("api", ["rerank", "cohere-rerank"])
def test_bench_drives_bertserves_rerank_apis(bertserve_reranker: str, api: str, tmp_path: Path) -> None:
    import httpx

    url = bertserve_reranker
    model = httpx.get(f"{url}/v1/models", timeout=10).json()["data"][0]["id"]
    target = make_target(api, url, model=model)
    # the bench reads bertserve's answer as the API defines it: a score for every document
    docs = news_sentences()[100:107]
    answer = httpx.post(target.url, content=target.rerank_body(news_titles()[0], docs), timeout=30,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    scores = target.scores(answer.content, len(docs))
    assert scores.shape == (7,) and all(0 <= s <= 1 for s in scores)

    code, output = cli(url, "--api", api, "--documents", "2-8", "--rate", "4", "--duration", "2",
                       "--warmup-s", "0", "--no-progress", "--slo-ms", "5000", "--timeout-s", "60",
                       "--out", str(tmp_path))
    assert code == 0, output
    [report] = json.loads((tmp_path / "bench.json").read_text())
    [p] = report["phases"]
    assert p["ok"] > 0 and set(p["errors"]) <= {"http_429", "http_503"}, p["errors"]
    assert 2 * p["ok"] <= p["documents_ok"] <= 8 * p["ok"]
    assert p["documents_per_s"] == pytest.approx(p["documents_ok"] / p["window_s"], rel=1e-3)
