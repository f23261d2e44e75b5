"""Knowledge distillation of a teacher into one shallow student (``bertserve distill``).

The student is a 1-student :class:`~bertserve.models.ensemble.StudentEnsemble`: the teacher's
(or ``init_from``'s) frozen embeddings plus N of its layers, and a linear head fitted by ridge
regression before training (a good start makes a few steps count). Losses: soft targets with a
temperature for classifiers, MSE + (1 − cosine) on the embedding for embedders, and optionally
MSE between the student's last hidden states and the teacher's (same tokenizer only).
The loop here is shared with :mod:`.stacking`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..artifact import Manifest, StudentEntry, copy_tokenizer, load_manifest, resolve, save_manifest
from ..errors import ConfigError
from ..models.ensemble import StudentConfig, StudentEnsemble, save_ensemble
from ..tokenizer import TextTokenizer
from .teacher import init_student, pick_layers, student_config, teacher_outputs


@dataclass(slots=True)
class TrainOptions:
    """Training knobs. Defaults suit 2 CPU cores: short texts, one pass, a mid-size step."""

    epochs: float = 1.0
    max_steps: int | None = None  # cap (tests train a few steps only)
    batch_size: int = 32
    lr: float = 1e-4
    max_len: int = 128  # training truncation; serving keeps the teacher's limit
    temperature: float = 2.0  # classifier soft targets
    label_weight: float = 0.0  # classifier: weight of the hard label next to the soft targets
    hidden_weight: float = 0.0  # hidden-state matching (distill) / virtual stacking (stack)
    ridge: float = 1e-3  # head initialisation by ridge regression (times N); 1e-1 underfits
    threads: int | None = None  # torch threads; 1 is faster on a contended machine
    val_fraction: float = 0.1  # stack: transfer texts kept aside to choose each α
    teacher_backend: str = "onnxruntime"  # for the teacher outputs (torch skips an export)
    init_layers: str = "spread"  # spread | bottom | top | "0,5": teacher layers a student starts from
    device: str = "auto"  # auto: CUDA when present, else CPU
    precision: str = "auto"  # auto | fp32 | bf16: autocast of the student's matmuls while training
    seed: int = 0
    progress: bool = True


@dataclass(slots=True)
class Transfer:
    """Tokenised transfer texts with the teacher's head outputs (targets) for each."""

    ids: list[list[int]]
    targets: np.ndarray  # (N, D) float32
    labels: list[int] | None = None  # classifier: the true label of each text, −1 where unknown

    def subset(self, rows: np.ndarray | list[int]) -> Transfer:
        labels = [self.labels[i] for i in rows] if self.labels is not None else None
        return Transfer([self.ids[i] for i in rows], self.targets[rows], labels)


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


def train_device(opts: TrainOptions) -> torch.device:
    if opts.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if opts.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {opts.device!r} asked for, but torch sees no CUDA device")
    return torch.device(opts.device)


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


def pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def batches(lengths: list[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of similar length (little padding); shuffled when ``rng`` is given."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
    chunk = batch_size * 50
    out: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lengths.__getitem__)
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    if rng is not None:
        rng.shuffle(out)
    return out


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


def planned_steps(batches_per_epoch: int, opts: TrainOptions) -> int:
    """Optimiser steps ``train`` takes: ``opts.epochs`` passes, capped by ``opts.max_steps``."""
    total = math.ceil(batches_per_epoch * opts.epochs)
    return total if opts.max_steps is None else min(total, opts.max_steps)


def train(model: StudentEnsemble, data: Transfer, loss_fn: LossFn, opts: TrainOptions, desc: str) -> float:
    """Train every student of ``model`` except its frozen embeddings; return the last mean loss.

    ``loss_fn(outputs (1, B, D), targets (B, D), hidden states per layer, ids, mask)``, all on
    the training device; the model stays there afterwards (``predict`` follows it).
    """
    torch.manual_seed(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = train_device(opts)
    cast = autocast_dtype(device, opts.precision)
    model.to(device)
    rng = random.Random(opts.seed)
    model.embeddings.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if not n.startswith("embeddings.")]
    per_epoch = batches([len(x) for x in data.ids], opts.batch_size, rng)
    total = planned_steps(len(per_epoch), opts)
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 10)) * max(0.0, 1 - s / max(1, total))
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", disable=not opts.progress, leave=False)
    model.train()
    step, recent = 0, []
    while step < total:
        for group in per_epoch:
            if step >= total:
                break
            ids, mask = (t.to(device) for t in pad([data.ids[i] for i in group]))
            with torch.autocast(device.type, dtype=cast or torch.float32, enabled=cast is not None):
                states = model.hidden(ids, mask, 0, model.num_students)
                outs = model.head(states[-1], mask, 0, model.num_students)  # (1, B, D)
            target = torch.from_numpy(data.targets[group]).to(device)
            loss = loss_fn(outs.float(), target, states, ids, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            step += 1
            recent = (recent + [loss.item()])[-50:]
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}")
        per_epoch = batches([len(x) for x in data.ids], opts.batch_size, rng)
    bar.close()
    model.eval()
    return float(np.mean(recent)) if recent else float("nan")


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


