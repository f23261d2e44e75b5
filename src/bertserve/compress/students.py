"""Student-ensemble tools shared by :mod:`.distill` and :mod:`.stacking`.

New students started from teacher layers (:func:`new_students`), a closed-form head
(:func:`fit_head`), their outputs (:func:`predict`), their quality against the teacher
(:func:`quality`), training with a distillation loss (:func:`train`, on the one loop of
:mod:`.training`) and the artifact they are saved as (:func:`write_artifact`). Students of a
reranker read (query, passage) pairs: every forward gets their token type ids.
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
from .batching import batches, epochs, pad_pairs
from .teacher import init_student, pick_layers, student_config
from .training import autocast, autocast_dtype, fit, planned_steps, recent_loss, seed_torch
from .transfer import Setup, TrainOptions, Transfer


@dataclass(slots=True)
class Quality:
    students: int
    metric: str  # accuracy | cosine | mrr@10 | pearson
    value: float
    agreement: float | None = None  # classifier: share of argmax equal to the teacher's; reranker:
    # share of queries whose top passage is the teacher's
    residual: float = 0.0  # mean squared error to the teacher's head output
    ndcg: float | None = None  # reranker on held-out queries: nDCG@10


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
    type_starts: list[int] | None = None,
) -> np.ndarray:
    """Unscaled student outputs (m, N, D), or pooled features (m, N, H) when ``pooled``.

    Pairs (a reranker's students) pass ``type_starts`` (``Transfer.type_starts``).
    """
    model.eval()
    device = model.head_w.device
    hi = model.num_students if hi is None else hi
    width = model.cfg.hidden_size if pooled else model.cfg.output_dim
    out = np.empty((hi - lo, len(ids), width), dtype=np.float32)
    for group in batches([len(x) for x in ids], batch_size, None):
        t_ids, t_mask, t_types = batch_tensors(ids, type_starts, group, device)
        if pooled:
            last = model.hidden(t_ids, t_mask, lo, hi, t_types)[-1]
            m, b, t, h = last.shape
            mask = t_mask.unsqueeze(0).expand(m, b, t).unsqueeze(-1).float()
            res = (last * mask).sum(2) / mask.sum(2).clamp(min=1e-9)  # (m, B, H)
        else:
            res = model.student_outputs(t_ids, t_mask, lo, hi, t_types)
        out[:, group] = res.float().cpu().numpy()
    return out


def batch_tensors(
    ids: list[list[int]], type_starts: list[int] | None, group: list[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Padded ids, mask and (pairs) token type ids of the rows ``group``, on ``device``."""
    starts = None if type_starts is None else [type_starts[i] for i in group]
    t_ids, t_mask, t_types = pad_pairs([ids[i] for i in group], starts)
    return t_ids.to(device), t_mask.to(device), None if t_types is None else t_types.to(device)


def fit_head(
    model: StudentEnsemble, k: int, ids: list[list[int]], target: np.ndarray, ridge: float, limit: int = 3000,
    type_starts: list[int] | None = None,
) -> None:
    """Least-squares head of student k onto ``target`` from its current pooled features."""
    if model.cfg.pooling != "mean":
        return  # only mean-pooled students (all that bertserve builds) get a closed-form head
    sel = ids[:limit]
    starts = type_starts[:limit] if type_starts is not None else None
    x = predict(model, sel, lo=k, hi=k + 1, pooled=True, type_starts=starts)[0]  # (N, H)
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
    the training device; for pairs (``data.type_starts``) also ``types=`` the token type ids.
    Pairs grouped by query (``data.groups``) train whole queries per batch (``batch_size``
    pairs, rounded down to whole queries) and the loss also gets ``groups=``, the sizes of the
    batch's queries in row order. The model stays on the device afterwards (``predict``
    follows it). The students' forward runs under ``opts.precision``'s autocast, the loss in fp32.
    """
    seed_torch(opts.seed, opts.threads)
    device = pick_device(opts.device)
    cast = autocast_dtype(device, opts.precision)
    model.to(device)
    model.embeddings.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith("embeddings.")]
    lengths = [len(x) for x in data.ids]
    grouped = data.groups is not None and data.type_starts is not None
    if grouped:
        first = np.cumsum([0, *data.groups])
        rows_of = [list(range(first[g], first[g + 1])) for g in range(len(data.groups))]
        group_len = [max(lengths[i] for i in r) for r in rows_of]
        per = max(1, opts.batch_size // max(data.groups))
        total = planned_steps(len(batches(group_len, per, None)), opts.epochs, opts.max_steps)
        stream = ([(rows_of[g], len(rows_of[g])) for g in b] for b in epochs(group_len, per, opts.seed))
    else:
        total = planned_steps(len(batches(lengths, opts.batch_size, None)), opts.epochs, opts.max_steps)
        stream = epochs(lengths, opts.batch_size, opts.seed)

    def step_loss(batch: list) -> torch.Tensor:
        sizes = [n for _, n in batch] if grouped else None
        group = [i for rows, _ in batch for i in rows] if grouped else batch
        ids, mask, types = batch_tensors(data.ids, data.type_starts, group, device)
        with autocast(device, cast):
            states = model.hidden(ids, mask, 0, model.num_students, types)
            outs = model.head(states[-1], mask, 0, model.num_students)  # (1, B, D)
        target = torch.from_numpy(data.targets[group]).to(device)
        if types is None:  # single texts: the five arguments loss functions have always had
            return loss_fn(outs.float(), target, states, ids, mask)
        if sizes is None:
            return loss_fn(outs.float(), target, states, ids, mask, types=types)
        return loss_fn(outs.float(), target, states, ids, mask, types=types, groups=sizes)

    model.train()
    losses = fit(params, stream, step_loss, total, lr=opts.lr, desc=desc, progress=opts.progress)
    model.eval()
    return recent_loss(losses)


def quality(
    task: str, combined: np.ndarray, teacher: np.ndarray, labels: list[int] | None, students: int,
    groups: list[int] | None = None,
) -> Quality:
    """Accuracy (classifier) or mean cosine to the teacher (embedder) of outputs (N, D).

    A reranker's scores (N, 1) on held-out queries (``groups``: candidates per query, ``labels``:
    relevance): MRR@10 and nDCG@10, and the share of queries whose top passage is the teacher's;
    on pairs without queries, the Pearson correlation of the scores with the teacher's.
    """
    residual = float(((teacher - combined) ** 2).sum(-1).mean())
    if task == "rerank":
        return rerank_quality(combined[:, 0], teacher[:, 0], labels, groups, students, residual)
    if task == "classify":
        pred = combined.argmax(-1)
        agree = float((pred == teacher.argmax(-1)).mean())
        acc = float((pred == np.asarray(labels)).mean()) if labels is not None else agree
        return Quality(students, "accuracy", acc, agree, residual)
    a = combined / np.linalg.norm(combined, axis=-1, keepdims=True).clip(1e-9)
    b = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True).clip(1e-9)
    return Quality(students, "cosine", float((a * b).sum(-1).mean()), None, residual)


def rerank_quality(
    scores: np.ndarray, teacher: np.ndarray, labels: list[int] | None, groups: list[int] | None,
    students: int, residual: float,
) -> Quality:
    from .ranking import mrr_at_k, ndcg_at_k, split_groups

    if labels is None or groups is None:
        ok = scores.std() > 0 and teacher.std() > 0
        r = float(np.corrcoef(scores, teacher)[0, 1]) if ok else 0.0
        return Quality(students, "pearson", r, None, residual)
    s, t = split_groups(scores, groups), split_groups(teacher, groups)
    y = split_groups(np.asarray(labels), groups)
    top = float(np.mean([a.argmax() == b.argmax() for a, b in zip(s, t, strict=True)]))
    return Quality(students, "mrr@10", mrr_at_k(s, y), top, residual, ndcg_at_k(s, y))


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
        pairs=s.pairs,
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
