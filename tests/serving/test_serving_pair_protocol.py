"""The pair APIs' wire formats without a server: TEI's predict inputs, v2's two tensors, the TEI
and Cohere error shapes, sigmoid and the ranking."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertserve.errors import (
    InputError,
    MalformedBodyError,
    OverloadedError,
    TextTooLongError,
    UnavailableError,
)
from bertserve.postprocess import sigmoid
from bertserve.serving.http.api_tei import sequences
from bertserve.serving.http.api_v2 import encode_bytes_tensor, parse_pairs
from bertserve.serving.http.ranking import ranking
from bertserve.serving.http.status import error_response


@pytest.mark.parametrize(("inputs", "seqs", "batch"), [
    ("a", [["a"]], False),
    (["a"], [["a"]], False),
    (["a", "b"], [["a", "b"]], False),
    ([["a", "b"], ["c"]], [["a", "b"], ["c"]], True),
])
def test_tei_predict_inputs(inputs, seqs: list, batch: bool) -> None:
    assert sequences(inputs) == (seqs, batch)


@pytest.mark.parametrize(("inputs", "fragment"), [
    ([], "non-empty"), (3, "non-empty"), (["a", "b", "c"], "3 elements"), (["a", ["b"]], "mixes"),
    ([["a", "b", "c"]], "inputs[0] has 3"), ([["a", 1]], "inputs[0][1] is a int"), ([[]], "0 elements"),
])
def test_bad_tei_predict_inputs_name_the_problem(inputs, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        sequences(inputs)


def tensor(name: str, data: list[str], binary: bool = False) -> tuple[dict, bytes]:
    spec: dict = {"name": name, "datatype": "BYTES", "shape": [len(data)]}
    if not binary:
        return {**spec, "data": data}, b""
    blob = encode_bytes_tensor(data)
    return {**spec, "parameters": {"binary_data_size": len(blob)}}, blob


def test_two_v2_inputs_in_either_order_json_or_binary() -> None:
    a, blob_a = tensor("text", ["q", "q"], binary=True)
    b, _ = tensor("text_pair", ["d1", "d2"])
    head = json.dumps({"inputs": [b, a]}).encode()
    _, texts, pairs = parse_pairs(head + blob_a, str(len(head)))
    assert (texts, pairs) == (["q", "q"], ["d1", "d2"])


@pytest.mark.parametrize(("inputs", "error", "fragment"), [
    ([tensor("text", ["q"])[0]], MalformedBodyError, "'text_pair' is missing"),
    ([tensor("text_pair", ["d"])[0]], MalformedBodyError, "'text' is missing"),
    ([tensor("text", ["q", "q"])[0], tensor("text_pair", ["d"])[0]], MalformedBodyError, "same shape"),
    ([tensor("text", ["q"])[0], tensor("text", ["q"])[0]], MalformedBodyError, "given twice"),
    ([tensor("text", ["q"])[0], tensor("other", ["d"])[0]], InputError, "unknown input 'other'"),
    ([tensor("text", ["q"])[0], {**tensor("text_pair", ["d"])[0], "data": [1]}], InputError, "not a string"),
])
def test_bad_pair_requests_name_the_problem(inputs: list, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        parse_pairs(json.dumps({"inputs": inputs}).encode(), None)


def test_tei_and_cohere_error_shapes() -> None:
    tei = error_response(InputError("bad"), "/rerank", request_id="r1")
    assert tei.status_code == 422
    assert json.loads(tei.body) == {"error": "bad", "error_type": "validation", "request_id": "r1"}
    types = [json.loads(error_response(e, "/predict").body)["error_type"]
             for e in (TextTooLongError("x"), OverloadedError("x"), UnavailableError("x"))]
    assert types == ["tokenizer", "overloaded", "unhealthy"]
    busy = error_response(OverloadedError("busy", retry_after_s=2.0), "/v2/rerank", request_id="r2")
    assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
    assert json.loads(busy.body) == {"id": "r2", "message": "busy"}
    assert json.loads(error_response(InputError("x"), "/v2/models/m/infer").body) == {"error": "x"}


def test_sigmoid_is_stable_and_the_ranking_keeps_ties_in_order() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the answer
        s = sigmoid(x)
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-1)), 1.0], atol=1e-7)
    assert s.dtype == np.float32
    assert ranking(np.array([0.1, 0.5, 0.1, 0.9])) == [3, 1, 0, 2]
