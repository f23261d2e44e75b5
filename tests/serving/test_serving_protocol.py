"""Wire formats and the status table, without a server."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertserve.errors import (
    ArtifactError,
    BackendError,
    BodyTooLargeError,
    ConfigError,
    InputError,
    MalformedBodyError,
    OverloadedError,
    RequestTooLargeError,
    TextTooLongError,
    UnavailableError,
    UnknownModelError,
)
from bertserve.serving.http.api_v2 import decode_bytes_tensor, encode_bytes_tensor, parse_request
from bertserve.serving.http.status import error_response, status_of


def test_bytes_tensor_round_trip() -> None:
    texts = ["hello", "", "héllo wörld", "x" * 300]
    blob = encode_bytes_tensor(texts)
    assert [b.decode() for b in decode_bytes_tensor(blob, 4)] == texts
    with pytest.raises(MalformedBodyError):
        decode_bytes_tensor(blob[:-1], 4)
    with pytest.raises(InputError):
        decode_bytes_tensor(blob, 3)


def test_binary_request_is_parsed_like_tritonclient_sends_it() -> None:
    blob = encode_bytes_tensor(["a b", "c"])
    head = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    req, texts = parse_request(head + blob, str(len(head)))
    assert texts == ["a b", "c"] and "inputs" in req


@pytest.mark.parametrize(("body", "fragment"), [
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "txt", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "unknown input"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "datatype BYTES"),
    ({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a"]}]}, "shape says 2"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [3]}]}, "not a string"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["a"]}]}, "needs a shape"),
])
def test_bad_v2_requests_name_the_problem(body: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        parse_request(json.dumps(body).encode(), None)


def test_invalid_utf8_in_a_binary_tensor_is_refused() -> None:
    blob = b"\x02\x00\x00\x00\xff\xfe"
    head = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    with pytest.raises(InputError, match="UTF-8"):
        parse_request(head + blob, str(len(head)))


def test_each_error_class_carries_its_status_and_three_body_shapes() -> None:
    assert [status_of(e) for e in (MalformedBodyError("x"), InputError("x"), TextTooLongError("x"),
                                   BodyTooLargeError("x"), RequestTooLargeError("x"), UnknownModelError("x"),
                                   OverloadedError("x"), UnavailableError("x"), BackendError("x"),
                                   ConfigError("x"), ArtifactError("x"))] == [
        400, 422, 413, 413, 413, 404, 429, 503, 500, 400, 500]
    busy = OverloadedError("busy", retry_after_s=2.2)
    oai = error_response(busy, "/v1/embeddings")
    assert oai.status_code == 429 and oai.headers["retry-after"] == "3"
    assert json.loads(oai.body)["error"] == {"message": "busy", "type": "rate_limit_error", "param": None,
                                             "code": "overloaded"}
    gone = json.loads(error_response(UnknownModelError("x"), "/v1/embeddings").body)["error"]
    assert (gone["type"], gone["code"]) == ("invalid_request_error", "model_not_found")
    assert json.loads(error_response(busy, "/v2/models/m/infer").body) == {"error": "busy"}
    assert json.loads(error_response(busy, "/embed").body)["error"]["type"] == "overloaded"
    assert np.isfinite(float(oai.headers["retry-after-ms"]))
