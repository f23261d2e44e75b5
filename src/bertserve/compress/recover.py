"""Short distillation that lets a pruned or factorised model recover the original's outputs.

Not the student-ensemble distillation (that is :mod:`.distill`): here the student *is* the
original minus some weights, so a few hundred steps matching the teacher close most of the gap.
Embedders learn ``1 - cos`` to the teacher's embedding, classifiers the KL to its softened
logits. With ``hidden > 0`` the student also matches every layer's hidden states (pruning keeps
the layer count and width, so layer *i* of the student answers to layer *i* of the teacher): a
mean-squared error over real tokens, scaled by the teacher's mean square in that layer so every
layer weighs the same. That signal is far denser than one pooled vector per text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..tokenizer import TextTokenizer
from .batching import text_batches
from .training import fit


@dataclass(slots=True, frozen=True)
class RecoverConfig:
    """steps: optimiser steps (0 skips recovery); lr: AdamW learning rate; batch_size; max_length
    caps transfer texts; hidden: weight of the per-layer hidden-state loss (0 = outputs only)."""

    steps: int = 300
    lr: float = 1e-4
    batch_size: int = 16
    max_length: int = 48
    temperature: float = 2.0
    hidden: float = 1.0
    seed: int = 0


def loss_fn(student: torch.Tensor, teacher: torch.Tensor, task: str, temperature: float) -> torch.Tensor:
    if task == "classify":
        t = temperature
        kl = nn.functional.kl_div(
            nn.functional.log_softmax(student / t, -1), nn.functional.softmax(teacher / t, -1),
            reduction="batchmean",
        )
        return kl * t * t
    return (1 - nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()


def forward_hidden(module: nn.Module, ids: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A PooledEncoder's output and its layers' hidden states (the embeddings excluded)."""
    from ..models.heads import pool

    out = module.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)  # type: ignore[attr-defined]
    if module.task == "classify":  # type: ignore[attr-defined]
        head = out.logits.float()
    else:
        head = pool(out.hidden_states[-1].float(), mask, module.pooling)  # type: ignore[attr-defined]
        if module.normalize:  # type: ignore[attr-defined]
            head = nn.functional.normalize(head, dim=-1)
    return head, tuple(out.hidden_states[1:])


def hidden_loss(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                mask: torch.Tensor) -> torch.Tensor:
    """Mean over layers of the token-masked MSE, each scaled by the teacher layer's mean square."""
    m = mask.unsqueeze(-1).to(student[0].dtype)
    n = m.sum() * student[0].shape[-1]
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher, strict=True):
        total = total + (((s - t) ** 2) * m).sum() / ((t**2) * m).sum().clamp(min=1e-12)
    return total / len(student) if n > 0 else total


def recover(student: nn.Module, teacher: nn.Module, tok: TextTokenizer, texts: list[str], task: str,
            config: RecoverConfig = RecoverConfig()) -> list[float]:
    """Train ``student`` in place towards ``teacher`` on ``texts``; returns the loss curve."""
    if config.steps <= 0 or not texts:
        return []
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(texts), generator=gen).tolist()
    need = config.steps * config.batch_size
    pool = [texts[order[i % len(order)]] for i in range(need)]
    data = text_batches(tok, pool, config.batch_size, config.max_length)
    teacher.eval()
    student.eval()  # no dropout: we match a deterministic teacher

    def step_loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch
        if config.hidden > 0:
            with torch.no_grad():
                target, t_hidden = forward_hidden(teacher, ids, mask)
            out, s_hidden = forward_hidden(student, ids, mask)
            loss = loss_fn(out, target, task, config.temperature)
            return loss + config.hidden * hidden_loss(s_hidden, t_hidden, mask)
        with torch.no_grad():
            target = teacher(ids, mask)
        return loss_fn(student(ids, mask), target, task, config.temperature)

    params = [p for p in student.parameters() if p.requires_grad]
    return fit(params, data, step_loss, config.steps, lr=config.lr, weight_decay=0.0, warmup=20,
               desc="recovering")
