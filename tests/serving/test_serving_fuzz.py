"""The published contract holds: schemathesis fuzzes the live ``/openapi.json`` with every
check (schema-valid requests served, invalid ones refused with a documented status and body,
no 5xx, 405 with Allow, documented content types), and each error body matches its schema."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving_server import ServerProcess, assert_documented

pytestmark = pytest.mark.slow
MAX_TEXTS = 16
MAX_TOKENS = 4000  # fewer than MAX_TEXTS texts of the model's 256 tokens


CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "negative_data_rejection",
          "positive_data_acceptance", "missing_required_header", "unsupported_method",
          "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth",
          "object_level_authorization")  # every check schemathesis 4.32 has ("--checks all")
# Every check is on (in the file: a per-operation setting wins over the file, not over the
# command line). The served model's name and version go in the paths (random ones only meet
# 404). A v2 tensor's shape must count its data, which JSON Schema cannot say: the two infer
# operations skip "schema-valid requests are accepted" (invalid ones must still be refused).
CONFIG = "\n".join([
    'parameters = { "path.name" = "MODEL", "path.model_id" = "MODEL", "path.version" = "1" }',
    "[checks]", *(f"{check}.enabled = true" for check in CHECKS),
    "[[operations]]", 'include-path-regex = "/infer$"', "checks.positive_data_acceptance.enabled = false",
]) + "\n"


@pytest.fixture(scope="module")
def server(onnx_int8: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(onnx_int8, "--workers", "1", "--threads", "1",
                        "--max-texts-per-request", str(MAX_TEXTS),
                        "--max-tokens-per-request", str(MAX_TOKENS))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rerank_server(rerank_dir: Path) -> Iterator[ServerProcess]:
    """A cross-encoder: the pair routes (TEI /rerank and /predict, Cohere /v2/rerank, v2 with two
    inputs) are offered, the single-text ones are not."""
    srv = ServerProcess(rerank_dir, "--backend", "onnxruntime", "--workers", "1", "--threads", "1",
                        "--max-texts-per-request", str(MAX_TEXTS),
                        "--max-tokens-per-request", str(MAX_TOKENS))
    yield srv
    srv.stop()


def fuzz(server: ServerProcess, tmp_path: Path, examples: int, *selection: str) -> None:
    """schemathesis with every check over the server's document (or the operations selected)."""
    name = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.replace("MODEL", name))
    st = Path(sys.executable).parent / "st"
    run = subprocess.run([str(st), "--config-file", str(config), "run", f"{server.url}/openapi.json",
                          "--max-examples", str(examples), "--generation-deterministic",
                          "--max-failures", "5", *selection],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1].lower()
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200  # still up and serving


def test_schemathesis_finds_nothing(server: ServerProcess, tmp_path: Path) -> None:
    fuzz(server, tmp_path, 60)
    assert httpx.post(f"{server.url}/embed", json={"texts": ["after the fuzzer"]}).status_code == 200


def test_schemathesis_finds_nothing_on_a_reranker(rerank_server: ServerProcess, tmp_path: Path) -> None:
    """The pair operations, fewer examples each (the single-text ones are the test above's)."""
    fuzz(rerank_server, tmp_path, 25, "--include-path-regex", "rerank|predict|/infer$")
    answer = httpx.post(f"{rerank_server.url}/rerank", json={"query": "after", "texts": ["the fuzzer"]})
    assert answer.status_code == 200 and answer.json()[0]["index"] == 0


