"""`bertserve bench` as a user runs it, against small real HTTP servers: model discovery, runs that
measured nothing, unreadable inputs, an --out that would overwrite an input, nonsense numbers.

Every command runs in its own process, so what is checked is what a user sees: the exit code
and one `error: ...` line, never a traceback.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertserve.bench.client import HttpSender
from bertserve.bench.discovery import base_url, discover_models, model_in_url
from bertserve.bench.loadgen import Outcome, PhaseResult
from bertserve.bench.report import build_report
from bertserve.bench.runner import write_outputs

BERTSERVE = [sys.executable, "-m", "bertserve.cli"]
QUICK = ["--rate", "20", "--duration", "0.5", "--warmup-s", "0", "--no-progress", "--timeout-s", "5"]

# (method, path) → (status, JSON body); a callable answers per request
Routes = dict[tuple[str, str], tuple[int, object] | Callable[[], tuple[int, object]]]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([*BERTSERVE, "bench", *args], capture_output=True, text=True, env=env, timeout=120)


def invoke(*args: str) -> tuple[int, str]:
    """``bench ARGS`` in this process (faster, for checks that never reach a server): exit code, output.

    A bertserve error becomes exit 1 and one ``error:`` line, as ``bertserve.cli.main`` does.
    """
    import bertserve.cli.bench  # noqa: F401 - registers the bench commands on the app
    from bertserve.cli import app
    from bertserve.errors import BertserveError

    result = CliRunner().invoke(app, ["bench", *args], env={"COLUMNS": "200", "NO_COLOR": "1"})
    if isinstance(result.exception, BertserveError):
        return 1, f"error: {result.exception}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert last.startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, (word, proc.stderr)


class JsonServer:
    """A stdlib HTTP server on loopback that answers fixed routes; records what it was asked."""

    def __init__(self, routes: Routes) -> None:
        seen: list[tuple[str, str, bytes]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                seen.append((method, self.path, self.rfile.read(n)))
                route = routes.get((method, self.path), (404, {"error": f"no route {self.path}"}))
                status, body = route() if callable(route) else route
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def posted_models(self, path_prefix: str = "") -> set[str]:
        out = set()
        for method, path, body in self.seen:
            if method == "POST" and path.startswith(path_prefix) and body:
                model = json.loads(body).get("model")
                out.add(model if model is not None else path)
        return out

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[[Routes], JsonServer]]:
    servers: list[JsonServer] = []

    def start(routes: Routes) -> JsonServer:
        servers.append(JsonServer(routes))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


EMBEDDING = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}]}
KSERVE_ANSWER = {"model_name": "m1", "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [1, 2],
                                                   "data": [0.6, 0.8]}]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- 1. the model name, and runs that measured nothing ------------------------------------------------


def test_openai_run_uses_the_model_the_server_lists(serve, tmp_path: Path) -> None:
    server = serve({("GET", "/v1/models"): (200, {"object": "list", "data": [{"id": "all-MiniLM-L6-v2"}]}),
                    ("POST", "/v1/embeddings"): (200, EMBEDDING)})
    proc = bench("run", server.url, "--api", "openai", *QUICK, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert server.posted_models() == {"all-MiniLM-L6-v2"}  # never 'default'
    [report] = json.loads((tmp_path / "bench.json").read_text())
    assert report["phases"][0]["ok"] == report["phases"][0]["requests"] > 0


def test_kserve_run_finds_the_ready_model_in_the_repository_index(serve) -> None:
    server = serve({("POST", "/v2/repository/index"): (200, [{"name": "m0", "state": "UNAVAILABLE"},
                                                            {"name": "m1", "state": "READY"}]),
                    ("POST", "/v2/models/m1/infer"): (200, KSERVE_ANSWER)})
    proc = bench("run", server.url, "--api", "kserve", *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "m1" in proc.stderr
    assert {p for m, p, _ in server.seen if m == "POST" and p.endswith("/infer")} == {"/v2/models/m1/infer"}


def test_an_explicit_model_name_is_sent_as_given(serve) -> None:
    server = serve({("POST", "/v1/embeddings"): (200, EMBEDDING)})  # no /v1/models at all
    proc = bench("run", server.url, "--api", "openai", "--model-name", "mine", *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert server.posted_models() == {"mine"}
    # nothing asked (but the server's CPU, which bench reads from /metrics where there is one)
    assert not [p for m, p, _ in server.seen if m == "GET" and p != "/metrics"]


def test_several_models_must_be_chosen_between(serve) -> None:
    server = serve({("GET", "/v1/models"): (200, {"data": [{"id": "a"}, {"id": "b"}]})})
    assert_one_line_error(bench("run", server.url, "--api", "openai", *QUICK), "a, b", "--model-name")
    assert not server.posted_models()


def test_undiscoverable_model_warns_then_every_request_failing_exits_1(serve, tmp_path: Path) -> None:
    server = serve({})  # 404 for everything, like a server that does not serve model 'default'
    proc = bench("run", server.url, "--api", "openai", *QUICK, "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, "failed", "http_404", "no route /v1/embeddings")
    assert "warning:" in proc.stderr and "'default'" in proc.stderr
    assert server.posted_models() == {"default"}
    assert "|" not in proc.stdout and not (tmp_path / "out").exists()  # no table, nothing written


def test_nothing_listening_exits_1_before_sending(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    for api in ("simple", "openai"):
        proc = bench("run", url, "--api", api, *QUICK, "--out", str(tmp_path / api))
        assert_one_line_error(proc, "nothing answers", "refused")
        assert not (tmp_path / api).exists()


def test_a_run_where_some_requests_succeed_exits_0(serve) -> None:
    turn = itertools.count()
    server = serve({("POST", "/embed"): lambda: (200, {"embeddings": [[1.0]]}) if next(turn) % 2
                    else (500, {"error": "boom"})})
    proc = bench("run", server.url, *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert "http_500" in proc.stdout  # the failures are reported, not fatal


@pytest.mark.parametrize(("api", "given", "base"), [
    ("openai", "http://h:1", "http://h:1"),
    ("openai", "http://h:1/v1/embeddings", "http://h:1"),
    ("openai", "http://h:1/v1/", "http://h:1"),
    ("kserve", "http://h:1/v2/models/m/infer", "http://h:1"),
    ("kserve", "http://h:1/v2/models/m/versions/2/infer", "http://h:1"),
    ("kserve", "http://h:1/prefix", "http://h:1/prefix"),
])
def test_base_url_drops_the_api_path(api: str, given: str, base: str) -> None:
    assert base_url(api, given) == base


def test_a_kserve_url_that_names_its_model_is_not_asked() -> None:
    assert model_in_url("kserve", "http://h:1/v2/models/minilm/infer") == "minilm"
    assert model_in_url("kserve", "http://h:1") is None
    assert model_in_url("openai", "http://h:1/v2/models/minilm/infer") is None


async def test_discovery_falls_back_through_the_kserve_probes(serve) -> None:
    kserve_list = serve({("GET", "/v2/models"): (200, {"models": ["x"]})})
    openai_list = serve({("GET", "/v1/models"): (200, {"data": [{"id": "y"}]})})
    nothing = serve({("GET", "/v1/models"): (200, {"data": []})})
    for server, expected in ((kserve_list, ["x"]), (openai_list, ["y"]), (nothing, [])):
        async with HttpSender(server.url) as sender:
            assert await discover_models("kserve", server.url, sender) == expected


# ---- 2. and 3. bench compare: unreadable inputs, an --out that would overwrite one -----------------------


def write_run(folder: Path, system: str) -> Path:
    outs = [Outcome(scheduled_s=i / 10, lag_s=0.001, latency_s=0.01 + i / 1e4) for i in range(20)]
    result = PhaseResult("10/s", 2.0, 10.0, outs, 2.0)
    report = build_report(system, "http://x", "simple", {"kind": "poisson"}, [result], [100.0])
    write_outputs([report], folder)
    return folder / "bench.json"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    return write_run(root / "a", "alpha"), write_run(root / "b", "beta")


def test_compare_refuses_an_out_folder_holding_an_input(runs: tuple[Path, Path]) -> None:
    a, b = runs
    before = a.read_bytes()
    assert_one_line_error(bench("compare", str(a), str(b), "--out", str(a.parent)), "overwrite", str(a))
    code, output = invoke("compare", str(b), str(a.parent), "--out", str(a.parent / "." / ".." / "a"))
    assert code == 1 and "overwrite" in output, output
    assert a.read_bytes() == before


def test_compare_reads_files_and_run_folders(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = runs
    proc = bench("compare", str(a), str(b.parent), "--out", str(tmp_path / "cmp"))
    assert proc.returncode == 0, proc.stderr
    combined = json.loads((tmp_path / "cmp" / "bench.json").read_text())
    assert [r["system"] for r in combined] == ["alpha", "beta"]


@pytest.mark.parametrize(("make", "words"), [
    (lambda d: d / "nope.json", ["nope.json", "no such file"]),
    (lambda d: d, ["folder without a report", "bench.json"]),
    (lambda d: d / "bench.md", ["bench.md", "not JSON"]),
    (lambda d: d / "other.json", ["other.json", "not a bench report"]),
    (lambda d: d / "empty.json", ["empty.json", "holds no report"]),
])
def test_compare_names_an_input_it_cannot_read(runs, tmp_path: Path, make, words: list[str]) -> None:
    (tmp_path / "bench.md").write_text("# a table\n")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    (tmp_path / "empty.json").write_text("[]")
    code, output = invoke("compare", str(runs[0]), str(make(tmp_path)), "--out", str(tmp_path / "cmp"))
    assert code == 1 and output.startswith("error:") and all(w in output for w in words), output
    assert not (tmp_path / "cmp").exists()


# ---- 2. and 4. bench run: a bad reference, nonsense numbers ----------------------------------------------


def test_run_names_a_reference_it_cannot_read(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"  # never reached: the reference is read first
    (tmp_path / "text.npy").write_text("not numpy")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    for ref, words in ((tmp_path / "nope.npy", ["nope.npy", "no such file"]),
                       (tmp_path / "text.npy", ["text.npy", "not a readable .npy"]),
                       (tmp_path / "flat.npy", ["flat.npy", "(texts, dim) matrix"]),
                       (tmp_path, [str(tmp_path), "directory"])):
        code, output = invoke("run", url, "--quality", "4", "--reference", str(ref), *QUICK)
        assert code == 1 and output.startswith("error:"), output
        assert all(w in output for w in words), output


@pytest.mark.parametrize(("args", "word"), [
    (["--quality", "-3"], "--quality"), (["--duration", "0"], "--duration"),
    (["--duration", "-1"], "--duration"), (["--rate", "0"], "--rate"), (["--rate", "-5"], "--rate"),
    (["--rate", "nan"], "--rate"), (["--timeout-s", "0"], "--timeout-s"), (["--end-rate", "0"], "--end-rate"),
    (["--warmup-s", "-1"], "--warmup-s"), (["--speed", "0"], "--speed"), (["--burst-s", "0"], "--burst-s"),
    (["--period-s", "-1"], "--period-s"), (["--burst-factor", "0.5"], "--burst-factor"),
    (["--step-s", "-1"], "--step-s"), (["--min-requests", "-3"], "--min-requests"),
    (["--slo-ms", "-5"], "--slo-ms"), (["--slo-ms", "0,50"], "--slo-ms"),
    (["-w", "sweep", "--rates", "0,5"], "--rates"), (["-w", "sweep", "--rates", ""], "--rates"),
    (["-w", "sweep", "--step-s", "0", "--min-requests", "0"], "step_s > 0 or min_requests > 0"),
])
def test_run_rejects_nonsense_numbers(args: list[str], word: str) -> None:
    # nothing listens at this URL: an option that slipped through would fail with "nothing answers"
    code, output = invoke("run", f"http://127.0.0.1:{closed_port()}", *QUICK, *args)  # the last one counts
    assert code in (1, 2), output  # 2: typer's usage error; 1: a ConfigError line
    assert word in output and "nothing answers" not in output, output


def test_compare_rejects_a_nonsense_cdf_rate(runs: tuple[Path, Path], tmp_path: Path) -> None:
    code, output = invoke("compare", str(runs[0]), "--cdf-rate", "-10", "--out", str(tmp_path / "cmp"))
    assert code == 2 and "--cdf-rate" in output, output
    assert not (tmp_path / "cmp").exists()
