"""Pair models on the real server: TEI's ``/rerank`` and ``/predict``, Cohere's ``/v2/rerank`` (the
official ``cohere`` client), KServe v2 with two inputs (``tritonclient``) and the simple API,
against the unmodified Hugging Face cross-encoder on real (headline, sentence) pairs.

The reranker is served behind an API key, so every route is also checked with one; refusals
come in each API's own error shape, with the request's ID.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_server import ServerProcess, assert_documented, fake_server

pytestmark = pytest.mark.slow
NAME = "ranker"
KEY = "rerank-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_DOCS = 32
TOL = 1e-4


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def hf_logits(folder: Path, texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """The Hugging Face model's logits (N, C) for the pairs (with its tokenizer's token_type_ids),
    or for the texts alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    enc = AutoTokenizer.from_pretrained(str(folder))(texts, pairs, padding=True, truncation="longest_first",
                                                      return_tensors="pt")
    assert "token_type_ids" in enc
    with torch.no_grad():
        return model(**enc).logits.numpy()


@pytest.fixture(scope="module", params=["onnxruntime", "torch"])
def server(request: pytest.FixtureRequest, rerank_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(rerank_dir, "--model-name", NAME, "--backend", request.param, "--workers", "1",
                        "--threads", "1", "--max-texts-per-request", str(MAX_DOCS), "--api-key", KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def corpus(query_pairs: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
    queries, passages = query_pairs
    return queries[:3], passages


@pytest.fixture(scope="module")
def reference(rerank_dir: Path, corpus: tuple[list[str], list[str]]) -> np.ndarray:
    """(queries, passages) logits of every query against every passage."""
    queries, passages = corpus
    flat = hf_logits(rerank_dir, [q for q in queries for _ in passages], passages * len(queries))
    return flat[:, 0].reshape(len(queries), len(passages))


def post(server: ServerProcess, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={**AUTH, **headers}, timeout=60)


def test_tei_rerank_ranks_every_text_with_the_models_scores(server: ServerProcess, corpus,
                                                             reference: np.ndarray) -> None:
    queries, passages = corpus
    assert reference.std() > 0.1  # scores that spread: a ranking to get right
    for q, query in enumerate(queries):
        for raw in (False, True):
            answer = post(server, "/rerank", {"query": query, "texts": passages, "raw_scores": raw})
            assert answer.status_code == 200, answer.text
            ranks = answer.json()
            assert sorted(r["index"] for r in ranks) == list(range(len(passages)))
            assert all("text" not in r for r in ranks)
            scores = np.array([r["score"] for r in ranks])
            assert (np.diff(scores) <= 0).all()  # best first
            want = reference[q] if raw else sigmoid(reference[q])
            # the scores are the model's at their indices, best first: so the order is the model's too
            np.testing.assert_allclose(scores, want[[r["index"] for r in ranks]], atol=TOL)
        assert answer.headers["x-bertserve-students"] == "1"
    with_text = post(server, "/rerank", {"query": queries[0], "texts": passages[:5], "return_text": True,
                                         "truncate": True, "truncation_direction": "Right"}).json()
    assert [r["text"] for r in with_text] == [passages[r["index"]] for r in with_text]
    assert_documented(server.url, "/rerank", "post", post(server, "/rerank", {"query": "q", "texts": ["d"]}))


def test_tei_predict_takes_a_pair_or_a_batch_of_pairs(server: ServerProcess, corpus,
                                                      reference: np.ndarray) -> None:
    queries, passages = corpus
    one = post(server, "/predict", {"inputs": [queries[1], passages[4]]})
    assert one.status_code == 200, one.text
    assert one.json()[0]["label"] == "LABEL_0" and len(one.json()) == 1
    assert one.json()[0]["score"] == pytest.approx(sigmoid(reference[1, 4]), abs=TOL)
    batch = post(server, "/predict", {"inputs": [[queries[0], p] for p in passages[:6]], "raw_scores": True})
    assert batch.status_code == 200, batch.text
    np.testing.assert_allclose([p[0]["score"] for p in batch.json()], reference[0, :6], atol=TOL)
    assert_documented(server.url, "/predict", "post", batch)


def test_the_cohere_client_works_unchanged(server: ServerProcess, corpus, reference: np.ndarray) -> None:
    import cohere

    queries, passages = corpus
    client = cohere.ClientV2(api_key=KEY, base_url=server.url, timeout=60, max_retries=0)
    full = client.rerank(model=NAME, query=queries[2], documents=passages)
    assert sorted(r.index for r in full.results) == list(range(len(passages)))
    want = sigmoid(reference[2])
    assert (np.diff([r.relevance_score for r in full.results]) <= 0).all()
    np.testing.assert_allclose([r.relevance_score for r in full.results],
                               want[[r.index for r in full.results]], atol=TOL)
    assert full.meta.billed_units.search_units == 1 and full.meta.tokens.input_tokens > len(passages)
    top = client.rerank(model=NAME, query=queries[2], documents=passages, top_n=5, max_tokens_per_doc=4096)
    assert [r.index for r in top.results] == [r.index for r in full.results[:5]]
    assert top.meta.warnings and "max_tokens_per_doc" in top.meta.warnings[0]
    assert len(client.rerank(model=NAME, query="q", documents=["a", "b"], top_n=10).results) == 2
    answer = post(server, "/v2/rerank", {"model": NAME, "query": "q", "documents": ["d"]},
                  **{"x-request-id": "cohere-call-1"})
    assert answer.json()["id"] == "cohere-call-1" == answer.headers["x-request-id"]
    assert_documented(server.url, "/v2/rerank", "post", answer)
    with pytest.raises(cohere.NotFoundError) as gone:
        client.rerank(model="another", query="q", documents=["d"])
    assert "not served here" in gone.value.body["message"]
    with pytest.raises(cohere.UnprocessableEntityError) as empty:
        client.rerank(model=NAME, query="q", documents=[])
    assert "empty" in empty.value.body["message"]
    with pytest.raises(cohere.UnauthorizedError):
        wrong = cohere.ClientV2(api_key="wrong", base_url=server.url, max_retries=0)
        wrong.rerank(model=NAME, query="q", documents=["d"])


def test_triton_client_with_two_inputs(server: ServerProcess, corpus, reference: np.ndarray) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    queries, passages = corpus
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_model_ready(NAME, headers=dict(AUTH))
    meta = client.get_model_metadata(NAME, headers=dict(AUTH))
    assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]
    assert [o["name"] for o in meta["outputs"]] == ["score", "logit"]
    n = len(passages)
    for binary in (True, False):
        text = triton.InferInput("text", [n], "BYTES")
        text.set_data_from_numpy(np.array([queries[0].encode()] * n, dtype=object), binary_data=binary)
        pair = triton.InferInput("text_pair", [n], "BYTES")
        pair.set_data_from_numpy(np.array([p.encode() for p in passages], dtype=object), binary_data=binary)
        outputs = [triton.InferRequestedOutput(o, binary_data=binary) for o in ("score", "logit")]
        # a copy: tritonclient writes its Inference-Header-Content-Length into the dict it gets
        result = client.infer(NAME, [pair, text], outputs=outputs, headers=dict(AUTH))  # any order
        logit, score = result.as_numpy("logit"), result.as_numpy("score")
        assert logit.shape == score.shape == (n,) and logit.dtype == np.float32
        np.testing.assert_allclose(logit, reference[0], atol=TOL)
        np.testing.assert_allclose(score, sigmoid(reference[0]), atol=TOL)
    with pytest.raises(InferenceServerException, match="'text_pair' is missing") as missing:
        client.infer(NAME, [text], headers=dict(AUTH))
    assert missing.value.status() == "400"
    short = triton.InferInput("text_pair", [n - 1], "BYTES")
    short.set_data_from_numpy(np.array([p.encode() for p in passages[1:]], dtype=object))
    with pytest.raises(InferenceServerException, match="same shape") as mismatched:
        client.infer(NAME, [text, short], headers=dict(AUTH))
    assert mismatched.value.status() == "400"


def v2_body(texts: list, pairs: list | None, shape2: list[int] | None = None) -> dict:
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]
    if pairs is not None:
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": shape2 or [len(pairs)],
                       "data": pairs})
    return {"inputs": inputs}


