"""Each API adapter builds the body that API expects and reads its embeddings back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertserve.bench.targets import dig, make_target
from bertserve.errors import ConfigError


def test_simple_api() -> None:
    t = make_target("simple", "http://h:1/")
    assert t.url == "http://h:1/embed"
    assert json.loads(t.body(["a", "é"])) == {"texts": ["a", "é"]}
    emb = t.embeddings(b'{"model":"m","dim":2,"embeddings":[[1,0],[0,1]]}')
    np.testing.assert_array_equal(emb, [[1, 0], [0, 1]])
    assert make_target("simple", "http://h:1/embed").url == "http://h:1/embed"


def test_openai_api() -> None:
    t = make_target("openai", "http://h:1", model="mini")
    assert t.url == "http://h:1/v1/embeddings"
    assert json.loads(t.body(["a"])) == {"model": "mini", "input": ["a"]}
    answer = {"data": [{"index": 1, "embedding": [0, 1]}, {"index": 0, "embedding": [1, 0]}]}
    np.testing.assert_array_equal(t.embeddings(json.dumps(answer).encode()), [[1, 0], [0, 1]])


def test_kserve_v2_api() -> None:
    t = make_target("kserve", "http://h:1", model="mini")
    assert t.url == "http://h:1/v2/models/mini/infer"
    body = json.loads(t.body(["a", "b"]))
    assert body == {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    column = make_target("kserve", "http://h:1", model="mini", column=True)
    assert json.loads(column.body(["a", "b"]))["inputs"][0]["shape"] == [2, 1]
    answer = {"outputs": [{"name": "embedding", "shape": [2, 2], "datatype": "FP32", "data": [1, 0, 0, 1]}]}
    np.testing.assert_array_equal(t.embeddings(json.dumps(answer).encode()), [[1, 0], [0, 1]])


def test_template_api() -> None:
    t = make_target("template", "http://h:1/predictions/m", template='{"instances": {texts}}',
                    response_path="predictions.0")
    assert json.loads(t.body(["x"])) == {"instances": ["x"]}
    np.testing.assert_array_equal(t.embeddings(b'{"predictions": [[3, 4]]}'), [[3, 4]])
    one = make_target("template", "http://h:1/p", template='{"text": {text}}')
    assert json.loads(one.body(['say "hi"'])) == {"text": 'say "hi"'}
    assert dig({"a": [{"b": 5}]}, "a.0.b") == 5


@pytest.mark.parametrize("kwargs", [dict(api="nope", url="http://h"), dict(api="simple", url="h:1"),
                                    dict(api="template", url="http://h"),
                                    dict(api="template", url="http://h", template="{}")])
def test_bad_targets_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        make_target(**kwargs)
