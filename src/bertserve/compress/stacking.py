"""Stacking distillation with boosting (``bertserve stack``): K shallow students in sequence.

Student k fits the residual the earlier ones left, ``r_k = T(x) − Σ_{j<k} α_j S_j(x)``, with an
MSE loss; α_k is the optimal step of that boosting round, a line search
``α = <S_k, r_k> / <S_k, S_k>`` on a validation slice of the transfer texts that no student
fits: the validation residual can only shrink, and a student that learnt noise gets a small α
(measured: with α fitted on the training texts, held-out quality fell as students were added).
*Virtual stacking*:
student k's first layer also learns to imitate the last hidden states of student k−1, so the
group behaves like one model stacked student on student, while each student stays shallow and
all of them run at the same time. (A 1-layer student has no intermediate layer: no such loss.)
The first student starts from the layers ``opts.init_layers`` picks (by default spread from the
teacher's first to its last, measured far better than the bottom ones); student k ≥ 1 from the
teacher's k-th block of L layers (wrapping around), so later students start from other features.
Students are stored in boosting order, so any prefix is a valid, cheaper model.

The joint refit after boosting is :mod:`.refit`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..models.ensemble import StudentEnsemble
from .distill import masked_mse
from .refit import RefitOptions, prefix_quality, prefix_residuals, run_refit, served
from .students import Report, fit_head, new_students, predict, quality, train, write_artifact
from .transfer import TrainOptions, check_labels, setup, transfer_set


def boosting_step(output: np.ndarray, residual: np.ndarray) -> float:
    """The α minimising ||residual − α·output||² (0 if the student outputs nothing)."""
    denom = float((output.astype(np.float64) ** 2).sum())
    return 0.0 if denom == 0 else float((output.astype(np.float64) * residual).sum() / denom)


def assemble(students: list[StudentEnsemble], alphas: list[float]) -> StudentEnsemble:
    """Fuse trained 1-student models (sharing frozen embeddings) into one K-student ensemble."""
    model = StudentEnsemble(students[0].cfg, len(students), alphas)
    model.embeddings.load_state_dict(students[0].embeddings.state_dict())
    for k, s in enumerate(students):
        model.load_student_state(k, s.student_state(0))
    return model.eval()


def stack(
    teacher: str | Path | None,
    texts: list[str],
    out: str | Path,
    *,
    students: int = 3,
    layers: int = 1,
    opts: TrainOptions = TrainOptions(),
    init_from: str | Path | None = None,
    eval_texts: list[str] | None = None,
    eval_labels: list[int] | None = None,
    refit_opts: RefitOptions = RefitOptions(),
    labels: list[int] | None = None,
    pairs: list[str] | None = None,
    eval_pairs: list[str] | None = None,
    eval_groups: list[int] | None = None,
) -> tuple[Path, Report]:
    """Train ``students`` students of ``layers`` layers by boosting; write the ensemble artifact.

    The report lists, after each added student, quality on the held-out texts (if given); the
    manifest records the residuals ``mean ||T − F_k||²`` on the fitted and validation texts.
    With ``refit_opts.epochs`` > 0 the boosted students are then refitted together
    (:func:`refit`): the report gives the refitted prefixes, the manifest keeps the boosted ones.
    ``labels`` (one per text, −1 where unknown) serve the refit with ``opts.label_weight`` > 0.
    A reranker teacher takes ``pairs``, ``eval_pairs`` and ``eval_groups`` as :func:`distill` does;
    its students boost on the score (D = 1).
    """
    start = time.perf_counter()
    s = setup(teacher, init_from)
    check_labels(s.task, labels, opts)  # before boosting, not hours later in the refit
    if opts.label_weight > 0 and refit_opts.epochs == 0:
        raise ConfigError("--label-weight acts in the refit only: add --refit-epochs")
    data = transfer_set(s, texts, opts, labels, pairs)
    order = np.random.default_rng(opts.seed).permutation(len(data.ids))
    n_val = max(1, int(len(order) * opts.val_fraction))
    val, data = data.subset(order[:n_val]), data.subset(order[n_val:])
    ev = transfer_set(s, eval_texts, opts, eval_labels, eval_pairs, eval_groups) if eval_texts else None
    report = Report()
    if ev is not None:
        report.teacher = quality(s.task, ev.targets, ev.targets, eval_labels, 0, ev.groups)
    combined = np.zeros_like(data.targets)  # F_{k-1} on the texts students fit
    combined_val = np.zeros_like(val.targets)  # and on the validation slice
    combined_eval = np.zeros_like(ev.targets) if ev is not None else None
    trained: list[StudentEnsemble] = []
    alphas: list[float] = []
    train_residuals: list[float] = []
    val_residuals: list[float] = []
    for k in range(students):
        residual = data.targets - combined  # (N, D): what is left to learn
        model = new_students(s, 1, layers, opts, block=k or None)  # k ≥ 1: the k-th layer block
        fit_head(model, 0, data.ids, residual, opts.ridge, type_starts=data.type_starts)
        prev = trained[-1] if trained and layers >= 2 and opts.hidden_weight > 0 else None

        def loss_fn(outs, target, states, ids, mask, types=None, prev=prev):
            loss = ((outs[0] - target) ** 2).sum(-1).mean()  # MSE to the residual
            if prev is not None:  # virtual stacking: layer 1 imitates the previous student's top
                with torch.no_grad():
                    below = prev.hidden(ids, mask, 0, 1, types)[-1][0]  # (B, T, H)
                loss = loss + opts.hidden_weight * masked_mse(states[0][0], below, mask)
            return loss

        train(model, data.with_targets(residual), loss_fn, opts, f"student {k + 1}/{students}")
        out_val = predict(model, val.ids, type_starts=val.type_starts)[0]  # (N_val, D) unscaled S_k
        alpha = boosting_step(out_val, val.targets - combined_val)
        combined_val += alpha * out_val
        combined += alpha * predict(model, data.ids, type_starts=data.type_starts)[0]
        train_residuals.append(float(((data.targets - combined) ** 2).sum(-1).mean()))
        val_residuals.append(float(((val.targets - combined_val) ** 2).sum(-1).mean()))
        trained.append(model)
        alphas.append(alpha)
        if ev is not None and combined_eval is not None:
            combined_eval += alpha * predict(model, ev.ids, type_starts=ev.type_starts)[0]
            report.quality.append(
                quality(s.task, served(model, combined_eval), ev.targets, eval_labels, k + 1, ev.groups)
            )
    ensemble = assemble(trained, alphas)
    extra: dict = {"train_residuals": train_residuals, "validation_residuals": val_residuals}
    if refit_opts.epochs > 0:
        extra["boosted_quality"] = [asdict(q) for q in report.quality]
        extra["refit_steps"] = run_refit(ensemble, data, s.task, opts, refit_opts)
        extra["refit"] = asdict(refit_opts)
        extra["refit_validation_residuals"] = prefix_residuals(ensemble, val)
        if ev is not None:
            report.quality = prefix_quality(ensemble, ev, s.task, eval_labels)
    report.seconds = time.perf_counter() - start
    path = write_artifact(Path(out), s, ensemble, method="stack", opts=opts, report=report, extra=extra)
    return path, report
