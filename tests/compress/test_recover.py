"""Recovery after pruning: the hidden-state loss, ablation importance, the transfer mix."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bertserve.artifact import load_manifest
from bertserve.compress.artifacts import load_module
from bertserve.compress.batching import text_batches
from bertserve.compress.prune import ablation_keep, heads_to_keep, layers_of, prune_heads, transfer_texts
from bertserve.compress.recover import RecoverConfig, forward_hidden, hidden_loss, recover
from bertserve.models.slim import head_size
from bertserve.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def model(minilm_dir: Path):  # type: ignore[no-untyped-def]
    folder, manifest = load_manifest(minilm_dir)
    module, config = load_module(folder, manifest)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    return module, tok, head_size(config)


def test_hidden_loss_is_zero_for_the_same_model_and_falls_during_recovery(model, texts: list[str]) -> None:
    teacher, tok, hd = model
    ids, mask = text_batches(tok, texts[:8], 8, 32)[0]
    with torch.no_grad():
        out, hidden = forward_hidden(teacher, ids, mask)
        assert torch.allclose(out, teacher(ids, mask), atol=1e-5)  # same output as the served module
        assert len(hidden) == 6 and float(hidden_loss(hidden, hidden, mask)) == 0.0

    student = copy.deepcopy(teacher)
    prune_heads(student, [list(range(6, 12))] * 6, hd)  # half of every layer's heads

    def gap() -> float:
        with torch.no_grad():
            return float(hidden_loss(forward_hidden(student, ids, mask)[1], hidden, mask))

    before = gap()
    curve = recover(student, teacher, tok, texts[:8] * 2, "embed",
                    RecoverConfig(steps=6, batch_size=8, max_length=32, lr=3e-4, hidden=1.0))
    assert len(curve) == 6 and before > 0.01
    assert gap() < before
    assert curve[-1] < curve[0]


def test_ablation_removes_the_share_within_the_layer_cap(model, texts: list[str]) -> None:
    module, tok, hd = model
    keep, log = ablation_keep(module, tok, texts[:8], "embed", hd, 0.25, rounds=2, max_per_layer=4)
    removed = [12 - len(k) for k in keep]
    assert sum(removed) == 18 and max(removed) <= 4 and min(len(k) for k in keep) >= 1
    assert [r["dropped"] for r in log] == [9, 18]
    assert 0.0 < log[-1]["damage"] < 0.5
    assert [layer.attention.self.num_attention_heads for layer in layers_of(module)] == [12] * 6  # gates only


def test_heads_to_keep_respects_the_per_layer_cap() -> None:
    scores = torch.tensor([[0.0, 0.1, 0.2, 0.3], [5.0, 6.0, 7.0, 8.0]])
    assert heads_to_keep(scores, 0.5, [4, 4]) == [[3], [1, 2, 3]]
    assert heads_to_keep(scores, 0.5, [4, 4], max_per_layer=2) == [[2, 3], [2, 3]]


def test_transfer_mix_interleaves_tweets_with_the_review_train_split() -> None:
    from bertserve.data import corpus, rotten_tomatoes_splits

    mixed = transfer_texts("tweets+reviews:train")
    train = rotten_tomatoes_splits()["train"].texts
    assert mixed[:4] == [corpus("tweets")[0], train[0], corpus("tweets")[1], train[1]]
    assert len(mixed) == len(corpus("tweets")) + len(train)
