"""Teachers and students: ``finetune``, ``distill`` and ``stack`` (student parallelism)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import ThreadsOpt

out = Console()

TeacherOpt = Annotated[
    str | None,
    typer.Option("--teacher", "-t", help="Teacher artifact or HF checkpoint (default: bundled MiniLM)."),
]
OutArg = Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the new artifact.")]
CorpusOpt = Annotated[
    str, typer.Option(help="Transfer texts: tweets | reviews | news | a UTF-8 file, one text a line.")
]
LimitOpt = Annotated[int, typer.Option("--n", min=1, help="Use at most this many transfer texts.")]
EvalOpt = Annotated[int, typer.Option(min=0, help="Held-out texts for the quality report (0: none).")]
EpochsOpt = Annotated[float, typer.Option(min=0.01, help="Passes over the transfer texts.")]
LrOpt = Annotated[float, typer.Option(help="AdamW learning rate.")]
MaxLenOpt = Annotated[int, typer.Option(min=8, help="Truncate training texts to this many tokens.")]
InitOpt = Annotated[
    str | None,
    typer.Option(
        help="BERT checkpoint the students start from (default: the teacher; e.g. MiniLM for mpnet)."
    ),
]

InitLayersOpt = Annotated[
    str,
    typer.Option(
        help="Checkpoint layers a student starts from: spread (first to last; one layer: the "
        "last) | bottom | top | indices like 0,5."
    ),
]
AugmentOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="Add this many distorted copies of each transfer text (masked / swapped words, "
        "n-grams; the teacher labels them): more inputs when labelled texts are few.",
    ),
]
RefitEpochsOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="After boosting, train all students together for this many passes (0: no refit).",
    ),
]
RefitLrOpt = Annotated[
    float | None, typer.Option(help="Learning rate of the refit (default: --lr).")
]
PrefixWeightOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Refit: weight of the shorter prefixes' loss next to the whole ensemble's "
        "(keeps the models served under pruning good; 0: the whole ensemble only).",
    ),
]
TrainDeviceOpt = Annotated[
    str, typer.Option("--device", help="Train on: auto (CUDA when present) | cpu | cuda.")
]
TrainPrecisionOpt = Annotated[
    str,
    typer.Option(
        "--train-precision",
        help="auto (bf16 autocast where the CPU/GPU multiplies bf16 natively) | fp32 | bf16.",
    ),
]


def _texts(corpus: str, n: int, eval_n: int, task: str) -> tuple[list[str], list[str], list[int] | None]:
    """(transfer texts, held-out texts, held-out labels): the classifier's are the RT test split."""
    from ..data import corpus as load_corpus
    from ..data import rotten_tomatoes_splits

    if task == "classify":
        rt = rotten_tomatoes_splits()
        texts = rt["train"].texts if corpus == "reviews" else load_corpus(corpus)
        return texts[:n], rt["test"].texts[:eval_n], rt["test"].labels[:eval_n]
    texts = load_corpus(corpus)
    if eval_n and len(texts) > n + eval_n:
        return texts[:n], texts[-eval_n:], None
    return texts[:n], [], None


def _augmented(texts: list[str], copies: int, teacher: str | None, init_from: str | None) -> list[str]:
    if not copies:
        return texts
    from ..compress.augment import augment, options_for

    more = augment(texts, options_for(copies, teacher, init_from))
    out.print(f"transfer texts: {len(texts):,} + {len(more) - len(texts):,} augmented copies")
    return more


def _options(
    epochs, lr, max_len, temperature, hidden_weight, threads, max_steps, device, precision, init_layers
):
    from ..compress.distill import TrainOptions

    return TrainOptions(
        epochs=epochs,
        lr=lr,
        max_len=max_len,
        temperature=temperature,
        hidden_weight=hidden_weight,
        threads=threads,
        max_steps=max_steps,
        device=device,
        precision=precision,
        init_layers=init_layers,
    )


def _print_report(report, path: Path) -> None:
    table = Table(title=f"quality on held-out texts ({path})")
    table.add_column("students")
    table.add_column("metric")
    table.add_column("value")
    table.add_column("residual ||T − F||²")
    if report.teacher:
        table.add_row("teacher", report.teacher.metric, f"{report.teacher.value:.4f}", "0")
    for q in report.quality:
        table.add_row(str(q.students), q.metric, f"{q.value:.4f}", f"{q.residual:.4f}")
    out.print(table)
    out.print(f"[green]wrote[/green] {path} in {report.seconds:.0f} s")


