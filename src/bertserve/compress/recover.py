"""Short distillation that lets a pruned or factorised model recover the original's outputs.

Not the student-ensemble distillation (that is :mod:`.distill`): here the student *is* the
original minus some weights, so a few hundred steps matching the teacher's outputs on a
transfer set close most of the gap. Embedders learn ``1 - cos`` to the teacher's embedding,
classifiers the KL to its softened logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.tokenizer import TextTokenizer
from ..runtime.base import Batch


@dataclass(slots=True, frozen=True)
class RecoverConfig:
    """steps: optimiser steps (0 skips recovery); lr: AdamW learning rate; batch_size; max_length
    caps transfer texts (short texts train faster and look like chat traffic)."""

    steps: int = 300
    lr: float = 1e-4
    batch_size: int = 16
    max_length: int = 48
    temperature: float = 2.0
    seed: int = 0


def batches(tok: TextTokenizer, texts: list[str], batch_size: int, max_length: int) -> list[Batch]:
    ids = tok.encode(texts, max_length=max_length).ids
    return [Batch.from_ids(ids[i : i + batch_size], tok.pad_id) for i in range(0, len(ids), batch_size)]


def tensors(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)


def loss_fn(student: torch.Tensor, teacher: torch.Tensor, task: str, temperature: float) -> torch.Tensor:
    if task == "classify":
        t = temperature
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(student / t, -1), nn.functional.softmax(teacher / t, -1),
            reduction="batchmean",
        )
        return kl * t * t
    return (1 - nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()


def recover(student: nn.Module, teacher: nn.Module, tok: TextTokenizer, texts: list[str], task: str,
            config: RecoverConfig = RecoverConfig()) -> list[float]:
    """Train ``student`` in place towards ``teacher`` on ``texts``; returns the loss curve."""
    if config.steps <= 0 or not texts:
        return []
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(texts), generator=gen).tolist()
    need = config.steps * config.batch_size
    pool = [texts[order[i % len(order)]] for i in range(need)]
    data = batches(tok, pool, config.batch_size, config.max_length)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / config.steps)
    )
    teacher.eval()
    student.eval()  # no dropout: we match a deterministic teacher
    losses: list[float] = []
    for batch in tqdm(data[: config.steps], desc="recovering", unit="step", leave=False):
        ids, mask = tensors(batch)
        with torch.no_grad():
            target = teacher(ids, mask)
        loss = loss_fn(student(ids, mask), target, task, config.temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses
