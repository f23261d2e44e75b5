"""The one training loop: distillation, stacking, fine-tuning and recovery all train with it.

AdamW, a linear warm-up then linear decay to 0, gradient clipping (norm 1), a tqdm progress
bar showing the mean of the last 50 losses. Each caller brings its parameters, a stream of
batches and a loss function (a batch in, a scalar loss out, whatever the batch is), and keeps
the rest of its own business: seeding (:func:`seed_torch`, where a caller's numerics need it),
the model's train/eval mode, the device, bf16 autocast (:func:`autocast_dtype`) of its forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import TypeVar

import numpy as np
import torch

from ..errors import ConfigError

B = TypeVar("B")


def seed_torch(seed: int, threads: int | None = None) -> None:
    """Seed torch's generator (weight init, dropout); ``threads`` sets torch's CPU threads."""
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 autocast where the hardware multiplies bf16 natively, else full fp32.

    ``benchmarks/students.py speed`` measures step time and held-out quality of both (an
    AVX512-BF16 CPU: see benchmarks/RESULTS.md). Weights and the optimiser stay fp32 (autocast
    only casts the matmul inputs).
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"training precision must be auto, fp32 or bf16, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False
    )()
    return torch.bfloat16 if native else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``; a no-op context when ``dtype`` is None (fp32)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def planned_steps(batches_per_epoch: int, epochs: float, max_steps: int | None = None) -> int:
    """Optimiser steps for ``epochs`` passes over the data, capped by ``max_steps``."""
    total = math.ceil(batches_per_epoch * epochs)
    return total if max_steps is None else min(total, max_steps)


def warmup_decay(total: int, warmup: int) -> Callable[[int], float]:
    """LR factor at step s: linear warm-up over ``warmup`` steps, linear decay to 0 at ``total``."""
    return lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / max(1, total))


def recent_loss(losses: Sequence[float], n: int = 50) -> float:
    """Mean of the last ``n`` losses (what the progress bar shows); NaN before any step."""
    return float(np.mean(losses[-n:])) if losses else float("nan")


def fit(
    params: Iterable[torch.nn.Parameter],
    batches: Iterable[B],
    loss_fn: Callable[[B], torch.Tensor],
    steps: int,
    *,
    lr: float,
    weight_decay: float = 0.01,
    warmup: int | None = None,
    clip: float = 1.0,
    desc: str = "training",
    progress: bool = True,
) -> list[float]:
    """Take ``steps`` optimiser steps on ``params``, one per batch of ``batches``; return every loss.

    ``warmup`` defaults to a tenth of the steps. Stops early if ``batches`` runs out. The
    caller sets the model's mode (train, or eval to match a deterministic teacher).
    """
    from tqdm.auto import tqdm

    params = list(params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 10) if warmup is None else warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(steps, warm))
    losses: list[float] = []
    with tqdm(total=steps, desc=desc, unit="step", disable=not progress, leave=False) as bar:
        for batch in islice(batches, steps):
            loss = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{recent_loss(losses):.4f}")
    return losses