def wait_busy(url: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith("bertserve_batches_in_flight ") and float(line.split()[1]) >= 1:
                return
        time.sleep(0.01)
    raise AssertionError("the heavy request never reached the worker")


CASES = [  # (path in the document, method, url path, body or raw bytes, headers, status)
    ("/embed", "post", "/embed", b"{not json", {}, 400),
    ("/embed", "post", "/embed", {"texts": ["a"], "model": "another"}, {}, 404),
    ("/embed", "post", "/embed", {"texts": []}, {}, 422),
    ("/embed", "post", "/embed", {"texts": ["a"] * (MAX_TEXTS + 1)}, {}, 422),
    ("/embed", "post", "/embed", {"texts": ["a"], "slo_ms": 0.01}, {}, 429),  # behind a busy worker
    ("/embed", "post", "/embed", {"texts": ["word " * 300] * MAX_TEXTS}, {}, 413),  # > MAX_TOKENS
    ("/embed", "post", "/embed", b"x" * (5 * 1024 * 1024), {}, 413),  # body over the limit
    ("/v1/embeddings", "post", "/v1/embeddings", b"[", {}, 400),
    ("/v1/embeddings", "post", "/v1/embeddings", {"input": "a", "model": "another"}, {}, 404),
    ("/v1/embeddings", "post", "/v1/embeddings", {"input": [1, 2], "model": "M"}, {}, 422),
    ("/v1/embeddings", "post", "/v1/embeddings", {"input": "a", "model": "M", "slo_ms": 0.01}, {}, 429),
    ("/v2/models/{name}/infer", "post", "/v2/models/M/infer", b"{", {}, 400),
    ("/v2/models/{name}/infer", "post", "/v2/models/other/infer", {"inputs": []}, {}, 404),
    ("/v2/models/{name}/infer", "post", "/v2/models/M/infer",
     {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}, {}, 422),
    ("/v2/models/{name}", "get", "/v2/models/other", None, {}, 404),
    ("/v1/models/{model_id}", "get", "/v1/models/other", None, {}, 404),
]


@pytest.mark.parametrize(("doc_path", "method", "url", "body", "headers", "status"), CASES,
                         ids=[f"{c[2]}-{c[5]}" for c in CASES])
def test_each_error_status_is_documented_with_its_body(server: ServerProcess, doc_path: str, method: str,
                                                       url: str, body, headers: dict, status: int,
                                                       heavy: dict | None = None,
                                                       heavy_path: str = "/embed") -> None:
    name = httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"]
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": name}
    url = url.replace("/M/", f"/{name}/")
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    with ThreadPoolExecutor(1) as pool:
        if status == 429:  # an idle server serves even a hopeless request at once: make a backlog
            busy = pool.submit(httpx.post, f"{server.url}{heavy_path}", timeout=120,
                               json=heavy or {"texts": ["word " * 250] * (MAX_TEXTS - 1), "slo_ms": 60_000})
            wait_busy(server.url)
        answer = httpx.request(method.upper(), f"{server.url}{url}", headers=headers, timeout=60, **kwargs)
        if status == 429:
            assert busy.result().status_code == 200
    assert answer.status_code == status, answer.text[:500]
    assert_documented(server.url, doc_path, method, answer)
    if status == 429:
        assert int(answer.headers["retry-after"]) >= 1


RERANK_CASES = [  # (path in the document, url path, body or raw bytes, status)
    ("/rerank", "/rerank", b"{not json", 400),
    ("/rerank", "/rerank", {"query": "q", "texts": []}, 422),
    ("/rerank", "/rerank", {"query": "q", "texts": ["word " * 300] * MAX_TEXTS}, 413),  # > MAX_TOKENS
    ("/rerank", "/rerank", {"query": "q", "texts": ["a"], "slo_ms": 0.01}, 429),
    ("/rerank", "/rerank", b"x" * (5 * 1024 * 1024), 413),
    ("/predict", "/predict", b"[", 400),
    ("/predict", "/predict", {"inputs": "a single text"}, 422),
    ("/predict", "/predict", {"inputs": ["q", "a"], "slo_ms": 0.01}, 429),
    ("/v2/rerank", "/v2/rerank", b"{", 400),
    ("/v2/rerank", "/v2/rerank", {"model": "another", "query": "q", "documents": ["d"]}, 404),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": ["d"], "top_n": 0}, 422),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": ["d"], "slo_ms": 0.01}, 429),
    ("/v2/models/{name}/infer", "/v2/models/M/infer",
     {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["q"]}]}, 400),
]


@pytest.mark.parametrize(("doc_path", "url", "body", "status"), RERANK_CASES,
                         ids=[f"{c[1]}-{c[3]}" for c in RERANK_CASES])
def test_each_error_status_of_the_pair_routes_is_documented(rerank_server: ServerProcess, doc_path: str,
                                                             url: str, body, status: int) -> None:
    test_each_error_status_is_documented_with_its_body(rerank_server, doc_path, "post", url, body, {}, status,
                                                       heavy={"query": "word " * 120,
                                                              "texts": ["word " * 120] * (MAX_TEXTS - 1),
                                                              "slo_ms": 60_000}, heavy_path="/rerank")
    if status != 429:
        return
    text = httpx.get(f"{rerank_server.url}/metrics").text
    api = {"/rerank": "tei", "/predict": "tei", "/v2/rerank": "cohere"}[url]
    assert f'bertserve_requests_total{{api="{api}",status="429"}}' in text


def test_an_undeclared_method_gets_405_with_allow(server: ServerProcess) -> None:
    answer = httpx.request("DELETE", f"{server.url}/embed")
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"


def test_the_metrics_content_type_is_the_documented_one(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    declared = list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    assert httpx.get(f"{server.url}/metrics").headers["content-type"].split(";")[0] in declared
