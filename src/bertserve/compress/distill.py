"""Knowledge distillation of a teacher into one shallow student (``bertserve distill``).

The student is a 1-student :class:`~bertserve.models.ensemble.StudentEnsemble`: the teacher's
(or ``init_from``'s) frozen embeddings plus N of its layers, and a linear head fitted by ridge
regression before training (a good start makes a few steps count). Losses: soft targets with a
temperature for classifiers, MSE + (1 − cosine) on the embedding for embedders, and for
rerankers (whose students read the teacher's (query, passage) pairs) MSE on the score, or, with
the pairs grouped by query, the MSE of the scores centred per query (the margins between a
query's candidates: what ranks them) plus a tenth of the plain MSE; and optionally
MSE between the student's last hidden states and the teacher's (same tokenizer only). The
losses here serve :mod:`.stacking` too; the student tools are in :mod:`.students`, the teacher
and transfer texts in :mod:`.transfer`, the training loop in :mod:`.training`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..artifact import resolve
from ..errors import ConfigError
from ..runtime.torch_backend import pick_device
from .students import Report, fit_head, new_students, predict, quality, train, write_artifact
from .transfer import Setup, TrainOptions, setup, training_targets, transfer_set


def embed_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the embedding + (1 − cosine): scale and direction both count."""
    out = out[0]
    return ((out - target) ** 2).sum(-1).mean() + (1 - F.cosine_similarity(out, target, dim=-1)).mean()


RANK_MSE_WEIGHT = 0.1  # grouped score loss: weight of the plain MSE next to the centred one


def score_loss(out: torch.Tensor, target: torch.Tensor, groups: list[int] | None = None) -> torch.Tensor:
    """A reranker's score distillation, student scores (1, B, 1) to the teacher's (B, 1).

    Without ``groups``: the mean squared error. With them (candidates per query, rows query by
    query): the mean squared error of the scores centred per query, which leaves each query's
    level free and fits the margins between its candidates (Hofstätter et al.'s margin-MSE over
    every pair of a query's candidates, up to a factor), plus ``RANK_MSE_WEIGHT`` × the plain MSE
    so served scores keep the teacher's scale. Chosen over the plain MSE and a listwise KL on one
    quick run on the news ranking split whose output was not kept: no figure is claimed here.
    """
    o, t = out[0].reshape(-1), target.reshape(-1)
    mse = ((o - t) ** 2).mean()
    if not groups:
        return mse
    index = torch.repeat_interleave(torch.arange(len(groups), device=o.device),
                                    torch.tensor(groups, device=o.device))
    counts = torch.tensor(groups, dtype=o.dtype, device=o.device)
    diff = o - t
    mean = torch.zeros(len(groups), dtype=o.dtype, device=o.device).index_add_(0, index, diff) / counts
    return ((diff - mean[index]) ** 2).mean() + RANK_MSE_WEIGHT * mse


def task_loss(task: str, out: torch.Tensor, target: torch.Tensor, temperature: float,
              groups: list[int] | None = None) -> torch.Tensor:
    """The distillation loss of ``task`` between student outputs (1, B, D) and teacher outputs (B, D)
    (``groups``: a reranker's pairs grouped by query, see :func:`score_loss`)."""
    if task == "classify":
        return soft_target_loss(out, target, temperature)
    return score_loss(out, target, groups) if task == "rerank" else embed_loss(out, target)


def soft_target_loss(out: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(out[0] / t, -1),
            F.log_softmax(target / t, -1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


def distill(
    teacher: str | Path | None,
    texts: list[str],
    out: str | Path,
    *,
    layers: int = 2,
    opts: TrainOptions = TrainOptions(),
    init_from: str | Path | None = None,
    eval_texts: list[str] | None = None,
    eval_labels: list[int] | None = None,
    labels: list[int] | None = None,
    pairs: list[str] | None = None,
    eval_pairs: list[str] | None = None,
    eval_groups: list[int] | None = None,
    groups: list[int] | None = None,
) -> tuple[Path, Report]:
    """Distil ``teacher`` into one ``layers``-deep student trained on ``texts``.

    ``labels`` (one per text, −1 where unknown) are used with ``opts.label_weight`` > 0 only.
    A reranker teacher takes ``pairs`` (the passage of each query in ``texts``), optionally
    ``groups`` (candidates per query, rows query by query: whole queries then share a batch and
    the loss fits their margins, :func:`score_loss`) and, for the report, ``eval_pairs`` with
    ``eval_groups`` (candidates per held-out query) and ``eval_labels`` (their relevance):
    MRR@10 / nDCG@10.
    """
    start = time.perf_counter()
    s = setup(teacher, init_from)
    if groups is not None and s.task != "rerank":
        raise ConfigError("groups (candidates per query) are for a reranker's pairs")
    data = transfer_set(s, texts, opts, labels, pairs, groups)
    model = new_students(s, 1, layers, opts)
    fit_head(model, 0, data.ids, data.targets, opts.ridge, type_starts=data.type_starts)
    teacher_model = _hidden_teacher(s).to(pick_device(opts.device)) if opts.hidden_weight > 0 else None

    def loss_fn(outs, target, states, ids, mask, types=None, groups=None):
        loss = task_loss(s.task, outs, target, opts.temperature, groups)
        if teacher_model is not None:
            with torch.no_grad():
                t_out = teacher_model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            t_last = t_out.last_hidden_state
            loss = loss + opts.hidden_weight * masked_mse(states[-1][0], t_last, mask)
        return loss

    train(model, training_targets(s.task, data, opts), loss_fn, opts, f"distill {layers}-layer student")
    report = Report(seconds=0.0)
    if eval_texts:
        ev = transfer_set(s, eval_texts, opts, eval_labels, eval_pairs, eval_groups)
        report.teacher = quality(s.task, ev.targets, ev.targets, eval_labels, 0, ev.groups)
        scores = predict(model, ev.ids, type_starts=ev.type_starts)[0]
        report.quality.append(quality(s.task, scores, ev.targets, eval_labels, 1, ev.groups))
    report.seconds = time.perf_counter() - start
    return write_artifact(Path(out), s, model, method="distill", opts=opts, report=report), report


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over real tokens, in fp32 (``a`` may come out of bf16 autocast): a, b (B, T, H), mask (B, T)."""
    a, b = a.float(), b.float()
    m = mask.unsqueeze(-1).to(a.dtype)
    return (((a - b) ** 2) * m).sum() / (m.sum() * a.shape[-1]).clamp(min=1)


def _hidden_teacher(s: Setup):
    """The teacher's encoder (torch) for hidden-state matching; it must share the tokenizer."""
    if s.init_dir.resolve() != resolve(s.teacher_dir / s.teacher.weights).resolve():
        raise ConfigError(
            "hidden-state matching needs the student to share the teacher's tokenizer "
            "and width (drop --init-from or --hidden-weight)"
        )
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(s.init_dir), use_safetensors=True).eval()
