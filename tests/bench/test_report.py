"""Percentile, goodput, capacity and saturation maths on hand-made outcomes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bertserve.bench.loadgen import Outcome, PhaseResult
from bertserve.bench.markdown import compare_markdown, run_markdown
from bertserve.bench.report import (
    RunReport,
    build_report,
    capacity,
    percentile,
    saturation_rate,
    summarize,
    timeline,
)


def phase(latencies_ms: list[float | None], duration_s: float = 10.0, rate: float | None = 10.0,
          wall_s: float | None = None, errors: dict[int, str] | None = None) -> PhaseResult:
    n = len(latencies_ms)
    outs = []
    for i, lat in enumerate(latencies_ms):
        err = (errors or {}).get(i)
        outs.append(Outcome(scheduled_s=duration_s * i / max(n, 1), lag_s=0.001,
                            latency_s=math.nan if err or lat is None else lat / 1e3, error=err))
    return PhaseResult(f"{rate:g}/s" if rate else "p", duration_s, rate, outs, wall_s or duration_s)


def test_nearest_rank_percentile() -> None:
    x = list(range(1, 101))  # 1..100
    assert percentile(x, 0.5) == 50
    assert percentile(x, 0.99) == 99
    assert percentile(x, 0.999) == 100
    assert percentile(x, 1.0) == 100
    assert percentile(x, 0.0) == 1
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))
    assert percentile([3, np.nan, 1, 2], 0.5) == 2  # nan (failed) values are ignored


def test_p99_within_slo_iff_enough_answers_within_slo() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 500))
        x = rng.lognormal(3, 1, n)
        slo = float(rng.uniform(5, 100))
        assert (percentile(x, 0.99) <= slo) == (np.sum(x <= slo) >= math.ceil(0.99 * n))


def test_summary_rates_goodput_and_errors() -> None:
    lats = [10.0] * 90 + [200.0] * 8 + [None, None]
    s = summarize(phase(lats, duration_s=10.0, rate=10.0, errors={98: "http_503", 99: "timeout"}), slo_ms=100)
    assert s.requests == 100 and s.ok == 98
    assert s.errors == {"http_503": 1, "timeout": 1} and s.error_count == 2
    assert s.achieved_rate == pytest.approx(9.8)
    assert s.goodput == pytest.approx(9.0)  # 90 answers within 100 ms in a 10 s window
    assert s.latency_ms["p50"] == pytest.approx(10.0) and s.latency_ms["max"] == pytest.approx(200.0)
    assert s.latency_ms["p90"] == pytest.approx(10.0)  # rank ceil(0.9·98) = 89
    assert s.latency_ms["p99"] == pytest.approx(200.0)
    assert not s.meets(250)  # errors forbid meeting the SLO
    assert s.lag_ms["p99"] == pytest.approx(1.0)


def test_refusals_are_timed_apart_from_answers() -> None:
    result = phase([10.0] * 8 + [None, None], errors={8: "http_429", 9: "timeout"})
    result.outcomes[8].error_latency_s = 0.002
    result.outcomes[9].error_latency_s = 5.0
    s = summarize(result, slo_ms=50)
    assert s.refusal_ms == {"p50": pytest.approx(2.0), "p99": pytest.approx(2.0), "max": pytest.approx(2.0)}
    assert s.latency_ms["max"] == pytest.approx(10.0)  # a refusal is not an answer
    assert summarize(phase([10.0] * 4), slo_ms=50).refusal_ms == {}


def test_window_includes_the_drain() -> None:
    s = summarize(phase([10.0] * 100, duration_s=10.0, wall_s=20.0), slo_ms=100)
    assert s.achieved_rate == pytest.approx(5.0) and s.goodput == pytest.approx(5.0)


def test_capacity_is_highest_rate_meeting_the_slo_without_errors() -> None:
    steps = [summarize(phase([20.0] * 100, rate=10), 50), summarize(phase([40.0] * 100, rate=20), 50),
             summarize(phase([80.0] * 100, rate=40), 50),
             summarize(phase([30.0] * 100, rate=80, errors={0: "http_429"}), 50)]
    assert capacity(steps, 50) == 20
    assert capacity(steps, 100) == 40
    assert capacity(steps, 5) == 0.0


def test_saturation_when_the_server_stops_keeping_up() -> None:
    ok = summarize(phase([20.0] * 100, rate=10), 50)
    slow = summarize(phase([20.0] * 100, rate=10, wall_s=20.0), 50)  # 5/s achieved of 10/s offered
    queued = summarize(phase([1500.0] * 100, rate=10, wall_s=10.1), 50)  # median above 1 s
    failing = summarize(phase([20.0] * 100, rate=10, errors={1: "timeout", 2: "timeout"}), 50)
    assert not ok.saturated
    assert slow.saturated and queued.saturated and failing.saturated
    steps = [ok, summarize(phase([20.0] * 200, rate=20, wall_s=10.2), 50),
             summarize(phase([20.0] * 100, rate=40, wall_s=20.0), 50)]
    assert saturation_rate(steps) == 40
    assert saturation_rate([ok]) is None
    assert saturation_rate([slow, ok]) is None  # a blip below a good step is not saturation


def test_a_low_poisson_count_is_not_saturation() -> None:
    # 413 requests drawn for a nominal 75/s × 6 s, all answered promptly: the server kept up
    s = summarize(phase([15.0] * 413, duration_s=6.0, rate=75.0, wall_s=6.0), 50)
    assert s.achieved_rate < 0.95 * 75 and not s.saturated


def test_sweeps_stop_after_two_saturated_steps_in_a_row() -> None:
    from bertserve.bench.report import saturated_stop

    good, bad = phase([20.0] * 100), phase([20.0] * 100, wall_s=20.0)
    stop = saturated_stop(50)
    assert [stop(r) for r in (bad, good, bad, bad)] == [False, False, False, True]


def test_timeline_bins_by_scheduled_second() -> None:
    outs = [Outcome(0.1, 0, 0.010), Outcome(0.5, 0, 0.020), Outcome(1.2, 0, math.nan, "http_503"),
            Outcome(2.7, 0, 0.300)]
    tl = timeline(PhaseResult("b", 3.0, None, outs, 3.0, [(0, 1, 5.0), (1, 2, 15.0), (2, 3, 5.0)]))
    assert tl.bursts == [(1, 2)]
    assert tl.t_s == [0, 1, 2]
    assert tl.offered == [2, 1, 1] and tl.answered == [2, 0, 1] and tl.errors == [0, 1, 0]
    assert tl.p99_ms[0] == pytest.approx(20.0) and math.isnan(tl.p99_ms[1])
    assert tl.p99_ms[2] == pytest.approx(300)


def make_report(system: str = "sys") -> RunReport:
    results = [phase([5.0 + i % 7 for i in range(100)], rate=10), phase([30.0] * 500, rate=50),
               phase([None] * 10, rate=100, errors={i: "connect" for i in range(10)})]
    return build_report(system, "http://x/embed", "simple", {"kind": "sweep"}, results, [100, 50],
                        timelines=True, quality={"n": 3, "mean_cosine": 0.9999, "min_cosine": 0.999,
                                                 "p01_cosine": 0.999})


def test_report_round_trips_through_json() -> None:
    report = make_report()
    assert report.capacity == {"100": 50, "50": 50}
    assert report.saturation_rate == 100
    again = RunReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.capacity == report.capacity and again.saturation_rate == 100
    assert math.isnan(again.phases[2].latency_ms["p99"])
    assert again.phases[2].errors == {"connect": 10}
    assert again.phase_at(50).latency_ms["p50"] == pytest.approx(30.0)
    assert again.phase_at(70) is None
    assert len(again.latencies_ms["10/s"]) == 100


def test_markdown_tables() -> None:
    md = run_markdown(make_report())
    assert "| 50/s | 50.0 | 500 | 30.0 |" in md and "connect: 10" in md
    table = compare_markdown([make_report("a"), make_report("b")])
    rows = [line for line in table.splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert len(rows) == 2 and "30.0 / 30.0" in rows[0] and "0.9999" in rows[0]


def test_plots_draw_the_reports_data(tmp_path) -> None:
    """Each figure holds the report's numbers (read back from its lines), and each file is a PNG."""
    from bertserve.bench.plots import (
        cdf_figure,
        latency_vs_rate_figure,
        plot_cdf,
        plot_latency_vs_rate,
        plot_timeline,
        timeline_figure,
    )

    def drawn(ax):  # the data lines (the SLO markers have no label)
        return [line for line in ax.lines if not line.get_label().startswith("_")]

    a, b = make_report("a"), make_report("b")
    lines = {line.get_label(): line for line in drawn(cdf_figure([a, b], rate=50).axes[0])}
    assert set(lines) == {"a (50/s)", "b (50/s)"}  # each system's phase at 50/s, nothing else
    x, y = lines["a (50/s)"].get_data()
    assert np.array_equal(x, np.sort(a.latencies_ms["50/s"])) and y[-1] == 1.0
    lone = drawn(cdf_figure([a]).axes[0])  # one system: a line per phase that has answers
    assert [line.get_label() for line in lone] == ["10/s", "50/s"]
    assert np.array_equal(lone[0].get_xdata(), np.sort(a.latencies_ms["10/s"]))

    by_label = {line.get_label(): line for line in drawn(latency_vs_rate_figure([a, b]).axes[0])}
    p99 = by_label["b p99"]
    assert list(p99.get_xdata()) == [ph.offered_rate for ph in b.phases]
    np.testing.assert_array_equal(p99.get_ydata(), [ph.latency_ms["p99"] for ph in b.phases])

    timeline = next(iter(a.timelines.values()))
    rate_ax = timeline_figure([a, b]).axes[0]
    offered = next(line for line in rate_ax.lines if line.get_label() == "offered")
    assert list(offered.get_ydata()) == [*timeline.offered, timeline.offered[-1]]

    paths = [plot_cdf([a, b], tmp_path / "cdf.png", rate=50),
             plot_latency_vs_rate([a, b], tmp_path / "lvr.png"), plot_timeline([a, b], tmp_path / "tl.png")]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_outputs_round_trip_and_compare(tmp_path) -> None:
    from bertserve.bench.runner import read_reports, write_outputs

    written = write_outputs([make_report("a"), make_report("b")], tmp_path, stem="run")
    names = {p.name for p in written}
    assert {"run.json", "run.md", "run_cdf.png", "run_latency_vs_rate.png", "run_timeline.png"} <= names
    again = read_reports([tmp_path / "run.json"])
    assert [r.system for r in again] == ["a", "b"] and again[0].capacity == {"100": 50, "50": 50}


def test_public_names() -> None:
    import bertserve.bench as bench

    assert sorted(bench.__all__) == bench.__all__
    for name in bench.__all__:
        assert getattr(bench, name) is not None
