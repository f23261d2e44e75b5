"""What a student learns from: the training options, the teacher and its transfer set.

:func:`setup` reads the teacher (and the checkpoint students start from); :func:`transfer_set`
tokenises the transfer texts (a reranker's: (query, passage) pairs) with the student's tokenizer
and attaches the teacher's cached head outputs (a reranker's scores), the targets;
:func:`training_targets` mixes the true labels into a classifier's targets (``label_weight``).
Shared by :mod:`.distill`, :mod:`.stacking` and :mod:`.students`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import Manifest, load_manifest, resolve
from ..errors import ConfigError
from ..tokenizer import TextTokenizer
from .teacher import teacher_outputs


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
    type_starts: list[int] | None = None  # pairs: where each row's second text starts (token type 1)
    groups: list[int] | None = None  # held-out ranking: candidates per query (rows query by query)

    def subset(self, rows: np.ndarray | list[int]) -> Transfer:
        """Some rows (no longer whole queries: ``groups`` is dropped)."""
        labels = [self.labels[i] for i in rows] if self.labels is not None else None
        starts = [self.type_starts[i] for i in rows] if self.type_starts is not None else None
        return Transfer([self.ids[i] for i in rows], self.targets[rows], labels, starts)

    def with_targets(self, targets: np.ndarray) -> Transfer:
        """The same inputs with other targets (a residual, blended labels)."""
        return Transfer(self.ids, targets, self.labels, self.type_starts, self.groups)


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
    return data.with_targets(blend_labels(data.targets, data.labels, opts.label_weight, opts.temperature))


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
    pairs: bool = False  # the teacher reads (text, pair): so do its students


def setup(teacher: str | Path | None, init_from: str | Path | None) -> Setup:
    tdir, tman = load_manifest(teacher)
    if tman.architecture != "hf-encoder" or tman.backend != "torch":
        raise ConfigError("the teacher must be a torch Hugging Face checkpoint or artifact")
    idir, iman = load_manifest(init_from if init_from is not None else tdir)
    init_weights = resolve(idir / iman.weights)
    tok = TextTokenizer(idir / iman.tokenizer, tman.max_seq_length)
    dim = len(tman.labels) if tman.task == "classify" and tman.labels else int(tman.output_dim or 0)
    return Setup(tdir, tman, init_weights, idir, iman, tok, tman.task, dim, tman.pairs)


def transfer_set(s: Setup, texts: list[str], opts: TrainOptions, labels: list[int] | None = None,
                 pairs: list[str] | None = None, groups: list[int] | None = None) -> Transfer:
    """Tokenise with the student's tokenizer (cut at max_len) and attach cached teacher outputs.

    A pair teacher (a reranker) takes ``pairs``, one second text per text: rows are the pairs
    ``[CLS] text [SEP] pair [SEP]``, cut longest-first, and carry where their token type 1 starts.
    Held-out ranking data also gives ``groups`` (candidates per query) and ``labels`` (relevance).
    """
    if groups is not None and sum(groups) != len(texts):
        raise ConfigError(f"groups of {sum(groups)} candidates for {len(texts)} pairs")
    if labels is not None and len(labels) != len(texts):
        raise ConfigError(f"{len(labels)} labels for {len(texts)} texts")
    if (pairs is not None) != s.pairs:
        raise ConfigError("a reranker's students learn from (query, passage) pairs: pass pairs"
                          if s.pairs else f"{s.teacher.name} reads single texts, not pairs")
    targets = teacher_outputs(s.teacher_dir, texts, max_len=opts.max_len, backend=opts.teacher_backend,
                              pairs=pairs)
    s.tokenizer.max_length = opts.max_len
    tok = s.tokenizer.encode(texts, pairs=pairs)
    s.tokenizer.max_length = s.teacher.max_seq_length
    return Transfer(tok.ids, targets, labels, tok.type_starts, list(groups) if groups is not None else None)
