"""Fine-tune a local checkpoint into a classifier or reranker artifact (``bertserve finetune``).

Classifier: cross-entropy on labelled texts. Reranker (:func:`finetune_rerank`): a cross-encoder
that reads ``[CLS] query [SEP] passage [SEP]`` (token types 0 then 1) and gives one logit, trained
listwise: each query's candidates (one relevant, the rest not) share a batch and the loss is the
cross-entropy of the softmax over their scores to the relevant one (chosen over per-pair BCE,
which ``loss="bce"`` keeps, on a quick comparison whose output was not kept). Both train on the loop of
:mod:`.training` (AdamW, linear warm-up and decay); texts of similar length share a batch so
little compute goes to padding. The result is a plain Hugging Face
``*ForSequenceClassification`` checkpoint (safetensors) plus a ``bertserve.json``, so it
serves, exports and teaches like any other artifact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..artifact import Manifest, copy_tokenizer, load_manifest, resolve, save_manifest
from ..errors import ConfigError
from ..tokenizer import TextTokenizer
from .batching import batches, epochs, pad, pad_pairs
from .training import fit, planned_steps, recent_loss, seed_torch

if TYPE_CHECKING:
    from ..data import RankingSplit


@dataclass(slots=True)
class FinetuneOptions:
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 5e-5
    max_len: int = 128
    seed: int = 0
    threads: int | None = None
    progress: bool = True


def with_new_head(base: str | Path | None, seed: int, threads: int | None, max_len: int,
                  **head: object) -> tuple[Path, Manifest, TextTokenizer, torch.nn.Module]:
    """``base``'s encoder with a new sequence-classification head (seeded first: the seed draws
    the head's weights), its folder, manifest and a tokenizer cut at ``max_len``."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    seed_torch(seed, threads)
    folder, manifest = load_manifest(base)
    tok = TextTokenizer(folder / manifest.tokenizer, max_len)
    model = AutoModelForSequenceClassification.from_pretrained(str(resolve(folder / manifest.weights)),
                                                               use_safetensors=True, **head)
    return folder, manifest, tok, model


