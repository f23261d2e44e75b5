"""Knowledge distillation of a teacher into one shallow student (``bertserve distill``).

The student is a 1-student :class:`~bertserve.models.ensemble.StudentEnsemble`: the teacher's
(or ``init_from``'s) frozen embeddings plus N of its layers, and a linear head fitted by ridge
regression before training (a good start makes a few steps count). Losses: soft targets with a
temperature for classifiers, MSE + (1 − cosine) on the embedding for embedders, and optionally
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
) -> tuple[Path, Report]:
    """Distil ``teacher`` into one ``layers``-deep student trained on ``texts``.

    ``labels`` (one per text, −1 where unknown) are used with ``opts.label_weight`` > 0 only.
    """
    start = time.perf_counter()
    s = setup(teacher, init_from)
    data = transfer_set(s, texts, opts, labels)
    model = new_students(s, 1, layers, opts)
    fit_head(model, 0, data.ids, data.targets, opts.ridge)
    teacher_model = _hidden_teacher(s).to(pick_device(opts.device)) if opts.hidden_weight > 0 else None

    def loss_fn(outs, target, states, ids, mask):
        loss = (
            soft_target_loss(outs, target, opts.temperature)
            if s.task == "classify"
            else embed_loss(outs, target)
        )
        if teacher_model is not None:
            with torch.no_grad():
                t_last = teacher_model(input_ids=ids, attention_mask=mask).last_hidden_state
            loss = loss + opts.hidden_weight * masked_mse(states[-1][0], t_last, mask)
        return loss

    train(model, training_targets(s.task, data, opts), loss_fn, opts, f"distill {layers}-layer student")
    report = Report(seconds=0.0)
    if eval_texts:
        ev = transfer_set(s, eval_texts, opts, eval_labels)
        report.teacher = quality(s.task, ev.targets, ev.targets, eval_labels, 0)
        report.quality.append(quality(s.task, predict(model, ev.ids)[0], ev.targets, eval_labels, 1))
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
