"""Student-ensemble tools shared by :mod:`.distill` and :mod:`.stacking`.

New students started from teacher layers (:func:`new_students`), a closed-form head
(:func:`fit_head`), their outputs (:func:`predict`), their quality against the teacher
(:func:`quality`), training with a distillation loss (:func:`train`, on the one loop of
:mod:`.training`) and the artifact they are saved as (:func:`write_artifact`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..artifact import Manifest, StudentEntry, copy_tokenizer, save_manifest
from ..errors import ConfigError
from ..models.ensemble import StudentConfig, StudentEnsemble, save_ensemble
from ..runtime.torch_backend import pick_device
from .batching import batches, epochs, pad
from .teacher import init_student, pick_layers, student_config
from .training import autocast, autocast_dtype, fit, planned_steps, recent_loss, seed_torch
from .transfer import Setup, TrainOptions, Transfer


@dataclass(slots=True)
class Quality:
    students: int
    metric: str  # accuracy | cosine
    value: float
    agreement: float | None = None  # classifier: share of argmax equal to the teacher's
    residual: float = 0.0  # mean squared error to the teacher's head output


@dataclass(slots=True)
class Report:
    quality: list[Quality] = field(default_factory=list)
    teacher: Quality | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "quality": [asdict(q) for q in self.quality],
            "teacher": asdict(self.teacher) if self.teacher else None,
            "seconds": round(self.seconds, 1),
        }


@torch.no_grad()
def predict(
    model: StudentEnsemble,
    ids: list[list[int]],
    *,
    lo: int = 0,
    hi: int | None = None,
    pooled: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Unscaled student outputs (m, N, D), or pooled features (m, N, H) when ``pooled``."""
    model.eval()
    device = model.head_w.device
    hi = model.num_students if hi is None else hi
    width = model.cfg.hidden_size if pooled else model.cfg.output_dim
    out = np.empty((hi - lo, len(ids), width), dtype=np.float32)
    for group in batches([len(x) for x in ids], batch_size, None):
        t_ids, t_mask = (t.to(device) for t in pad([ids[i] for i in group]))
        if pooled:
            last = model.hidden(t_ids, t_mask, lo, hi)[-1]
            m, b, t, h = last.shape
            mask = t_mask.unsqueeze(0).expand(m, b, t).unsqueeze(-1).float()
            res = (last * mask).sum(2) / mask.sum(2).clamp(min=1e-9)  # (m, B, H)
        else:
            res = model.student_outputs(t_ids, t_mask, lo, hi)
        out[:, group] = res.float().cpu().numpy()
    return out


def fit_head(
    model: StudentEnsemble, k: int, ids: list[list[int]], target: np.ndarray, ridge: float, limit: int = 3000
) -> None:
    """Least-squares head of student k onto ``target`` from its current pooled features."""
    if model.cfg.pooling != "mean":
        return  # only mean-pooled students (all that bertserve builds) get a closed-form head
    sel = ids[:limit]
    x = predict(model, sel, lo=k, hi=k + 1, pooled=True)[0]  # (N, H)
    x1 = np.concatenate([x, np.ones((len(x), 1), np.float32)], 1).astype(np.float64)  # (N, H+1)
    gram = x1.T @ x1 + ridge * len(x1) * np.eye(x1.shape[1])
    w = np.linalg.solve(gram, x1.T @ target[: len(sel)].astype(np.float64))  # (H+1, D)
    with torch.no_grad():
        model.head_w[k].copy_(torch.from_numpy(w[:-1]).float())
        model.head_b[k].copy_(torch.from_numpy(w[-1]).float())


LossFn = Callable[[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor], torch.Tensor]


