"""Ranking quality of a reranker: MRR@k and nDCG@k over held-out queries, and pair scoring.

Each query has a list of candidates with a score (the model's) and a relevance label (1
relevant, 0 not; graded labels work for nDCG). Candidates are ranked by score, highest first;
**ties are broken against the model** (an irrelevant candidate goes before a relevant one with
the same score), so a model that scores everything alike ranks the relevant passage last
instead of wherever the list happened to put it.

- MRR@k: mean over queries of 1 / (rank of the first relevant candidate), 0 when it ranks below
  k (or the query has none).
- nDCG@k: DCG@k = Σ_{i ≤ k} (2^rel_i − 1) / log2(i + 1), divided by the DCG@k of the ideal
  order; 0 for a query without a relevant candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..tokenizer import TextTokenizer
from .batching import batches, pad_pairs

Scores = Sequence[np.ndarray] | np.ndarray


def split_groups(flat: np.ndarray | Sequence[float], groups: Sequence[int]) -> list[np.ndarray]:
    """A flat array cut into consecutive groups of the given sizes (one per query)."""
    flat = np.asarray(flat).reshape(-1)
    if sum(groups) != len(flat):
        raise ValueError(f"groups of {sum(groups)} candidates in all, but {len(flat)} values")
    return np.split(flat, np.cumsum(groups)[:-1]) if len(groups) else []


def _ranked_labels(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Labels in ranked order: score descending, ties broken by label ascending (pessimistic)."""
    order = np.lexsort((labels, -scores))
    return labels[order]


def _pairs_of(scores: Scores, labels: Scores) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} score lists but {len(labels)} label lists")
    out = []
    for s, y in zip(scores, labels, strict=True):
        s, y = np.asarray(s, dtype=np.float64).reshape(-1), np.asarray(y, dtype=np.float64).reshape(-1)
        if s.shape != y.shape:
            raise ValueError(f"a query has {len(s)} scores but {len(y)} labels")
        out.append((s, y))
    return out


def mrr_at_k(scores: Scores, labels: Scores, k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant candidate, counted in the top ``k`` only."""
    rr = []
    for s, y in _pairs_of(scores, labels):
        hits = np.flatnonzero(_ranked_labels(s, y)[:k] > 0)
        rr.append(1.0 / (hits[0] + 1) if len(hits) else 0.0)
    return float(np.mean(rr)) if rr else float("nan")


def ndcg_at_k(scores: Scores, labels: Scores, k: int = 10) -> float:
    """Mean normalised discounted cumulative gain at ``k`` (gain 2^rel − 1, discount log2(i + 1))."""
    out = []
    for s, y in _pairs_of(scores, labels):
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        ranked = _ranked_labels(s, y)[:k]
        ideal = np.sort(y)[::-1][:k]
        idcg = float(((2**ideal - 1) * discount[: len(ideal)]).sum())
        dcg = float(((2**ranked - 1) * discount[: len(ranked)]).sum())
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(out)) if out else float("nan")


def random_mrr(candidates: int, k: int = 10) -> float:
    """Expected MRR@k of a random order of ``candidates`` with one relevant: (1/n) Σ_{r ≤ k} 1/r."""
    return float(sum(1.0 / r for r in range(1, min(k, candidates) + 1)) / candidates)


def ranking_metrics(scores: np.ndarray, labels: Sequence[int], groups: Sequence[int], k: int = 10) -> dict:
    """MRR@k and nDCG@k of flat pair ``scores`` (query after query, ``groups`` candidates each)."""
    s, y = split_groups(scores, groups), split_groups(np.asarray(labels), groups)
    n = max(groups) if len(groups) else 0
    return {f"mrr@{k}": round(mrr_at_k(s, y, k), 4), f"ndcg@{k}": round(ndcg_at_k(s, y, k), 4),
            "queries": len(groups), f"random_mrr@{k}": round(random_mrr(n, k), 4) if n else None}


PairForward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@torch.no_grad()
def score_pairs(
    forward: PairForward,
    tok: TextTokenizer,
    queries: list[str],
    passages: list[str],
    *,
    max_len: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Scores (N,) of a torch pair model ``forward(ids, mask, token_type_ids) -> (B, 1)`` on
    (query, passage) pairs, in input order; pairs of similar length share a batch."""
    enc = tok.encode(queries, pairs=passages, max_length=max_len)
    starts = enc.type_starts or [len(r) for r in enc.ids]
    out = np.empty(len(enc.ids), dtype=np.float32)
    for group in batches([len(r) for r in enc.ids], batch_size, None):
        ids, mask, types = pad_pairs([enc.ids[i] for i in group], [starts[i] for i in group], tok.pad_id)
        res = forward(ids.to(device), mask.to(device), None if types is None else types.to(device))
        out[group] = res.float().reshape(len(group), -1)[:, 0].cpu().numpy()
    return out


def hf_forward(model: torch.nn.Module) -> PairForward:
    """``forward`` of a Hugging Face ``*ForSequenceClassification`` model, for :func:`score_pairs`."""
    return lambda ids, mask, types: model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits


def score_artifact(path: str | Path, queries: list[str], passages: list[str], *, backend: str | None = None,
                   threads: int | None = None, max_batch: int = 32) -> np.ndarray:
    """A rerank artifact's scores (N,) on (query, passage) pairs, on its own backend (or ``backend``)."""
    from ..artifact import load_manifest
    from ..encoder import Encoder

    _, manifest = load_manifest(path)
    enc = Encoder.load(path, backend=backend or manifest.backend, threads=threads)
    return np.asarray(enc.score(queries, passages, max_batch=max_batch), dtype=np.float32).reshape(-1)


def evaluate_artifact(path: str | Path, split, *, k: int = 10, backend: str | None = None,
                      threads: int | None = None) -> dict:
    """MRR@k / nDCG@k of a rerank artifact on a :class:`~bertserve.data.RankingSplit`."""
    queries, passages, labels = split.pairs()
    return ranking_metrics(score_artifact(path, queries, passages, backend=backend, threads=threads),
                           labels, split.groups, k)
