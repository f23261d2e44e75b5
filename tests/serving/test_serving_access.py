"""API keys, request IDs and the access log, through the real server and the official clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_server import ServerProcess, assert_documented, fake_server

from bertserve.config import ServerSettings
from bertserve.errors import ConfigError

pytestmark = pytest.mark.slow
KEYS = ("first-key", "second-key")


@pytest.fixture(scope="module")
def server(onnx_int8: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(onnx_int8, "--workers", "1", "--threads", "1", "--api-key", KEYS[0],
                        "--api-key", KEYS[1], "--request-log", "json")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def name(server: ServerProcess) -> str:
    return httpx.get(f"{server.url}/v1/models", headers=bearer(KEYS[0])).json()["data"][0]["id"]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_without_a_key_each_api_answers_401_in_its_own_shape(server: ServerProcess, name: str) -> None:
    simple = httpx.post(f"{server.url}/embed", json={"texts": ["a"]})
    openai = httpx.post(f"{server.url}/v1/embeddings", json={"input": "a", "model": name},
                        headers=bearer("not-a-key"))
    v2 = httpx.post(f"{server.url}/v2/models/{name}/infer", json={"inputs": []},
                    headers={"x-api-key": "nope"})
    listing = httpx.get(f"{server.url}/v2/models/{name}")
    for answer in (simple, openai, v2, listing):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["x-request-id"]
    assert simple.json()["error"]["type"] == "unauthorized"
    for answer, path, method in ((simple, "/embed", "post"), (openai, "/v1/embeddings", "post"),
                                 (v2, "/v2/models/{name}/infer", "post"),
                                 (listing, "/v2/models/{name}", "get")):
        assert_documented(server.url, path, method, answer)  # 401 and its body, in the document
    assert openai.json()["error"]["code"] == "unauthorized" and openai.json()["error"]["type"]
    assert "API key" in v2.json()["error"] and listing.json()["request_id"] == listing.headers["x-request-id"]


def test_a_key_opens_every_route(server: ServerProcess, name: str) -> None:
    assert httpx.post(f"{server.url}/embed", json={"texts": ["a"]},
                      headers=bearer(KEYS[0])).status_code == 200
    assert httpx.post(f"{server.url}/embed", json={"texts": ["a"]},
                      headers={"x-api-key": KEYS[1]}).status_code == 200
    assert httpx.get(f"{server.url}/v2/models/{name}", headers=bearer(KEYS[0])).status_code == 200


def test_health_and_metrics_stay_open_but_health_details_need_a_key(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert httpx.get(f"{server.url}/health").json() == {"ready": True}
    detailed = httpx.get(f"{server.url}/health", headers=bearer(KEYS[0])).json()
    assert detailed["ready"] and detailed["workers"] and detailed["model"]


def test_the_openai_client_with_a_key(server: ServerProcess, name: str) -> None:
    import openai

    good = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEYS[0], max_retries=0)
    assert len(good.embeddings.create(model=name, input=["hello"]).data[0].embedding) == 384
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=name, input=["hello"])


def test_the_triton_client_with_a_key(server: ServerProcess, name: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    inp = triton.InferInput("text", [2], "BYTES")
    inp.set_data_from_numpy(np.array([b"one", b"two"], dtype=object))
    result = client.infer(name, [inp], headers=bearer(KEYS[0]))
    assert result.as_numpy("embedding").shape == (2, 384)
    with pytest.raises(InferenceServerException):
        client.infer(name, [inp])  # no key


def test_request_ids_are_kept_or_made_echoed_and_logged(server: ServerProcess) -> None:
    given = httpx.post(f"{server.url}/embed", json={"texts": ["a"]},
                       headers={**bearer(KEYS[0]), "x-request-id": "my-trace-42"})
    assert given.headers["x-request-id"] == "my-trace-42"
    made = httpx.post(f"{server.url}/embed", json={"texts": []}, headers=bearer(KEYS[0]))
    rid = made.headers["x-request-id"]
    assert made.status_code == 422 and made.json()["error"]["request_id"] == rid and len(rid) == 16
    for answer in (given, made, httpx.get(f"{server.url}/v2/models/nope", headers=bearer(KEYS[0])),
                   httpx.post(f"{server.url}/embed", json={"texts": ["a"]})):  # 200, 422, 404, 401
        assert len(answer.headers.get_list("x-request-id")) == 1  # once, whichever path answered
    odd = httpx.get(f"{server.url}/v2/health/live", headers={"x-request-id": "has spaces"})
    assert odd.headers["x-request-id"] != "has spaces"  # not a sane token: a new one
    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["my-trace-42"]["status"] == 200 and by_id["my-trace-42"]["path"] == "/embed"
    assert by_id[rid]["status"] == 422 and by_id[odd.headers["x-request-id"]]["path"] == "/v2/health/live"


def test_keys_for_health_closes_health_and_metrics(minilm_dir: Path) -> None:
    with fake_server(minilm_dir, "fake_factory", api_key=["k"], keys_for_health=True) as srv:
        assert httpx.get(f"{srv.url}/metrics").status_code == 401
        assert httpx.get(f"{srv.url}/health").status_code == 401
        assert httpx.get(f"{srv.url}/metrics", headers=bearer("k")).status_code == 200
        assert httpx.get(f"{srv.url}/openapi.json").status_code == 200  # the contract stays public
        doc = httpx.get(f"{srv.url}/openapi.json").json()
        assert "401" in doc["paths"]["/embed"]["post"]["responses"]
        assert doc["paths"]["/embed"]["post"]["security"]


def test_keys_from_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# operators\nalpha\n\nbeta  # the batch jobs\n")
    assert ServerSettings(api_key=["gamma"], api_key_file=str(keys)).api_keys() == ["gamma", "alpha", "beta"]
    assert ServerSettings(api_key="a, b").api_keys() == ["a", "b"]  # as the variable gives it
    with pytest.raises(ConfigError, match="cannot read"):
        ServerSettings(api_key_file=str(tmp_path / "missing")).api_keys()
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no key"):
        ServerSettings(api_key_file=str(tmp_path / "empty")).api_keys()


def test_a_v2_model_name_may_hold_a_slash(minilm_dir: Path) -> None:
    with fake_server(minilm_dir, "fake_factory", model_name="org/mini") as srv:
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
        for path in ("/v2/models/org/mini/infer", "/v2/models/org/mini/versions/1/infer"):
            answer = httpx.post(f"{srv.url}{path}", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_name"] == "org/mini"
        assert httpx.get(f"{srv.url}/v2/models/org/mini").json()["name"] == "org/mini"
        assert httpx.get(f"{srv.url}/v2/models/org/mini/ready").json() == {"name": "org/mini", "ready": True}
        assert httpx.get(f"{srv.url}/v2/models/org/mini/versions/1/ready").status_code == 200
        assert httpx.get(f"{srv.url}/v2/models/org/other").status_code == 404
        assert httpx.post(f"{srv.url}/v2/models/org/mini/versions/2/infer", json=body).status_code == 404
