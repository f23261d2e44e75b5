"""The totally corrective step of stacking (``bertserve refit``, ``stack --refit-epochs``).

Boosting fits each student once and never revisits it. :func:`refit` adds the *totally
corrective* step of boosting: all K students train together, with their α fixed, on the task's
distillation loss of the whole sum plus (weighted by ``prefix_weight``) that of every shorter
prefix, so the prefixes adaptive pruning serves stay good models. With
``opts.label_weight`` > 0 a classifier's refit also learns from the true labels of the
transfer texts that have one (:func:`~.transfer.blend_labels`); boosting fits the teacher only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..artifact import load_manifest
from ..errors import ConfigError
from ..models.ensemble import StudentEnsemble, load_ensemble
from .batching import batches
from .distill import task_loss
from .students import Quality, Report, predict, quality, train, write_artifact
from .training import planned_steps
from .transfer import TrainOptions, Transfer, setup, training_targets, transfer_set


@dataclass(slots=True)
class RefitOptions:
    """The joint refit after boosting (:func:`refit`); 0 epochs: none."""

    epochs: float = 0.0
    lr: float | None = None  # None: the boosting step size
    prefix_weight: float = 0.5

    def train_options(self, opts: TrainOptions) -> TrainOptions:
        return replace(opts, epochs=self.epochs, lr=self.lr if self.lr is not None else opts.lr)


def prefix_sums(model: StudentEnsemble, outs: torch.Tensor) -> torch.Tensor:
    """F_1 … F_K: cumulative α-weighted sums of student outputs (K, B, D), in fp32."""
    alpha = model.alpha[: outs.shape[0]].view(-1, 1, 1).float()
    return torch.cumsum(alpha * outs.float(), 0)


def refit(
    model: StudentEnsemble,
    data: Transfer,
    task: str,
    opts: TrainOptions,
    *,
    prefix_weight: float = 0.5,
    desc: str = "refit",
) -> float:
    """Train all students of a boosted ensemble together (α fixed); return the last mean loss.

    The loss is the distillation loss ``distill`` uses (soft targets for classifiers, MSE +
    cosine for embedders, MSE on the score for rerankers) of the whole sum F_K, plus
    ``prefix_weight`` times its mean over the shorter prefixes F_1 … F_{K−1}: 0 tunes the whole
    ensemble only, larger values keep the prefixes served under pruning closer to what boosting
    made them.
    """
    if prefix_weight < 0:
        raise ConfigError(f"prefix weight must be ≥ 0, not {prefix_weight}")
    k = model.num_students

    def loss_fn(outs, target, states, ids, mask, types=None, groups=None):
        def sum_loss(f: torch.Tensor) -> torch.Tensor:  # f (B, D) → the (1, B, D) the losses take
            return task_loss(task, f.unsqueeze(0), target, opts.temperature, groups)

        sums = prefix_sums(model, outs)
        loss = sum_loss(sums[-1])
        if k > 1 and prefix_weight > 0:
            shorter = torch.stack([sum_loss(sums[m]) for m in range(k - 1)]).mean()
            loss = loss + prefix_weight * shorter
        return loss

    return train(model, training_targets(task, data, opts), loss_fn, opts, desc)


def refit_artifact(
    artifact: str | Path,
    texts: list[str],
    out: str | Path,
    *,
    teacher: str | Path | None = None,
    students: int | None = None,
    opts: TrainOptions = TrainOptions(),
    refit_opts: RefitOptions = RefitOptions(epochs=1.0),
    eval_texts: list[str] | None = None,
    eval_labels: list[int] | None = None,
    labels: list[int] | None = None,
    pairs: list[str] | None = None,
    eval_pairs: list[str] | None = None,
    eval_groups: list[int] | None = None,
) -> tuple[Path, Report, list[Quality]]:
    """Refit the first ``students`` students (all if None) of a stack artifact; write a new one.

    ``teacher`` defaults to the one the stack was distilled from (its provenance). Returns the
    new artifact, its report (quality of each prefix after the refit) and the same qualities
    before it. ``labels`` (one per text, −1 where unknown) are used with ``opts.label_weight`` > 0.
    A reranker's stack takes ``pairs``, ``eval_pairs`` and ``eval_groups`` as ``stack`` does.
    """
    start = time.perf_counter()
    folder, manifest = load_manifest(artifact)
    if manifest.architecture != "student-ensemble":
        raise ConfigError(
            f"{folder}: refit takes a student ensemble (bertserve stack), not {manifest.architecture}"
        )
    prov = manifest.provenance or {}
    if teacher is None and "teacher" not in prov:
        raise ConfigError(f"{folder}: its manifest names no teacher; pass one")
    s = setup(teacher if teacher is not None else prov["teacher"], prov.get("init_from"))
    model = load_ensemble(folder, manifest)
    if students is not None:
        if not 1 <= students <= model.num_students:
            raise ConfigError(f"{folder} holds {model.num_students} students, not {students}")
        model = model.prefix(students)
    data = transfer_set(s, texts, opts, labels, pairs)
    ev = transfer_set(s, eval_texts, opts, eval_labels, eval_pairs, eval_groups) if eval_texts else None
    report = Report()
    before: list[Quality] = []
    if ev is not None:
        report.teacher = quality(s.task, ev.targets, ev.targets, eval_labels, 0, ev.groups)
        before = prefix_quality(model, ev, s.task, eval_labels)
    steps = run_refit(model, data, s.task, opts, refit_opts)
    if ev is not None:
        report.quality = prefix_quality(model, ev, s.task, eval_labels)
    report.seconds = time.perf_counter() - start
    extra = {
        "refit_of": str(folder),
        "refit": asdict(refit_opts),
        "refit_steps": steps,
        "boosted_quality": [asdict(q) for q in before],
    }
    path = write_artifact(Path(out), s, model, method="stack-refit", opts=opts, report=report, extra=extra)
    return path, report, before


def run_refit(
    model: StudentEnsemble, data: Transfer, task: str, opts: TrainOptions, refit_opts: RefitOptions
) -> int:
    """:func:`refit` with ``refit_opts``; returns the steps it took (recorded in the manifest)."""
    train_opts = refit_opts.train_options(opts)
    refit(model, data, task, train_opts, prefix_weight=refit_opts.prefix_weight)
    per_epoch = len(batches([len(x) for x in data.ids], train_opts.batch_size, None))
    return planned_steps(per_epoch, train_opts.epochs, train_opts.max_steps)


def _prefix_sums(model: StudentEnsemble, data: Transfer) -> np.ndarray:
    """Unnormalised F_1 … F_K on ``data``: (K, N, D)."""
    outs = predict(model, data.ids, type_starts=data.type_starts)
    return np.cumsum(model.alpha.cpu().numpy()[:, None, None] * outs, 0)


def prefix_outputs(model: StudentEnsemble, data: Transfer) -> np.ndarray:
    """F_1 … F_K on ``data`` as served (normalised for normalised embedders): (K, N, D)."""
    return np.stack([served(model, f) for f in _prefix_sums(model, data)])


def prefix_quality(
    model: StudentEnsemble, data: Transfer, task: str, labels: list[int] | None
) -> list[Quality]:
    """Quality of every prefix F_1 … F_K on held-out ``data``."""
    return [
        quality(task, f, data.targets, labels, m + 1, data.groups)
        for m, f in enumerate(prefix_outputs(model, data))
    ]


def prefix_residuals(model: StudentEnsemble, data: Transfer) -> list[float]:
    """mean ||T − F_m||² of every prefix (unnormalised sums, as boosting measures them)."""
    return [float(((data.targets - f) ** 2).sum(-1).mean()) for f in _prefix_sums(model, data)]


def served(model: StudentEnsemble, combined: np.ndarray) -> np.ndarray:
    """The served output of a combined sum (normalised for normalised embedders)."""
    if model.cfg.task == "embed" and model.cfg.normalize:
        return combined / np.linalg.norm(combined, axis=-1, keepdims=True).clip(1e-9)
    return combined