@torch.no_grad()
def accuracy(model: torch.nn.Module, ids: list[list[int]], labels: list[int], batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for group in batches([len(x) for x in ids], batch_size, None):
        t_ids, t_mask = pad([ids[i] for i in group])
        pred = model(input_ids=t_ids, attention_mask=t_mask).logits.argmax(-1)
        correct += int((pred == torch.tensor([labels[i] for i in group])).sum())
    return correct / max(1, len(ids))


def finetune(
    base: str | Path | None,
    out: str | Path,
    texts: list[str],
    labels: list[int],
    label_names: list[str],
    *,
    opts: FinetuneOptions = FinetuneOptions(),
    eval_texts: list[str] | None = None,
    eval_labels: list[int] | None = None,
) -> tuple[Path, dict]:
    """Train a classifier on (texts, labels) from ``base``; write it to ``out``; return its report."""

    if len(texts) != len(labels) or not texts:
        raise ConfigError("finetune needs as many labels as texts, and at least one text")
    if any(not 0 <= y < len(label_names) for y in labels):
        raise ConfigError(f"labels must be in 0..{len(label_names) - 1}")
    start = time.perf_counter()
    folder, manifest, tok, model = with_new_head(
        base, opts.seed, opts.threads, opts.max_len, num_labels=len(label_names),
        id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)})
    ids = tok.encode(texts).ids
    total = planned_steps(math.ceil(len(ids) / opts.batch_size), opts.epochs, opts.max_steps)

    def loss_fn(group: list[int]) -> torch.Tensor:
        t_ids, t_mask = pad([ids[i] for i in group])
        logits = model(input_ids=t_ids, attention_mask=t_mask).logits
        return F.cross_entropy(logits, torch.tensor([labels[i] for i in group]))

    model.train()
    stream = epochs([len(x) for x in ids], opts.batch_size, opts.seed)
    losses = fit(model.parameters(), stream, loss_fn, total, lr=opts.lr, desc="finetune",
                 progress=opts.progress)
    report: dict = {"steps": len(losses), "train_loss": recent_loss(losses) if losses else None}
    if eval_texts and eval_labels:
        report["eval_accuracy"] = accuracy(model, tok.encode(eval_texts).ids, eval_labels)
    report["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(out)
    model.eval().save_pretrained(str(out), safe_serialization=True)
    new = Manifest(
        name=f"{manifest.name}-classifier",
        task="classify",
        labels=list(label_names),
        pooling="cls",
        normalize=False,
        max_seq_length=manifest.max_seq_length,
        tokenizer=copy_tokenizer(folder, manifest, out),
        weights=".",
        output_dim=len(label_names),
        provenance={
            "base": str(folder),
            "method": "finetune",
            "hyper_parameters": {k: getattr(opts, k) for k in opts.__slots__},
            "report": report,
        },
    )
    save_manifest(out, new)
    return out, report


@dataclass(slots=True)
class RerankOptions(FinetuneOptions):
    """:class:`FinetuneOptions` for a reranker; ``batch_size`` counts pairs (whole queries)."""

    loss: str = "listwise"  # listwise (softmax CE over a query's candidates) | bce (per pair)
    eval_queries: int | None = None  # held-out queries scored for the report (None: all)


def finetune_rerank(
    base: str | Path | None,
    out: str | Path,
    train: RankingSplit,
    *,
    opts: RerankOptions = RerankOptions(),
    eval_split: RankingSplit | None = None,
) -> tuple[Path, dict]:
    """Train a cross-encoder (one logit per pair) on ``train``'s queries from ``base``; write it
    to ``out``; return its report (MRR@10 / nDCG@10 on ``eval_split`` if given)."""

    from .ranking import hf_forward, ranking_metrics, score_pairs

    if opts.loss not in ("listwise", "bce"):
        raise ConfigError(f"rerank loss must be listwise or bce, not {opts.loss!r}")
    if not len(train) or not any(any(q.labels) for q in train.queries):
        raise ConfigError("finetune --task rerank needs queries with a relevant passage")
    start = time.perf_counter()
    folder, manifest, tok, model = with_new_head(base, opts.seed, opts.threads, opts.max_len, num_labels=1)
    queries, passages, labels = train.pairs()
    enc = tok.encode(queries, pairs=passages)
    starts = enc.type_starts or []
    first = np.cumsum([0, *train.groups])  # query q's pairs are first[q] … first[q + 1] − 1
    rows = [list(range(first[q], first[q + 1])) for q in range(len(train))]
    per_batch = max(1, opts.batch_size // max(train.groups))  # whole queries per step
    total = planned_steps(math.ceil(len(rows) / per_batch), opts.epochs, opts.max_steps)
    target = torch.tensor(labels, dtype=torch.float32)

    def loss_fn(group: list[int]) -> torch.Tensor:
        pairs = [i for q in group for i in rows[q]]
        ids, mask, types = pad_pairs([enc.ids[i] for i in pairs], [starts[i] for i in pairs], tok.pad_id)
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits[:, 0]
        y = target[pairs]
        if opts.loss == "bce":
            return F.binary_cross_entropy_with_logits(logits, y)
        losses, at = [], 0
        for q in group:  # softmax over the query's candidates; the target spreads over its relevant ones
            n = len(rows[q])
            yq = y[at : at + n]
            losses.append(-(F.log_softmax(logits[at : at + n], 0) * yq).sum() / yq.sum().clamp(min=1))
            at += n
        return torch.stack(losses).mean()

    model.train()
    lengths = [max(len(enc.ids[i]) for i in r) for r in rows]
    losses = fit(model.parameters(), epochs(lengths, per_batch, opts.seed), loss_fn, total, lr=opts.lr,
                 desc="finetune rerank", progress=opts.progress)
    model.eval()
    report: dict = {"steps": len(losses), "train_loss": recent_loss(losses) if losses else None,
                    "loss": opts.loss}
    if eval_split is not None and len(eval_split):
        ev = eval_split.head(opts.eval_queries) if opts.eval_queries else eval_split
        q, p, y = ev.pairs()  # scored as served: cut at the model's limit, not the training one
        served = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
        scores = score_pairs(hf_forward(model), served, q, p)
        report["eval"] = ranking_metrics(scores, y, ev.groups)
    report["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(out)
    model.save_pretrained(str(out), safe_serialization=True)
    new = Manifest(
        name=f"{manifest.name}-reranker",
        task="rerank",
        pairs=True,
        labels=None,
        pooling="cls",
        normalize=False,
        max_seq_length=manifest.max_seq_length,
        tokenizer=copy_tokenizer(folder, manifest, out),
        weights=".",
        output_dim=1,
        provenance={
            "base": str(folder),
            "method": "finetune",
            "hyper_parameters": {k: getattr(opts, k)
                                 for k in (*FinetuneOptions.__slots__, *RerankOptions.__slots__)},
            "report": report,
        },
    )
    save_manifest(out, new)
    return out, report
