"""Fine-tune a local checkpoint into a classifier artifact (``bertserve finetune``): a teacher.

Cross-entropy on labelled texts, trained by the loop of :mod:`.training` (AdamW, linear warm-up
and decay); texts of similar length share a batch so little compute goes to padding. The result
is a plain Hugging Face ``*ForSequenceClassification`` checkpoint (safetensors) plus a
``bertserve.json``, so it serves, exports and teaches like any other artifact.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifact import Manifest, copy_tokenizer, load_manifest, resolve, save_manifest
from ..errors import ConfigError
from ..tokenizer import TextTokenizer
from .batching import batches, epochs, pad
from .training import fit, planned_steps, recent_loss, seed_torch


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
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if len(texts) != len(labels) or not texts:
        raise ConfigError("finetune needs as many labels as texts, and at least one text")
    if any(not 0 <= y < len(label_names) for y in labels):
        raise ConfigError(f"labels must be in 0..{len(label_names) - 1}")
    start = time.perf_counter()
    hf_logging.set_verbosity_error()
    seed_torch(opts.seed, opts.threads)  # before the model: it draws the new head's weights
    folder, manifest = load_manifest(base)
    weights = resolve(folder / manifest.weights)
    tok = TextTokenizer(folder / manifest.tokenizer, opts.max_len)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(weights),
        num_labels=len(label_names),
        use_safetensors=True,
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
    )
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