REFUSED = [  # (path in the document, url, body, status, a fragment of the message)
    ("/rerank", "/rerank", {"texts": ["d"]}, 422, '"query"'),
    ("/rerank", "/rerank", {"query": "q", "texts": []}, 422, "empty"),
    ("/rerank", "/rerank", {"query": "q"}, 422, '"texts"'),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a", 3]}, 422, "not a string"),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a"] * (MAX_DOCS + 1)}, 422, f"limit is {MAX_DOCS}"),
    ("/rerank", "/rerank", {"query": " ", "texts": ["a"]}, 422, "empty"),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a", "  "]}, 422, "empty"),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 422, "raw_scores"),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Left"}, 422, "only right"),
    ("/rerank", "/rerank", {"query": "q", "texts": ["a"], "slo_ms": 0}, 422, "slo_ms"),
    ("/rerank", "/rerank", b"{not json", 400, "JSON"),
    ("/predict", "/predict", {"inputs": "one text"}, 422, "reads text pairs"),
    ("/predict", "/predict", {"inputs": ["a", "b", "c"]}, 422, "3 elements"),
    ("/predict", "/predict", {"inputs": [["a", "b"], ["c"]]}, 422, "inputs[1] is one text"),
    ("/predict", "/predict", {"inputs": []}, 422, "non-empty"),
    ("/predict", "/predict", {}, 422, '"inputs"'),
    ("/v2/rerank", "/v2/rerank", {"query": "q", "documents": ["d"]}, 422, '"model"'),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": []}, 422, "empty"),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": [{"text": "d"}]}, 422,
     "not a string"),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "documents": ["d"]}, 422, '"query"'),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": ["d"], "top_n": 0}, 422, "top_n"),
    ("/v2/rerank", "/v2/rerank", {"model": "M", "query": "q", "documents": ["d"] * (MAX_DOCS + 1)}, 422,
     f"limit is {MAX_DOCS}"),
    ("/v2/models/{name}/infer", "/v2/models/M/infer", v2_body(["q"], None), 400, "'text_pair' is missing"),
    ("/v2/models/{name}/infer", "/v2/models/M/infer", v2_body(["q", "q"], ["a", "b"], [2, 1]), 400,
     "same shape"),
    ("/v2/models/{name}/infer", "/v2/models/M/infer", v2_body(["q", "q"], ["a"], [1]), 400, "same shape"),
    ("/v2/models/{name}/infer", "/v2/models/M/infer", v2_body(["q"], [7]), 422, "not a string"),
]