def blend_labels(targets: np.ndarray, labels: list[int], weight: float, temperature: float) -> np.ndarray:
    """Teacher logits with the true label mixed in, as logits ``soft_target_loss`` takes.

    A labelled row becomes τ·log((1 − w)·softmax(T/τ) + w·onehot(y)); the soft-target loss to
    that mixture is (1 − w) × the loss to the teacher plus w × the cross-entropy to the label,
    both at temperature τ (Hinton et al. 2015 weigh the two losses the same way). Rows labelled
    −1 (augmented copies, unlabeled texts) keep the teacher's logits.
    """
    if not 0.0 <= weight <= 1.0:
        raise ConfigError(f"label weight must lie in [0, 1], not {weight}")
    y = np.asarray(labels)
    if len(y) != len(targets):
        raise ConfigError(f"{len(y)} labels for {len(targets)} texts")
    if (y >= targets.shape[1]).any():
        raise ConfigError(f"a label past the teacher's {targets.shape[1]} classes")
    rows = np.flatnonzero(y >= 0)
    t = targets[rows].astype(np.float64) / temperature
    p = np.exp(t - t.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mix = (1 - weight) * p + weight * np.eye(targets.shape[1])[y[rows]]
    out = targets.copy()
    out[rows] = (temperature * np.log(mix.clip(1e-7))).astype(targets.dtype)  # w = 1: no log(0)
    return out


def check_labels(task: str, labels: list[int] | None, opts: TrainOptions) -> None:
    """Raise ConfigError unless ``opts.label_weight`` can act: a classifier, some labelled texts."""
    if opts.label_weight == 0:
        return
    if task != "classify":
        raise ConfigError("--label-weight is for classifiers (an embedder's targets have no label)")
    if labels is None or not any(y >= 0 for y in labels):
        raise ConfigError("--label-weight needs labelled transfer texts (e.g. --corpus reviews)")


def training_targets(task: str, data: Transfer, opts: TrainOptions) -> Transfer:
    """``data`` as the task losses train on it: with ``opts.label_weight`` > 0, labels mixed in."""
    check_labels(task, data.labels, opts)
    if opts.label_weight == 0 or data.labels is None:
        return data
    targets = blend_labels(data.targets, data.labels, opts.label_weight, opts.temperature)
    return Transfer(data.ids, targets, data.labels)


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


@dataclass(slots=True)
class Setup:
    """Everything a distillation run derives from the teacher and its arguments."""

    teacher_dir: Path
    teacher: Manifest
    init_dir: Path  # the BERT checkpoint students start from
    init_folder: Path  # its artifact folder (holds the tokenizer)
    init: Manifest
    tokenizer: TextTokenizer
    task: str
    output_dim: int


def setup(teacher: str | Path | None, init_from: str | Path | None) -> Setup:
    tdir, tman = load_manifest(teacher)
    if tman.architecture != "hf-encoder" or tman.backend != "torch":
        raise ConfigError("the teacher must be a torch Hugging Face checkpoint or artifact")
    idir, iman = load_manifest(init_from if init_from is not None else tdir)
    init_weights = resolve(idir / iman.weights)
    tok = TextTokenizer(idir / iman.tokenizer, tman.max_seq_length)
    dim = len(tman.labels) if tman.task == "classify" and tman.labels else int(tman.output_dim or 0)
    return Setup(tdir, tman, init_weights, idir, iman, tok, tman.task, dim)


def transfer_set(s: Setup, texts: list[str], opts: TrainOptions, labels: list[int] | None = None) -> Transfer:
    """Tokenise with the student's tokenizer (cut at max_len) and attach cached teacher outputs."""
    if labels is not None and len(labels) != len(texts):
        raise ConfigError(f"{len(labels)} labels for {len(texts)} texts")
    targets = teacher_outputs(s.teacher_dir, texts, max_len=opts.max_len, backend=opts.teacher_backend)
    s.tokenizer.max_length = opts.max_len
    ids = s.tokenizer.encode(texts).ids
    s.tokenizer.max_length = s.teacher.max_seq_length
    return Transfer(ids, targets, labels)


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
    import json

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
    import time

    start = time.perf_counter()
    s = setup(teacher, init_from)
    data = transfer_set(s, texts, opts, labels)
    model = new_students(s, 1, layers, opts)
    fit_head(model, 0, data.ids, data.targets, opts.ridge)
    teacher_model = _hidden_teacher(s).to(train_device(opts)) if opts.hidden_weight > 0 else None

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
