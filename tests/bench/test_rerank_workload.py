"""The rerank workload: N documents per request within its distribution and bounds, real queries and
documents, well-formed bodies for each rerank API, documents/s in the report and its tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bertserve.bench import workload as wl
from bertserve.bench.loadgen import Outcome, PhaseResult
from bertserve.bench.markdown import compare_markdown, run_markdown
from bertserve.bench.ranking import DocumentCount, RerankSampler, news_passages, news_titles, rerank_texts
from bertserve.bench.report import RunReport, build_report, summarize
from bertserve.bench.targets import make_target, request_bodies
from bertserve.errors import ConfigError, TargetError

QUERIES = ["who won the match", "weather in paris tomorrow"]
DOCS = [f"document number {i}" for i in range(40)]


def counts_of(spec: str, n: int = 20_000, seed: int = 0) -> np.ndarray:
    return DocumentCount.parse(spec).draw(np.random.default_rng(seed), n)


# ---- how many documents ---------------------------------------------------------------------------


def test_fixed_count_is_always_n() -> None:
    assert set(counts_of("20", 500)) == {20}
    assert str(DocumentCount.parse(" 20 ")) == "20"


def test_uniform_count_covers_its_range_and_nothing_else() -> None:
    x = counts_of("5-50")
    assert x.min() == 5 and x.max() == 50 and set(x) == set(range(5, 51))
    assert x.mean() == pytest.approx(27.5, abs=0.3)
    counts = np.bincount(x, minlength=51)[5:]
    assert counts.min() > 0.8 * len(x) / 46  # flat: no value is rare
    assert set(counts_of("7-7", 100)) == {7}


def test_lognormal_count_is_around_its_mean_within_its_cap() -> None:
    x = counts_of("lognormal:20")  # σ 0.75, capped at 4 × 20
    spec = DocumentCount.parse("lognormal:20")
    assert (spec.low, spec.high, spec.sigma) == (1, 80, 0.75)
    assert x.min() >= 1 and x.max() == 80  # the cap is reached (about 1 % of draws), never passed
    assert 0.002 < np.mean(x == 80) < 0.03
    assert x.mean() == pytest.approx(20, rel=0.04)  # the mean asked for (a little lower: clipped)
    assert np.median(x) < x.mean()  # skewed: a few long lists
    y = counts_of("lognormal:20:0.3:25")
    assert y.max() == 25 and np.std(y) < np.std(np.minimum(x, 25))
    assert str(DocumentCount.parse("lognormal:20:0.3:25")) == "lognormal:20:0.3:25"


@pytest.mark.parametrize("spec", ["0", "-3", "50-5", "0-5", "x", "", "5-", "2.5", "lognormal:",
                                  "lognormal:0.5", "lognormal:20:0", "lognormal:20:-1", "lognormal:20:1:10",
                                  "lognormal:1:2:3:4"])
def test_impossible_counts_are_config_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="--documents"):
        DocumentCount.parse(spec)


# ---- which texts ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def news() -> tuple[list[str], list[str]]:
    return news_titles(), rerank_texts("news", queries=False)


def test_queries_are_news_headlines_and_documents_news_sentences(news) -> None:
    from bertserve.data import news_sentences

    titles, sentences = news
    assert 3000 < len(titles) < 3824 and len(set(titles)) == len(titles)
    assert sentences == news_sentences()
    assert np.median([len(t.split()) for t in titles]) < 15  # headlines are query-length
    sampler = RerankSampler(titles, sentences, DocumentCount.parse("5-50"), seed=3)
    docs, queries = sampler.sample(300)
    assert len(docs) == len(queries) == 300
    assert set(queries) <= set(titles) and len(set(queries)) > 250
    assert {d for row in docs for d in row} <= set(sentences)
    assert all(5 <= len(row) <= 50 for row in docs)
    # real prose, so real lengths: the documents are much longer than the queries
    assert np.median([len(d) for row in docs for d in row]) > 1.5 * np.median([len(q) for q in queries])


def test_passages_are_consecutive_sentences_of_one_article() -> None:
    passages = news_passages()
    assert len(passages) > 20_000
    words = np.array([len(p.split()) for p in passages])
    assert 60 <= np.median(words) < 100 and np.percentile(words, 5) >= 4
    assert rerank_texts("passages", queries=False) is passages
    assert rerank_texts("titles", queries=True) == news_titles()


def test_same_seed_same_requests_and_counts_do_not_depend_on_the_corpus() -> None:
    a = RerankSampler(QUERIES, DOCS, DocumentCount.parse("1-30"), seed=5).sample(50)
    b = RerankSampler(QUERIES, DOCS, DocumentCount.parse("1-30"), seed=5).sample(50)
    c = RerankSampler(["q"], ["d"], DocumentCount.parse("1-30"), seed=5).sample(50)
    assert a == b
    assert [len(r) for r in a[0]] == [len(r) for r in c[0]]
    with pytest.raises(ConfigError):
        RerankSampler([""], DOCS, DocumentCount.fixed(3))


def rerank_sampler(spec: str = "2-6") -> RerankSampler:
    return RerankSampler(QUERIES, DOCS, DocumentCount.parse(spec), seed=1)


def test_every_arrival_process_carries_rerank_requests() -> None:
    loads = [wl.poisson(20, 5, rerank_sampler(), seed=1), wl.bursts(10, 3, 1, 4, 8, rerank_sampler(), seed=1),
             wl.sweep([5, 10], 2, rerank_sampler(), seed=1), wl.ramp(5, 20, 4, rerank_sampler(), seed=1)]
    for load in loads:
        assert load.params["request"] == "rerank" and load.params["documents"] == "2-6"
        for p in load.phases:
            assert p.queries is not None and len(p.queries) == len(p.texts) == p.count > 0
            assert all(2 <= len(docs) <= 6 for docs in p.texts)
    # the schedule is the embedding workload's: the same seed, the same arrivals
    embed = wl.poisson(20, 5, wl.TextSampler(DOCS), seed=1)
    np.testing.assert_array_equal(embed.phases[0].arrivals, loads[0].phases[0].arrivals)
    assert embed.phases[0].queries is None and "request" not in embed.params


def test_a_rerank_trace_is_replayed_with_its_queries(tmp_path) -> None:
    trace = tmp_path / "rerank.jsonl"
    trace.write_text("\n".join(json.dumps(r) for r in [
        {"t": 1.0, "query": "q2", "documents": ["c"]}, {"t": 0.5, "query": "q1", "documents": ["a", "b"]}]))
    load = wl.replay(trace)
    [p] = load.phases
    assert p.queries == ["q1", "q2"] and p.texts == [["a", "b"], ["c"]]
    assert load.params["request"] == "rerank"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"t": 0, "query": "q", "documents": ["a"]}\n{"t": 1, "text": "b"}\n')
    with pytest.raises(ConfigError, match="mixes"):
        wl.replay(mixed)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"t": 0, "query": "q", "documents": []}\n')
    with pytest.raises(ConfigError, match="documents"):
        wl.replay(empty)


# ---- the bytes for each API -----------------------------------------------------------------------


def test_tei_rerank_body_and_answer() -> None:
    t = make_target("rerank", "http://h:1/")
    assert t.url == "http://h:1/rerank" and make_target("rerank", "http://h:1/rerank").url == t.url
    body = json.loads(t.rerank_body("q é", ["a", "b"]))
    assert body == {"query": "q é", "texts": ["a", "b"], "truncate": True}
    answer = b'[{"index": 1, "score": 0.9}, {"index": 0, "score": 0.2}]'
    np.testing.assert_allclose(t.scores(answer, 2), [0.2, 0.9])
    with pytest.raises(TargetError):
        t.scores(b'[{"index": 5, "score": 0.9}]', 2)
    with pytest.raises(TargetError):
        t.scores(b'{"error": "x"}', 2)


def test_cohere_rerank_body_and_answer() -> None:
    t = make_target("cohere-rerank", "http://h:1", model="mini")
    assert t.url == "http://h:1/v2/rerank"
    assert make_target("cohere-rerank", "http://h:1/v2/", model="m").url == t.url
    assert make_target("cohere-rerank", "http://h:1/v2/rerank", model="m").url == t.url
    assert json.loads(t.rerank_body("q", ["a", "b", "c"])) == {"model": "mini", "query": "q",
                                                               "documents": ["a", "b", "c"]}
    top = make_target("cohere-rerank", "http://h:1", model="mini", top_n=2)
    assert json.loads(top.rerank_body("q", ["a", "b", "c"]))["top_n"] == 2
    answer = {"results": [{"index": 2, "relevance_score": 0.7}, {"index": 0, "relevance_score": 0.1}],
              "meta": {"billed_units": {"search_units": 1}}}
    s = t.scores(json.dumps(answer).encode(), 3)
    assert s[0] == pytest.approx(0.1) and math.isnan(s[1]) and s[2] == pytest.approx(0.7)
    with pytest.raises(ConfigError):
        make_target("cohere-rerank", "http://h:1", top_n=0)


def test_bodies_fit_the_api_or_the_run_is_refused() -> None:
    phase = wl.poisson(20, 2, rerank_sampler(), seed=2).phases[0]
    for api, key in (("rerank", "texts"), ("cohere-rerank", "documents")):
        bodies = request_bodies(make_target(api, "http://h:1", model="m"), phase)
        sent = [json.loads(b) for b in bodies]
        assert [s["query"] for s in sent] == phase.queries and [s[key] for s in sent] == phase.texts
    with pytest.raises(ConfigError, match="rerank API"):
        request_bodies(make_target("simple", "http://h:1"), phase)
    embed = wl.poisson(20, 2, wl.TextSampler(DOCS), seed=2).phases[0]
    with pytest.raises(ConfigError, match="query and documents"):
        request_bodies(make_target("rerank", "http://h:1"), embed)
    first = request_bodies(make_target("simple", "http://h:1"), embed)[0]
    assert json.loads(first) == {"texts": embed.texts[0]}


# ---- the report -----------------------------------------------------------------------------------


def rerank_phase(docs: list[int], latencies_ms: list[float | None], window_s: float = 10.0,
                 rate: float | None = 10.0) -> PhaseResult:
    outs = [Outcome(scheduled_s=i / 10, lag_s=0.001, latency_s=math.nan if lat is None else lat / 1e3,
                    error="http_413" if lat is None else None, n_texts=n)
            for i, (n, lat) in enumerate(zip(docs, latencies_ms, strict=True))]
    return PhaseResult(f"{rate:g}/s" if rate else "p", window_s, rate, outs, window_s, rerank=True)


def test_documents_per_second_counts_only_answered_pairs() -> None:
    docs = [10, 20, 30, 40, 50]
    s = summarize(rerank_phase(docs, [20.0, 80.0, 150.0, None, 30.0], window_s=4.0), slo_ms=100)
    assert s.ranked and s.documents == 150 and s.documents_ok == 10 + 20 + 30 + 50
    assert s.documents_per_request == 30
    assert s.documents_per_s == pytest.approx(110 / 4.0)
    assert s.documents_goodput == pytest.approx((10 + 20 + 50) / 4.0)  # within 100 ms
    assert s.achieved_rate == pytest.approx(4 / 4.0) and s.goodput == pytest.approx(3 / 4.0)
    plain = summarize(PhaseResult("p", 4.0, 1.0, [Outcome(0.0, 0.0, 0.01, n_texts=3)], 4.0), slo_ms=100)
    assert not plain.ranked and math.isnan(plain.documents_per_s)


def rerank_report(system: str = "ranker") -> RunReport:
    # 10/s: 100 requests of 20 documents in 10 s, all fast; 20/s: 200, of which 3 too slow for p99
    phases = [rerank_phase([20] * 100, [10.0] * 100, rate=10.0),
              rerank_phase([20] * 200, [60.0] * 197 + [500.0] * 3, rate=20.0)]
    workload = {"kind": "sweep", "request": "rerank", "documents": "20"}
    return build_report(system, "http://x", "rerank", workload, phases, [100.0, 50.0], timelines=True)


def test_rerank_markdown_shows_documents_beside_requests() -> None:
    report = rerank_report()
    md = run_markdown(report)
    assert "rerank 20 documents/request" in md
    header = md.splitlines()[2]
    for column in ("achieved req/s", "docs/s", "goodput req/s (≤100 ms)", "goodput docs/s", "p50 ms",
                   "p99 ms"):
        assert column in header
    row = md.splitlines()[4]  # the 10/s phase: 100 requests × 20 documents in 10 s
    assert row.startswith("| 10/s | 10.0 | 100 | 20.0 |") and "| 10.0 | 200.0 | 10.0 | 200.0 |" in row, row
    assert "p99 ≤ 100 ms: **10 req/s** (200 docs/s)" in md  # the 20/s phase missed its p99
    assert "peak achieved 20.0 req/s, 400 docs/s." in md
    cmp = compare_markdown([report])
    assert "peak docs/s" in cmp.splitlines()[0] and "| 400 |" in cmp


def test_embedding_reports_are_unchanged() -> None:
    outs = [Outcome(scheduled_s=i / 10, lag_s=0.001, latency_s=0.01) for i in range(20)]
    result = PhaseResult("10/s", 2, 10, outs, 2)
    report = build_report("s", "http://x", "simple", {"kind": "poisson"}, [result], [100.0])
    md = run_markdown(report)
    assert "docs" not in md and "| achieved/s |" in md
    assert "docs" not in compare_markdown([report])
    assert not report.ranked and math.isnan(report.peak_documents_per_s)


def test_rerank_report_round_trips_and_old_reports_still_load(tmp_path) -> None:
    from bertserve.bench.runner import read_reports, write_outputs

    report = rerank_report()
    back = RunReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back.phases[0].documents_per_s == pytest.approx(200.0) and back.ranked
    assert back.timelines["10/s"].documents[0] == pytest.approx(200.0)  # 10 answers × 20 documents in 1 s
    old = report.to_dict()
    for p in old["phases"]:
        for key in ("documents", "documents_ok", "documents_per_s", "documents_goodput"):
            p.pop(key)
    assert not RunReport.from_dict(old).ranked
    written = write_outputs([report], tmp_path)
    assert tmp_path / "bench_documents.png" in written and (tmp_path / "bench_documents.png").stat().st_size
    assert read_reports([tmp_path])[0].phases[1].documents_ok == 4000