@app.command()
def finetune(
    out_dir: OutArg,
    base: Annotated[
        str | None, typer.Option("--base", help="Checkpoint to fine-tune (default: bundled).")
    ] = None,
    data: Annotated[str, typer.Option(help="rotten-tomatoes, or a TSV file: label<TAB>text per line.")] = (
        "rotten-tomatoes"
    ),
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 5e-5,
    max_len: MaxLenOpt = 128,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Fine-tune a checkpoint into a classifier artifact (a teacher for distill/stack)."""
    from ..compress.finetune import FinetuneOptions
    from ..compress.finetune import finetune as run
    from ..data import RT_LABELS, rotten_tomatoes_splits
    from ..errors import ConfigError

    if data == "rotten-tomatoes":
        rt = rotten_tomatoes_splits()
        texts, labels, names = rt["train"].texts, rt["train"].labels, RT_LABELS
        ev_texts, ev_labels = rt["validation"].texts, rt["validation"].labels
    else:
        rows = [
            line.split("\t", 1)
            for line in Path(data).read_text(encoding="utf-8").splitlines()
            if "\t" in line
        ]
        if not rows:
            raise ConfigError(f"{data}: expected lines 'label<TAB>text'")
        names = sorted({r[0] for r in rows})
        texts, labels = [r[1] for r in rows], [names.index(r[0]) for r in rows]
        ev_texts, ev_labels = None, None
    opts = FinetuneOptions(epochs=epochs, lr=lr, max_len=max_len, max_steps=max_steps, threads=threads)
    path, report = run(
        base, out_dir, texts, labels, names, opts=opts, eval_texts=ev_texts, eval_labels=ev_labels
    )
    out.print(f"[green]wrote[/green] {path}: {report}")


@app.command()
def distill(
    out_dir: OutArg,
    teacher: TeacherOpt = None,
    layers: Annotated[int, typer.Option(min=1, help="Student depth.")] = 2,
    corpus: CorpusOpt = "tweets",
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 2e-4,
    max_len: MaxLenOpt = 64,
    temperature: Annotated[float, typer.Option(help="Soft-target temperature (classifiers).")] = 2.0,
    hidden_weight: Annotated[float, typer.Option(help="Weight of hidden-state matching (0: off).")] = 0.0,
    init_from: InitOpt = None,
    init_layers: InitLayersOpt = "spread",
    augment: AugmentOpt = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Distil the teacher into one shallow student trained on unlabeled transfer texts."""
    from ..artifact import load_manifest
    from ..compress.distill import distill as run

    _, manifest = load_manifest(teacher)
    texts, ev, ev_labels = _texts(corpus, n, eval_n, manifest.task)
    texts = _augmented(texts, augment, teacher, init_from)
    opts = _options(
        epochs, lr, max_len, temperature, hidden_weight, threads, max_steps, device, train_precision,
        init_layers,
    )
    path, report = run(
        teacher,
        texts,
        out_dir,
        layers=layers,
        opts=opts,
        init_from=init_from,
        eval_texts=ev or None,
        eval_labels=ev_labels,
    )
    _print_report(report, path)


@app.command()
def stack(
    out_dir: OutArg,
    teacher: TeacherOpt = None,
    students: Annotated[int, typer.Option("--students", "-k", min=1, help="Number of students K.")] = 3,
    layers: Annotated[int, typer.Option("--layers", "-l", min=1, help="Layers per student L.")] = 1,
    corpus: CorpusOpt = "tweets",
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 2e-4,
    max_len: MaxLenOpt = 64,
    hidden_weight: Annotated[float, typer.Option(help="Weight of the virtual-stacking loss (L ≥ 2).")] = 0.1,
    init_from: InitOpt = None,
    init_layers: Annotated[
        str, typer.Option(help="Layers the first student starts from (as for distill).")
    ] = "spread",
    augment: AugmentOpt = 0,
    refit_epochs: RefitEpochsOpt = 0.0,
    refit_lr: RefitLrOpt = None,
    prefix_weight: PrefixWeightOpt = 0.5,
    max_steps: Annotated[int | None, typer.Option(help="Stop each student after this many steps.")] = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Stacking distillation + boosting: K shallow students that run in parallel and add up."""
    from ..artifact import load_manifest
    from ..compress.stacking import RefitOptions
    from ..compress.stacking import stack as run

    _, manifest = load_manifest(teacher)
    texts, ev, ev_labels = _texts(corpus, n, eval_n, manifest.task)
    texts = _augmented(texts, augment, teacher, init_from)
    opts = _options(
        epochs, lr, max_len, 2.0, hidden_weight, threads, max_steps, device, train_precision, init_layers
    )
    path, report = run(
        teacher,
        texts,
        out_dir,
        students=students,
        layers=layers,
        opts=opts,
        init_from=init_from,
        eval_texts=ev or None,
        eval_labels=ev_labels,
        refit_opts=RefitOptions(refit_epochs, refit_lr, prefix_weight),
    )
    _print_report(report, path)


@app.command()
def refit(
    stack_dir: Annotated[Path, typer.Argument(metavar="STACK", help="A stack artifact (bertserve stack).")],
    out_dir: OutArg,
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", "-t", help="Teacher artifact (default: the one the stack names)."),
    ] = None,
    students: Annotated[
        int | None, typer.Option("--students", "-k", min=1, help="Refit the first K students only.")
    ] = None,
    corpus: CorpusOpt = "tweets",
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 3e-4,
    max_len: MaxLenOpt = 64,
    prefix_weight: PrefixWeightOpt = 0.5,
    augment: AugmentOpt = 0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Train a boosted stack's students together (α fixed): boosting's totally corrective step."""
    from ..artifact import load_manifest
    from ..compress.stacking import RefitOptions, refit_artifact

    folder, manifest = load_manifest(stack_dir)
    prov = manifest.provenance or {}
    teacher = teacher or prov.get("teacher")
    texts, ev, ev_labels = _texts(corpus, n, eval_n, manifest.task)
    texts = _augmented(texts, augment, teacher, prov.get("init_from"))
    opts = _options(epochs, lr, max_len, 2.0, 0.0, threads, max_steps, device, train_precision, "spread")
    path, report, before = refit_artifact(
        folder,
        texts,
        out_dir,
        teacher=teacher,
        students=students,
        opts=opts,
        refit_opts=RefitOptions(epochs, lr, prefix_weight),
        eval_texts=ev or None,
        eval_labels=ev_labels,
    )
    for q in before:
        out.print(
            f"before the refit, {q.students} student(s): {q.metric} {q.value:.4f}, "
            f"residual {q.residual:.4f}"
        )
    _print_report(report, path)