def error_message(path: str, body: dict) -> str:
    """The message of an error body, in the shape of the API that ``path`` belongs to."""
    if path in ("/rerank", "/predict"):
        assert set(body) == {"error", "error_type", "request_id"} and body["error_type"] == "validation"
        return body["error"]
    if path == "/v2/rerank":
        assert set(body) == {"id", "message"}
        return body["message"]
    if path.startswith("/v2/"):
        assert set(body) == {"error", "request_id"}
        return body["error"]
    assert set(body) == {"error"} and {"type", "message"} <= set(body["error"])
    return body["error"]["message"]


@pytest.mark.parametrize(("doc_path", "url", "body", "status", "fragment"), REFUSED,
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(REFUSED)])
def test_bad_inputs_are_refused_in_each_apis_shape(server: ServerProcess, doc_path: str, url: str, body,
                                                   status: int, fragment: str) -> None:
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": NAME}
    url = url.replace("/M/", f"/{NAME}/")
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    answer = httpx.post(f"{server.url}{url}", headers={**AUTH, "x-request-id": "bad-1"}, timeout=60, **kwargs)
    assert answer.status_code == status, answer.text
    assert fragment in error_message(url, answer.json())
    assert answer.headers["x-request-id"] == "bad-1"
    assert_documented(server.url, doc_path, "post", answer)


@pytest.mark.parametrize(("path", "body"), [
    ("/embed", {"texts": ["a"]}), ("/v1/embeddings", {"input": "a", "model": NAME}),
    ("/classify", {"texts": ["a"], "text_pairs": ["b"]})])
def test_a_reranker_refuses_the_single_text_routes(server: ServerProcess, path: str, body: dict) -> None:
    answer = post(server, path, body)
    assert answer.status_code == 422
    assert "reranker" in json.dumps(answer.json()) and "/rerank" in json.dumps(answer.json())
    assert path not in httpx.get(f"{server.url}/openapi.json").json()["paths"]


