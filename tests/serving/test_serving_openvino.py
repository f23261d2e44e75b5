"""A real server on the OpenVINO backend, driven by the official openai and tritonclient clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_server import ServerProcess

pytest.importorskip("openvino")

NAME = "minilm-ov"


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(minilm_dir, "--model-name", NAME, "--backend", "openvino", "--precision", "fp32",
                        "--workers", "1", "--threads", "1")
    yield srv
    srv.stop()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openvino_server_answers_the_official_clients_like_sentence_transformers(
        server: ServerProcess, sentences: list[str], st_reference: np.ndarray) -> None:
    import tritonclient.http as triton
    from openai import OpenAI

    texts, reference = sentences[:16], st_reference[:16]
    res = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0).embeddings.create(
        model=NAME, input=texts)
    got = np.array([d.embedding for d in sorted(res.data, key=lambda d: d.index)])
    assert cosines(got, reference).min() >= 0.99999

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    inp = triton.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    emb = client.infer(NAME, [inp]).as_numpy("embedding")
    assert emb.shape == (16, 384) and cosines(emb, reference).min() >= 0.99999


def test_backend_auto_serves_what_it_measured_and_says_so(minilm_dir: Path, tmp_path: Path,
                                                          sentences: list[str], st_reference: np.ndarray,
                                                          ) -> None:
    import httpx

    srv = ServerProcess(minilm_dir, "--model-name", "auto", "--workers", "1", "--threads", "1",
                        env={"BERTSERVE_AUTO_MEASURE": "1", "BERTSERVE_CACHE": str(tmp_path)})
    try:
        runtime = httpx.get(f"{srv.url}/v2/models/auto").json()["parameters"]["runtime"]
        assert httpx.get(f"{srv.url}/health").json()["runtime"] == runtime
        auto = runtime["auto"]
        assert (runtime["backend"], runtime["precision"]) == (auto["backend"], auto["precision"])
        assert {c["backend"] for c in auto["candidates"]} >= {"onnxruntime", "openvino"}
        got = np.array(httpx.post(f"{srv.url}/embed", json={"texts": sentences[:16]}).json()["embeddings"])
        assert cosines(got, st_reference[:16]).mean() > 0.9999
    finally:
        srv.stop()
