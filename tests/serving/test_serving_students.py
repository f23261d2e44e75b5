"""A student ensemble through the real engine: a fake 4-student backend in real worker processes.

The fake (serving_fakes.FakeBackend) honours Batch.students, so the answer tells how many
students ran; the engine reports the count in every response and in /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving_server import ThreadServer, fake_server

from bertserve.tokenizer import TextTokenizer

pytestmark = pytest.mark.slow
STUDENTS = 4


@pytest.fixture(scope="module")
def server(minilm_dir: Path) -> Iterator[ThreadServer]:
    with fake_server(minilm_dir, "fake_factory", {"BERTSERVE_FAKE_STUDENTS": str(STUDENTS)}) as srv:
        yield srv


def expected(minilm_dir: Path, text: str, students: int) -> float:
    ids = TextTokenizer(minilm_dir, 256).encode([text]).ids[0]
    return float(np.mean(ids)) * sum(range(1, students + 1)) / 1000.0


def test_idle_server_runs_every_student_and_says_so(server: ThreadServer, minilm_dir: Path) -> None:
    body = httpx.post(f"{server.url}/embed", json={"texts": ["a quiet moment"]}).json()
    assert body["students"] == STUDENTS
    assert body["embeddings"][0][0] == pytest.approx(expected(minilm_dir, "a quiet moment", STUDENTS),
                                                     rel=1e-6)
    v2 = httpx.post(f"{server.url}/v2/models/{body['model']}/infer", json={"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a quiet moment"]}]}).json()
    assert v2["parameters"]["students"] == STUDENTS
    oai = httpx.post(f"{server.url}/v1/embeddings", json={"model": body["model"], "input": "hi"})
    assert oai.headers["x-bertserve-students"] == str(STUDENTS)
    text = httpx.get(f"{server.url}/metrics").text
    assert f"bertserve_active_students {STUDENTS}.0" in text
    assert f"bertserve_max_students {STUDENTS}.0" in text
    assert f'bertserve_texts_by_students_total{{students="{STUDENTS}"}}' in text


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Iterator[ThreadServer]:
    """A classify artifact whose 'model' is the fake (8 logits), with the real tokenizer."""
    import json

    from bertserve.artifact import copy_tokenizer, load_manifest

    folder = tmp_path_factory.mktemp("fake-classifier")
    labels = [f"label{i}" for i in range(8)]
    tokenizer = copy_tokenizer(*load_manifest(minilm_dir), folder)  # inside: artifacts are self-contained
    (folder / "bertserve.json").write_text(json.dumps({
        "name": "fake-cls", "task": "classify", "labels": labels, "architecture": "fake",
        "tokenizer": tokenizer, "max_seq_length": 256, "backend": "torch"}))
    with fake_server(folder, "fake_factory", {"BERTSERVE_FAKE_STUDENTS": "1"}) as srv:
        yield srv


def test_classify_and_v2_classifier_outputs(classifier: ThreadServer) -> None:
    body = httpx.post(f"{classifier.url}/classify", json={"texts": ["good", "bad film"]}).json()
    assert body["model"] == "fake-cls" and len(body["results"]) == 2
    first = body["results"][0]
    assert set(first) >= {"label", "score", "probabilities"}
    assert first["label"] in first["probabilities"]
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, rel=1e-5)
    v2 = httpx.post(f"{classifier.url}/v2/models/fake-cls/infer", json={"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["good", "bad film"]}]}).json()
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert set(outputs) == {"logits", "probabilities", "label"}
    assert outputs["logits"]["shape"] == [2, 8] and outputs["label"]["data"][0] == first["label"]
    refused = httpx.post(f"{classifier.url}/embed", json={"texts": ["x"]})
    assert refused.status_code == 422 and "/classify" in refused.json()["error"]["message"]
