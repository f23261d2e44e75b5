"""Ranking metrics (MRR@k, nDCG@k) on hand-checkable cases, and the padding of text pairs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bertserve.compress.ranking import mrr_at_k, ndcg_at_k, random_mrr, ranking_metrics, split_groups


def test_mrr_is_the_reciprocal_rank_of_the_first_relevant_passage() -> None:
    assert mrr_at_k([[0.9, 0.8, 0.1]], [[0, 1, 0]]) == pytest.approx(0.5)
    assert mrr_at_k([[0.2, 0.8, 0.1]], [[0, 1, 1]]) == pytest.approx(1.0)  # the first relevant counts
    two = mrr_at_k([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], [[0, 0, 1], [0, 0, 1]])
    assert two == pytest.approx((1 / 3 + 1) / 2)


def test_a_relevant_passage_below_k_counts_zero() -> None:
    scores = -np.arange(12.0)  # candidate i ranks i + 1
    labels = np.zeros(12)
    labels[10] = 1  # rank 11
    assert mrr_at_k([scores], [labels], k=10) == 0.0
    assert ndcg_at_k([scores], [labels], k=10) == 0.0
    assert mrr_at_k([scores], [labels], k=11) == pytest.approx(1 / 11)
    assert mrr_at_k([scores], [np.zeros(12)]) == 0.0  # no relevant candidate at all


def test_ties_are_broken_against_the_model() -> None:
    """A constant scorer must not get credit for where the list happened to put the relevant one."""
    assert mrr_at_k([[1.0, 1.0, 1.0]], [[1, 0, 0]]) == pytest.approx(1 / 3)
    assert mrr_at_k([[1.0, 1.0, 0.0]], [[1, 0, 0]]) == pytest.approx(1 / 2)
    assert ndcg_at_k([[5.0, 5.0]], [[1, 0]]) == pytest.approx(1 / math.log2(3))


def test_ndcg_by_hand() -> None:
    # binary: the one relevant passage at rank 2 → (1 / log2 3) / 1
    assert ndcg_at_k([[0.9, 0.8, 0.1]], [[0, 1, 0]]) == pytest.approx(1 / math.log2(3))
    # graded labels 2, 1, 0 ranked in reverse: DCG = 0 + 1/log2(3) + 3/log2(4), IDCG = 3 + 1/log2(3)
    dcg = 1 / math.log2(3) + 3 / 2
    idcg = 3 + 1 / math.log2(3)
    assert ndcg_at_k([[0.1, 0.2, 0.3]], [[2, 1, 0]]) == pytest.approx(dcg / idcg)
    assert ndcg_at_k([[0.3, 0.2, 0.1]], [[2, 1, 0]]) == pytest.approx(1.0)
    # two relevant in the top two of 4: ideal
    assert ndcg_at_k([[4, 3, 2, 1]], [[1, 1, 0, 0]]) == pytest.approx(1.0)


def test_random_mrr_is_the_mean_over_every_order() -> None:
    n, k = 5, 3
    labels = np.array([1, 0, 0, 0, 0])
    perms = list(itertools.permutations(range(n)))
    scores = [-np.asarray(p, dtype=float) for p in perms]  # every order of the candidates
    assert random_mrr(n, k) == pytest.approx(mrr_at_k(scores, [labels] * len(perms), k))
    assert random_mrr(30) == pytest.approx(sum(1 / r for r in range(1, 11)) / 30)


def test_ranking_metrics_cut_flat_scores_into_queries() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.4, 0.3])  # query 1: 3 candidates, query 2: 2
    labels = [1, 0, 0, 0, 1]
    m = ranking_metrics(scores, labels, [3, 2])
    assert m["queries"] == 2
    assert m["mrr@10"] == pytest.approx((1 / 3 + 1 / 2) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="groups"):
        split_groups(scores, [3, 3])
    with pytest.raises(ValueError, match="labels"):
        mrr_at_k([[0.1, 0.2]], [[1]])


def test_pad_pairs_gives_token_types_from_each_start() -> None:
    from bertserve.compress.batching import pad_pairs

    ids, mask, types = pad_pairs([[101, 7, 102, 8, 9, 102], [101, 5, 102, 6, 102]], [3, 3])
    assert ids.shape == (2, 6) and mask[1].tolist() == [1, 1, 1, 1, 1, 0]
    assert types.tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]]  # padding is type 0
    assert pad_pairs([[1, 2]], None)[2] is None


def test_recipe_gate_refuses_a_pair_model(rerank_dir, tmp_path) -> None:
    """The gate compares outputs on single texts: a reranker gets one clear line, not a late error."""
    from bertserve.compress.recipe import parse_recipe, run_recipe
    from bertserve.errors import ConfigError

    recipe = parse_recipe({"measure_speed": False, "steps": [{"quantize": {"method": "bf16"}}]})
    with pytest.raises(ConfigError, match="reads text pairs"):
        run_recipe(rerank_dir, tmp_path / "out", recipe)
    assert not (tmp_path / "out").exists()


def test_static_int8_calibrates_a_pair_model_on_pairs(rerank_dir, query_pairs, tmp_path) -> None:
    """static-int8 of a cross-encoder: calibration feeds token_type_ids; scores stay close to fp32."""
    from bertserve import Encoder
    from bertserve.compress.quantize import QuantizeConfig, TextCalibration, quantize
    from bertserve.tokenizer import TextTokenizer

    tok = TextTokenizer(rerank_dir, 256)
    calib = TextCalibration(tok, ["a query", "another one"], batch_size=2, width=16,
                            pairs=["its passage here", "a second passage"])
    feeds = calib.get_next()
    assert set(feeds) == {"input_ids", "attention_mask", "token_type_ids"}
    assert feeds["token_type_ids"][0].tolist()[:5] == [0, 0, 0, 0, 1]  # [CLS] a query [SEP] | its
    assert (feeds["token_type_ids"] <= feeds["attention_mask"]).all()  # padding is type 0
    out = quantize(rerank_dir, tmp_path / "s8", QuantizeConfig(method="static-int8", calibration_texts=32))
    queries, passages = query_pairs
    n = min(len(queries), len(passages))
    got = Encoder.load(out).score(queries[:n], passages[:n])
    ref = Encoder.load(rerank_dir, backend="torch").score(queries[:n], passages[:n])
    assert np.corrcoef(got, ref)[0, 1] > 0.95
