"""The URL a bench target sends to, for each form of URL a user may give (issue 23: a KServe URL
that names a model but does not end in /infer)."""

from __future__ import annotations

import pytest

from bertserve.bench.discovery import base_url, model_in_url
from bertserve.bench.targets import kserve_url, make_target


@pytest.mark.parametrize(("given", "expected"), [
    # a URL that names its model keeps it, whatever --model-name says, and gets /infer
    ("http://host:8000/v2/models/minilm", "http://host:8000/v2/models/minilm/infer"),
    ("http://host:8000/v2/models/minilm/", "http://host:8000/v2/models/minilm/infer"),
    ("http://host:8000/v2/models/minilm/infer", "http://host:8000/v2/models/minilm/infer"),
    ("http://host:8000/v2/models/minilm/infer/", "http://host:8000/v2/models/minilm/infer"),
    ("http://host:8000/v2/models/minilm/versions/1", "http://host:8000/v2/models/minilm/versions/1/infer"),
    ("http://host:8000/v2/models/minilm/versions/1/infer",
     "http://host:8000/v2/models/minilm/versions/1/infer"),
    ("http://host:8000/prefix/v2/models/minilm", "http://host:8000/prefix/v2/models/minilm/infer"),
    # a base URL (with or without the API's root) gets the model passed in
    ("http://host:8000", "http://host:8000/v2/models/given/infer"),
    ("http://host:8000/", "http://host:8000/v2/models/given/infer"),
    ("http://host:8000/v2", "http://host:8000/v2/models/given/infer"),
    ("http://host:8000/v2/models/", "http://host:8000/v2/models/given/infer"),
    ("http://host:8000/prefix", "http://host:8000/prefix/v2/models/given/infer"),
])
def test_kserve_target_urls(given: str, expected: str) -> None:
    assert kserve_url(given, "given") == expected
    assert make_target("kserve", given, model="given").url == expected


@pytest.mark.parametrize(("given", "name"), [
    ("http://host:8000/v2/models/minilm", "minilm"),
    ("http://host:8000/v2/models/minilm/versions/1", "minilm"),
    ("http://host:8000/v2/models/minilm/versions/1/infer", "minilm"),
    ("http://host:8000/v2/models/minilm/infer", "minilm"),
    ("http://host:8000/v2", None),
    ("http://host:8000/v2/models", None),
    ("http://host:8000", None),
])
def test_the_model_a_kserve_url_names_is_found_without_asking(given: str, name: str | None) -> None:
    assert model_in_url("kserve", given) == name
    assert base_url("kserve", given) == "http://host:8000"  # where discovery would ask otherwise


def test_the_other_apis_still_add_their_path_once() -> None:
    assert make_target("simple", "http://h:1").url == "http://h:1/embed"
    assert make_target("simple", "http://h:1/embed/").url == "http://h:1/embed"
    assert make_target("openai", "http://h:1/v1/embeddings", model="m").url == "http://h:1/v1/embeddings"
    assert make_target("openai", "http://h:1/", model="m").url == "http://h:1/v1/embeddings"