def train(model: StudentEnsemble, data: Transfer, loss_fn: LossFn, opts: TrainOptions, desc: str) -> float:
    """Train every student of ``model`` except its frozen embeddings; return the last mean loss.

    ``loss_fn(outputs (1, B, D), targets (B, D), hidden states per layer, ids, mask)``, all on
    the training device; the model stays there afterwards (``predict`` follows it). The
    students' forward runs under ``opts.precision``'s autocast, the loss in fp32.
    """
    seed_torch(opts.seed, opts.threads)
    device = pick_device(opts.device)
    cast = autocast_dtype(device, opts.precision)
    model.to(device)
    model.embeddings.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith("embeddings.")]
    lengths = [len(x) for x in data.ids]
    total = planned_steps(len(batches(lengths, opts.batch_size, None)), opts.epochs, opts.max_steps)

    def step_loss(group: list[int]) -> torch.Tensor:
        ids, mask = (t.to(device) for t in pad([data.ids[i] for i in group]))
        with autocast(device, cast):
            states = model.hidden(ids, mask, 0, model.num_students)
            outs = model.head(states[-1], mask, 0, model.num_students)  # (1, B, D)
        target = torch.from_numpy(data.targets[group]).to(device)
        return loss_fn(outs.float(), target, states, ids, mask)

    model.train()
    losses = fit(params, epochs(lengths, opts.batch_size, opts.seed), step_loss, total, lr=opts.lr,
                 desc=desc, progress=opts.progress)
    model.eval()
    return recent_loss(losses)


def quality(
    task: str, combined: np.ndarray, teacher: np.ndarray, labels: list[int] | None, students: int
) -> Quality:
    """Accuracy (classifier) or mean cosine to the teacher (embedder) of outputs (N, D)."""
    residual = float(((teacher - combined) ** 2).sum(-1).mean())
    if task == "classify":
        pred = combined.argmax(-1)
        agree = float((pred == teacher.argmax(-1)).mean())
        acc = float((pred == np.asarray(labels)).mean()) if labels is not None else agree
        return Quality(students, "accuracy", acc, agree, residual)
    a = combined / np.linalg.norm(combined, axis=-1, keepdims=True).clip(1e-9)
    b = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True).clip(1e-9)
    return Quality(students, "cosine", float((a * b).sum(-1).mean()), None, residual)


def new_students(
    s: Setup, k: int, layers: int, opts: TrainOptions, block: int | None = None
) -> StudentEnsemble:
    """k students of ``layers`` layers; ``block`` b starts them from checkpoint layers b·L … b·L+L−1."""
    cfg: StudentConfig = student_config(
        s.init_dir,
        layers=layers,
        task=s.task,
        output_dim=s.output_dim,
        pooling="mean",
        normalize=bool(s.teacher.normalize and s.task == "embed"),
        max_len=s.teacher.max_seq_length,
    )
    model = StudentEnsemble(cfg, k)
    depth = json.loads((s.init_dir / "config.json").read_text())["num_hidden_layers"]
    if layers > depth:
        raise ConfigError(f"a {layers}-layer student is deeper than the {depth}-layer checkpoint it starts "
                          f"from ({s.init_dir}): students are shallower, use at most {depth} layers")
    ids = pick_layers(depth, layers, opts.init_layers)
    if block is not None:
        ids = [(block * layers + i) % depth for i in range(layers)]
    for j in range(k):
        init_student(model, j, s.init_dir, ids)
    return model


def write_artifact(
    out: Path,
    s: Setup,
    model: StudentEnsemble,
    *,
    method: str,
    opts: TrainOptions,
    report: Report,
    extra: dict | None = None,
) -> Path:
    """Save ``model`` as a student-ensemble artifact the runtimes load like any other."""
    out = Path(out)
    paths = save_ensemble(model, out)
    manifest = Manifest(
        name=f"{s.teacher.name}-{method}-{model.num_students}x{model.cfg.num_layers}",
        task=s.task,  # type: ignore[arg-type]
        architecture="student-ensemble",
        labels=s.teacher.labels,
        pooling="mean",
        normalize=model.cfg.normalize,
        max_seq_length=min(s.teacher.max_seq_length, model.cfg.max_position),
        tokenizer=copy_tokenizer(s.init_folder, s.init, out),
        weights=".",
        output_dim=model.cfg.output_dim,
        students=[
            StudentEntry(path=p, alpha=float(a)) for p, a in zip(paths, model.alpha.tolist(), strict=True)
        ],
        provenance={
            "teacher": str(s.teacher_dir),
            "init_from": str(s.init_dir),
            "method": method,
            "hyper_parameters": asdict(opts) | (extra or {}),
            "report": report.as_dict(),
        },
    )
    save_manifest(out, manifest)
    return out
