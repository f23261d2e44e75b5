"""Texts over ``--max-chars-per-text``: cut to the cap before tokenising (and counted as truncated)
when truncation is on, the default; refused with 422 when it is off (``truncate: false`` or
``--no-truncate``). Through a real server on loopback, plus the engine's own check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_server import ServerProcess

from bertserve.config import ServerSettings
from bertserve.errors import InputError
from bertserve.serving.core.engine import Engine

NAME = "minilm"
LONG = "word " * 6000  # 30,000 characters: over the default cap of 20,000 and the model's 256 tokens
MODEL_LIMIT = 256


def test_the_engine_cuts_an_over_long_text_to_the_cap_only_when_truncating(minilm_dir: Path) -> None:
    engine = Engine(ServerSettings(model=str(minilm_dir), max_chars_per_text=10))
    texts, cut = engine.validate(["0123456789abc", "short", "0123456789"], truncate=True)
    assert texts == ["0123456789", "short", "0123456789"] and cut == [True, False, False]
    same = ["short", "0123456789"]
    texts, cut = engine.validate(same, truncate=True)
    assert texts is same and cut == [False, False]  # nothing cut: the caller's list, no copy
    with pytest.raises(InputError, match="text 1 has 13 characters; the limit is 10"):
        engine.validate(["short", "0123456789abc"], truncate=False)
    with pytest.raises(InputError, match="text 0 is empty"):  # the other checks still apply
        engine.validate([" " * 20], truncate=True)


@pytest.mark.slow
class TestTruncatingServer:
    @pytest.fixture(scope="class")
    def server(self, minilm_dir: Path) -> Iterator[ServerProcess]:
        srv = ServerProcess(minilm_dir, "--model-name", NAME, "--workers", "1", "--threads", "1")
        yield srv
        srv.stop()

    def test_embed_answers_a_30000_character_text_and_counts_it_truncated_once(
            self, server: ServerProcess) -> None:
        res = httpx.post(f"{server.url}/embed", json={"texts": [LONG]}, timeout=60)
        assert res.status_code == 200, res.text
        body = res.json()
        assert len(body["embeddings"]) == 1 and len(body["embeddings"][0]) == body["dim"]
        # cut to 20,000 characters, then to the model's tokens: one truncated text, not two
        assert body["usage"] == {**body["usage"], "truncated_texts": 1, "tokens": MODEL_LIMIT}

    def test_the_count_covers_char_cut_token_cut_and_whole_texts(self, server: ServerProcess) -> None:
        token_long = "word " * 390  # over 256 tokens, under 20,000 characters
        res = httpx.post(f"{server.url}/embed", json={"texts": [LONG, "short", token_long, LONG]},
                         timeout=60)
        assert res.status_code == 200, res.text
        assert res.json()["usage"]["truncated_texts"] == 3

    def test_openai_embeddings_answer_it_with_the_model_limit_in_usage(self, server: ServerProcess) -> None:
        res = httpx.post(f"{server.url}/v1/embeddings", json={"model": NAME, "input": LONG,
                                                               "encoding_format": "float"}, timeout=60)
        assert res.status_code == 200, res.text
        body = res.json()
        assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384
        assert body["usage"] == {"prompt_tokens": MODEL_LIMIT, "total_tokens": MODEL_LIMIT}

    def test_openai_client_gets_the_same_answer(self, server: ServerProcess) -> None:
        from openai import OpenAI

        client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        res = client.embeddings.create(model=NAME, input=[LONG, "short"], encoding_format="float")
        assert len(res.data) == 2 and res.usage.prompt_tokens > MODEL_LIMIT

    @pytest.mark.parametrize(("path", "body"), [
        ("/embed", {"texts": ["short", LONG], "truncate": False}),
        ("/v1/embeddings", {"model": NAME, "input": ["short", LONG], "truncate": False}),
    ])
    def test_a_request_that_turns_truncation_off_is_refused(self, server: ServerProcess, path: str,
                                                            body: dict) -> None:
        res = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert res.status_code == 422, res.text
        assert "text 1 has 30000 characters; the limit is 20000" in res.text


@pytest.mark.slow
class TestNoTruncateServer:
    @pytest.fixture(scope="class")
    def server(self, minilm_dir: Path) -> Iterator[ServerProcess]:
        srv = ServerProcess(minilm_dir, "--model-name", NAME, "--workers", "1", "--threads", "1",
                            "--no-truncate")
        yield srv
        srv.stop()

    @pytest.mark.parametrize(("path", "body"), [
        ("/embed", {"texts": [LONG]}),
        ("/v1/embeddings", {"model": NAME, "input": LONG}),
    ])
    def test_the_text_is_refused(self, server: ServerProcess, path: str, body: dict) -> None:
        res = httpx.post(f"{server.url}{path}", json=body, timeout=60)
        assert res.status_code == 422, res.text
        assert "text 0 has 30000 characters; the limit is 20000" in res.text

    def test_a_request_may_turn_truncation_back_on(self, server: ServerProcess) -> None:
        res = httpx.post(f"{server.url}/embed", json={"texts": [LONG], "truncate": True}, timeout=60)
        assert res.status_code == 200, res.text
        assert res.json()["usage"]["truncated_texts"] == 1