def test_keys_metrics_and_the_document(server: ServerProcess) -> None:
    tei = {"error", "error_type", "request_id"}
    for path, shape in (("/rerank", tei), ("/predict", tei), ("/v2/rerank", {"id", "message"})):
        refused = httpx.post(f"{server.url}{path}", json={"query": "q", "texts": ["d"]})
        assert refused.status_code == 401 and set(refused.json()) == shape
    text = httpx.get(f"{server.url}/metrics").text
    assert 'bertserve_requests_total{api="tei",status="200"}' in text
    assert 'bertserve_requests_total{api="cohere",status="200"}' in text
    doc = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/rerank", "/predict", "/v2/rerank"):
        op = doc["paths"][path]["post"]
        assert op["security"] and "401" in op["responses"]
    assert httpx.get(f"{server.url}/v2/rerank", headers=dict(AUTH)).status_code == 405


# -- a single-text model refuses the pair routes ----------------------------------------------
@pytest.fixture(scope="module")
def embedder(minilm_dir: Path) -> Iterator[str]:
    with fake_server(minilm_dir, "fake_factory", env={"BERTSERVE_FAKE_STUDENTS": "1"}) as srv:
        yield srv.url


@pytest.mark.parametrize(("path", "body", "shape"), [
    ("/rerank", {"query": "q", "texts": ["d"]}, "tei"),
    ("/predict", {"inputs": ["a", "b"]}, "tei"),
    ("/v2/rerank", {"model": "MODEL", "query": "q", "documents": ["d"]}, "cohere"),
    ("/embed", {"texts": ["a"], "text_pairs": ["b"]}, "simple"),
])
def test_an_embedder_refuses_pairs(embedder: str, path: str, body: dict, shape: str) -> None:
    name = httpx.get(f"{embedder}/v1/models").json()["data"][0]["id"]
    if body.get("model") == "MODEL":
        body = {**body, "model": name}
    answer = httpx.post(f"{embedder}{path}", json=body, timeout=30)
    assert answer.status_code == 422, answer.text
    message = error_message(path, answer.json())
    assert ("embedder" in message and "/embed" in message) if shape != "simple" else "pairs" in message
    paths = httpx.get(f"{embedder}/openapi.json").json()["paths"]
    assert not {"/rerank", "/predict", "/v2/rerank", "/classify"} & set(paths)
    v2 = httpx.post(f"{embedder}/v2/models/{name}/infer", json=v2_body(["q"], ["d"]), timeout=30)
    assert v2.status_code == 422 and "unknown input 'text_pair'" in v2.json()["error"]


# -- a pair classifier: /classify with text_pairs, /predict, v2 ---------------------------------
LABELS = ["contradiction", "entailment", "neutral"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory, rerank_dir: Path) -> Path:
    """An NLI-shaped Hugging Face checkpoint: the bundled MiniLM with a seeded three-label head
    (a plain HF classifier: served as one of single texts)."""
    from checkpoints import seeded_head_checkpoint

    return seeded_head_checkpoint(rerank_dir, tmp_path_factory.mktemp("classifier") / "minilm-nli", seed=1,
                                  num_labels=3, id2label=dict(enumerate(LABELS)),
                                  label2id={lab: i for i, lab in enumerate(LABELS)},
                                  ignore_mismatched_sizes=True)


@pytest.fixture(scope="module")
def pair_classifier_dir(tmp_path_factory: pytest.TempPathFactory, classifier_dir: Path) -> Path:
    """The same checkpoint with a manifest that says it reads pairs."""
    import shutil

    from bertserve.artifact import infer_manifest, save_manifest

    out = tmp_path_factory.mktemp("pair-classifier") / "minilm-nli-pairs"
    shutil.copytree(classifier_dir, out)
    manifest = infer_manifest(out)
    assert manifest.task == "classify" and manifest.labels == LABELS and not manifest.pairs
    save_manifest(out, manifest.model_copy(update={"pairs": True}))
    return out


