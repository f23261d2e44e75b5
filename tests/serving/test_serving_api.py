"""The real server on loopback, driven by tritonclient[http], the openai client and plain HTTP.

Numerics are compared with the direct runtime (``Encoder``) on the same ONNX artifact.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_server import ServerProcess

from bertserve import Encoder

pytestmark = pytest.mark.slow
NAME = "minilm"
TOL = 1e-5


@pytest.fixture(scope="module")
def server(onnx_fp32: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(onnx_fp32, "--model-name", NAME, "--workers", "2", "--threads", "1",
                        "--max-texts-per-request", "64", "--max-chars-per-text", "2000",
                        "--max-body-bytes", "65536")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def texts(sentences: list[str]) -> list[str]:
    return sentences[:24]


@pytest.fixture(scope="module")
def reference(onnx_fp32: Path, texts: list[str]) -> np.ndarray:
    return Encoder.load(onnx_fp32).embed(texts)


def test_health_metadata_and_model_lists(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    meta = httpx.get(f"{server.url}/v2/models/{NAME}").json()
    assert meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert meta["outputs"][0]["shape"] == [-1, 384]
    assert [m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]] == [NAME]


def test_triton_client_matches_the_runtime(server: ServerProcess, texts: list[str],
                                           reference: np.ndarray) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    for binary in (True, False):
        inp = triton.InferInput("text", [len(texts)], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object), binary_data=binary)
        out = triton.InferRequestedOutput("embedding", binary_data=binary)
        result = client.infer(NAME, [inp], outputs=[out])
        emb = result.as_numpy("embedding")
        assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
        np.testing.assert_allclose(emb, reference, atol=TOL)
        assert result.get_response()["parameters"]["students"] == 1
    default = client.infer(NAME, [inp])  # no outputs named: all of them, binary
    np.testing.assert_allclose(default.as_numpy("embedding"), reference, atol=TOL)


def test_openai_client_matches_the_runtime(server: ServerProcess, texts: list[str],
                                           reference: np.ndarray, onnx_fp32: Path) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [NAME]
    default = client.embeddings.create(model=NAME, input=texts)  # the client asks for base64
    floats = client.embeddings.create(model=NAME, input=texts, encoding_format="float")
    for res in (default, floats):
        got = np.array([d.embedding for d in sorted(res.data, key=lambda d: d.index)])
        np.testing.assert_allclose(got, reference, atol=TOL)
    counts = Encoder.load(onnx_fp32).tokenizer.count(texts)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(counts)
    one = client.embeddings.create(model=NAME, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, reference[0], atol=TOL)
    raw = httpx.post(f"{server.url}/v1/embeddings",
                     json={"model": NAME, "input": texts[:2], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][1]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, reference[1], atol=TOL)


def test_simple_json_api_matches_the_runtime_and_keeps_its_shape(
        server: ServerProcess, texts: list[str], reference: np.ndarray) -> None:
    body = httpx.post(f"{server.url}/embed", json={"texts": texts}).json()
    assert body["model"] == NAME and body["dim"] == 384
    np.testing.assert_allclose(np.array(body["embeddings"]), reference, atol=TOL)
    assert body["students"] == 1 and body["usage"]["tokens"] > 0


def test_long_texts_are_truncated_by_default_or_refused_on_request(server: ServerProcess) -> None:
    long_text = "word " * 390  # ~390 tokens > 256 (the model's limit), < 2000 characters
    ok = httpx.post(f"{server.url}/embed", json={"texts": [long_text]}).json()
    assert ok["usage"]["truncated_texts"] == 1 and ok["usage"]["tokens"] == 256
    refused = httpx.post(f"{server.url}/embed", json={"texts": [long_text], "truncate": False})
    assert refused.status_code == 413 and "256" in refused.json()["error"]["message"]


BAD = [
    # (method, path, content or json, headers, status, fragment of the message)
    ("post", "/embed", b"{not json", {}, 400, "not valid JSON"),
    ("post", "/embed", b'{"texts": ["caf\xe9"]}', {}, 400, "UTF-8"),
    ("post", "/embed", b"", {}, 400, "empty"),
    ("post", "/embed", {"texts": "just a string"}, {}, 422, "list of strings"),
    ("post", "/embed", {"text": ["typo in the field name"]}, {}, 422, '"texts"'),
    ("post", "/embed", {"texts": []}, {}, 422, "at least one"),
    ("post", "/embed", {"texts": ["fine", ""]}, {}, 422, "text 1 is empty"),
    ("post", "/embed", {"texts": ["\u3000 \t\n"]}, {}, 422, "text 0 is empty"),  # white space only
    ("post", "/embed", {"texts": ["fine", 42]}, {}, 422, "not a string"),
    ("post", "/embed", b'{"texts": ["\\ud800 lone surrogate"]}', {}, 422, "surrogate"),
    ("post", "/embed", {"texts": ["x"] * 65}, {}, 422, "limit is 64"),
    ("post", "/embed", {"texts": ["y" * 2001], "truncate": False}, {}, 422, "2001 characters"),
    ("post", "/embed", {"texts": ["ok"], "slo_ms": "soon"}, {}, 422, "slo_ms"),
    ("post", "/embed", b'{"texts": ["ok"], "slo_ms": 1' + b"0" * 400 + b"}", {}, 422, "slo_ms"),  # > float
    ("post", "/embed", b'{"texts": ["ok"], "slo_ms": 1' + b"0" * 5000 + b"}", {}, 400, "not usable JSON"),
    ("post", "/embed", {"texts": ["ok"], "slo_ms": True}, {}, 422, "not true"),
    ("post", "/embed", {"texts": ["ok"]}, {"x-slo-ms": "inf"}, 422, "x-slo-ms"),
    ("post", "/v1/embeddings", {"model": NAME, "input": "hi", "slo_ms": -5}, {}, 422, "above 0"),
    ("post", "/embed", b"[1, 2]", {}, 400, "JSON object"),
    ("post", "/embed", b"z" * 70000, {}, 413, "larger than the limit"),
    ("post", "/classify", {"texts": ["an embedder"]}, {}, 422, "use POST /embed"),
    ("post", "/v1/embeddings", {"model": "gpt-4", "input": "hi"}, {}, 404, "not served here"),
    ("post", "/v1/embeddings", {"model": NAME, "input": [1, 2, 3]}, {}, 422, "token arrays"),
    ("post", "/v1/embeddings", {"model": NAME, "input": "hi", "encoding_format": "hex"}, {}, 422, "base64"),
    ("post", "/v1/embeddings", {"input": "hi"}, {}, 422, '"model"'),
    ("post", "/v2/models/nope/infer", {"inputs": []}, {}, 404, "not served here"),
    ("get", "/v2/models/nope", None, {}, 404, "not served here"),
    ("post", f"/v2/models/{NAME}/infer", {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                      "data": [""]}]}, {}, 422, "empty"),
    ("post", f"/v2/models/{NAME}/infer", b'{"inputs": 5}', {}, 422, "inputs"),
    ("post", f"/v2/models/{NAME}/infer", b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", '
     b'"data": ["hi"]}], "parameters": {"slo_ms": 1e400}}', {}, 422, "parameters.slo_ms"),  # inf
    ("post", f"/v2/models/{NAME}/infer", b"{}", {"Inference-Header-Content-Length": "99"}, 400,
     "larger than the body"),
    ("get", "/no/such/route", None, {}, 404, "no route"),
]


@pytest.mark.parametrize(("method", "path", "payload", "headers", "status", "fragment"), BAD,
                         ids=[f"{b[1]}-{b[4]}-{b[5]}" for b in BAD])
def test_bad_input_gets_a_4xx_that_names_the_problem(server: ServerProcess, method: str, path: str,
                                                     payload: object, headers: dict, status: int,
                                                     fragment: str) -> None:
    kwargs: dict = {"headers": headers}
    if isinstance(payload, bytes):
        kwargs["content"] = payload
        kwargs["headers"] = {"content-type": "application/json", **headers}
    elif payload is not None:
        kwargs["json"] = payload
    res = httpx.request(method, f"{server.url}{path}", **kwargs)
    assert res.status_code == status, res.text
    error = res.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert fragment in message


def test_the_server_says_where_it_serves(server: ServerProcess) -> None:
    assert f"bertserve: serving {NAME} on {server.url} (" in server.output()


def test_the_server_is_still_healthy_after_bad_input(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.post(f"{server.url}/embed", json={"texts": ["still fine"]}).status_code == 200


def test_metrics_expose_latency_split_queue_batches_and_students(server: ServerProcess) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    for series in ("bertserve_request_latency_seconds_bucket", "bertserve_queue_time_seconds_bucket",
                   "bertserve_compute_time_seconds_bucket", "bertserve_queue_depth",
                   "bertserve_batch_size_bucket", "bertserve_batch_padding_ratio_bucket",
                   "bertserve_tokens_total", "bertserve_rejected_requests_total",
                   "bertserve_active_students 1.0", 'bertserve_requests_total{api="v2",status="200"}'):
        assert series in text, series


def cpu_by_process(url: str) -> dict[str, float]:
    from bertserve.bench.runner import parse_cpu

    return parse_cpu(httpx.get(f"{url}/metrics").text)


def test_metrics_expose_the_cpu_of_every_process_and_idle_workers_sleep(server: ServerProcess) -> None:
    before = cpu_by_process(server.url)
    assert set(before) == {"front", "worker-0", "worker-1"} and before["front"] > 0
    time.sleep(1.0)
    after = cpu_by_process(server.url)
    # no request in that second: a worker that polled its pipe would have used most of a core
    for worker in ("worker-0", "worker-1"):
        assert after[worker] - before[worker] < 0.2, (worker, after[worker] - before[worker])