@pytest.fixture(scope="module")
def pair_server(pair_classifier_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(pair_classifier_dir, "--model-name", "nli", "--backend", "onnxruntime",
                        "--workers", "1", "--threads", "1")
    yield srv
    srv.stop()


def test_a_pair_classifier_on_three_apis(pair_server: ServerProcess, pair_classifier_dir: Path,
                                         corpus) -> None:
    import tritonclient.http as triton

    queries, passages = corpus
    texts, pairs = [queries[0]] * 4 + [queries[1]] * 4, passages[:8]
    logits = hf_logits(pair_classifier_dir, texts, pairs)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    url = pair_server.url
    simple = httpx.post(f"{url}/classify", json={"texts": texts, "text_pairs": pairs}, timeout=60)
    assert simple.status_code == 200, simple.text
    results = simple.json()["results"]
    assert [r["label"] for r in results] == [LABELS[i] for i in probs.argmax(1)]
    got = [[r["probabilities"][lab] for lab in LABELS] for r in results]
    np.testing.assert_allclose(got, probs, atol=TOL)
    assert_documented(url, "/classify", "post", simple)
    alone = httpx.post(f"{url}/classify", json={"texts": texts}, timeout=60)
    assert alone.status_code == 422 and "text_pairs" in alone.json()["error"]["message"]
    assert_documented(url, "/classify", "post", alone)
    batch = [list(p) for p in zip(texts, pairs, strict=True)]
    predicted = httpx.post(f"{url}/predict", json={"inputs": batch}, timeout=60)
    assert predicted.status_code == 200, predicted.text
    for row, want in zip(predicted.json(), probs, strict=True):
        assert [p["label"] for p in row] == [LABELS[i] for i in np.argsort(-want, kind="stable")]
        np.testing.assert_allclose([p["score"] for p in row], np.sort(want)[::-1], atol=TOL)
    raw = httpx.post(f"{url}/predict", json={"inputs": [texts[0], pairs[0]], "raw_scores": True}).json()
    np.testing.assert_allclose(sorted((p["score"] for p in raw), reverse=True), np.sort(logits[0])[::-1],
                               atol=TOL)
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    a, b = triton.InferInput("text", [8], "BYTES"), triton.InferInput("text_pair", [8], "BYTES")
    a.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    b.set_data_from_numpy(np.array([p.encode() for p in pairs], dtype=object))
    result = client.infer("nli", [a, b])
    np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=TOL)
    assert [x.decode() for x in result.as_numpy("label")] == [LABELS[i] for i in probs.argmax(1)]
    for path in ("/rerank", "/v2/rerank"):
        refused = httpx.post(f"{url}{path}", json={"model": "nli", "query": "q", "texts": ["d"],
                                                   "documents": ["d"]})
        assert refused.status_code == 422 and "needs a reranker" in json.dumps(refused.json())


def test_a_single_text_classifier_on_predict(classifier_dir: Path, corpus) -> None:
    texts = corpus[1][:3]
    logits = hf_logits(classifier_dir, texts, None)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    srv = ServerProcess(classifier_dir, "--model-name", "cls", "--backend", "onnxruntime",
                        "--workers", "1", "--threads", "1")
    try:
        url = srv.url
        for inputs in (texts[0], [texts[0]]):
            one = httpx.post(f"{url}/predict", json={"inputs": inputs}, timeout=60)
            assert one.status_code == 200, one.text
            best_first = np.argsort(-probs[0], kind="stable")
            assert [p["label"] for p in one.json()] == [LABELS[i] for i in best_first]
            np.testing.assert_allclose([p["score"] for p in one.json()], np.sort(probs[0])[::-1], atol=TOL)
        batch = httpx.post(f"{url}/predict", json={"inputs": [[t] for t in texts]}, timeout=60).json()
        assert [row[0]["label"] for row in batch] == [LABELS[i] for i in probs.argmax(1)]
        assert_documented(url, "/predict", "post", httpx.post(f"{url}/predict", json={"inputs": "a"}))
        pair = httpx.post(f"{url}/predict", json={"inputs": ["a", "b"]}, timeout=60)
        assert pair.status_code == 422 and "reads single texts" in pair.json()["error"]
        assert_documented(url, "/predict", "post", pair)
        assert httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["d"]}).status_code == 422
        paths = httpx.get(f"{url}/openapi.json").json()["paths"]
        assert "/predict" in paths and "/classify" in paths and "/rerank" not in paths
    finally:
        srv.stop()
