"""Teachers and students: ``finetune``, ``distill`` and ``stack`` (student parallelism)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .options import ThreadsOpt, check_device, positive

if TYPE_CHECKING:
    from ..artifact import Manifest
    from ..compress.texts import TransferTexts

out = Console()

TeacherOpt = Annotated[
    str | None,
    typer.Option("--teacher", "-t", help="Teacher artifact or HF checkpoint (default: bundled MiniLM)."),
]
OutArg = Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the new artifact.")]
CorpusOpt = Annotated[
    str | None,
    typer.Option(
        help="Transfer texts: tweets (the default) | reviews | news | a UTF-8 file, one text a "
        "line | a .tsv file of label<TAB>text lines (labels for --label-weight); join sources with + "
        "(reviews+tweets: an equal share of each, interleaved). A reranker "
        "teacher: news (the default: (headline, passage) pairs of the news ranking train split) "
        "| a .tsv file of query<TAB>passage lines."
    ),
]
LimitOpt = Annotated[int, typer.Option("--n", min=1, help="Use at most this many transfer texts (pairs).")]
EvalOpt = Annotated[int, typer.Option(
    min=0, help="Held-out texts for the quality report (a reranker: held-out news queries, 30 "
    "candidates each, MRR@10; 0: none).")]
EpochsOpt = Annotated[float, typer.Option(min=0.01, help="Passes over the transfer texts.")]
LrOpt = Annotated[float, typer.Option(help="AdamW learning rate.", callback=positive)]
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
    float | None, typer.Option(help="Learning rate of the refit (default: --lr).", callback=positive)
]
PrefixWeightOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        help="Refit: weight of the shorter prefixes' loss next to the whole ensemble's "
        "(keeps the models served under pruning good; 0: the whole ensemble only).",
    ),
]
LabelWeightOpt = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Classifiers: weight of the true label next to the teacher's soft targets, for "
        "transfer texts that have one (--corpus reviews or a .tsv; stack: in the refit).",
    ),
]
TrainDeviceOpt = Annotated[
    str,
    typer.Option("--device", help="Train on: auto (CUDA when present) | cpu | cuda | cuda:N.",
                 callback=check_device),
]
TrainPrecisionOpt = Annotated[
    Literal["auto", "fp32", "bf16"],
    typer.Option(
        "--train-precision",
        help="auto (bf16 autocast where the CPU/GPU multiplies bf16 natively) | fp32 | bf16.",
    ),
]


def _texts(corpus: str | None, n: int, eval_n: int, manifest: Manifest) -> TransferTexts:
    from ..compress.texts import transfer_texts

    return transfer_texts(corpus, n, eval_n, manifest)


def _augmented(
    data: TransferTexts, copies: int, teacher: str | None, init_from: str | None
) -> TransferTexts:
    """``data`` with ``copies`` distorted copies of each transfer text (copies carry no label)."""
    from ..compress.texts import augmented

    more = augmented(data, copies, teacher, init_from)
    if copies:
        added = len(more.texts) - len(data.texts)
        out.print(f"transfer texts: {len(data.texts):,} + {added:,} augmented copies")
    return more


def _options(
    epochs, lr, max_len, temperature, hidden_weight, threads, max_steps, device, precision, init_layers,
    label_weight=0.0,
):
    from ..compress.transfer import TrainOptions

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
        label_weight=label_weight,
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
    if report.teacher and report.teacher.metric.startswith("mrr") and report.quality:
        share = report.quality[-1].value / report.teacher.value if report.teacher.value else float("nan")
        out.print(f"students' MRR@10 is {share:.1%} of the teacher's")
    out.print(table)
    out.print(f"[green]wrote[/green] {path} in {report.seconds:.0f} s")


@app.command()
def finetune(
    out_dir: OutArg,
    base: Annotated[
        str | None, typer.Option("--base", help="Checkpoint to fine-tune (default: bundled).")
    ] = None,
    task: Annotated[Literal["classify", "rerank"], typer.Option(
        help="classify: a text classifier | rerank: a cross-encoder scoring (query, passage) pairs, "
        "trained listwise on the news ranking split (headline → its article's lead among 7 other leads), "
        "reported as MRR@10 / nDCG@10 on held-out headlines.")] = "classify",
    data: Annotated[str | None, typer.Option(
        help="classify: rotten-tomatoes (the default) or a TSV file, label<TAB>text per line | "
        "rerank: news (the default).")] = None,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the training texts.")] = 1.0,
    lr: LrOpt = 5e-5,
    max_len: MaxLenOpt = 128,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Texts (rerank: pairs, whole queries of 8) per step.")] = 32,
    loss: Annotated[Literal["listwise", "bce"], typer.Option(
        help="rerank: listwise (softmax cross-entropy over a query's candidates) | bce (per pair).")]
    = "listwise",
    eval_queries: Annotated[int | None, typer.Option(
        min=1, help="rerank: held-out queries scored for the report (default: all 300).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the head's initial weights and the batches.")] = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Fine-tune a checkpoint into a classifier or reranker artifact (a teacher for distill/stack)."""
    from ..errors import ConfigError

    if task == "rerank":
        from ..compress.finetune import RerankOptions, finetune_rerank
        from ..data import ranking_splits

        if data not in (None, "news"):
            raise ConfigError(f"finetune --task rerank trains on --data news (the news ranking split), "
                              f"not {data!r}")
        splits = ranking_splits()
        ropts = RerankOptions(epochs=epochs, lr=lr, max_len=max_len, max_steps=max_steps, threads=threads,
                              batch_size=batch_size, loss=loss, eval_queries=eval_queries, seed=seed)
        path, report = finetune_rerank(base, out_dir, splits["train"], opts=ropts, eval_split=splits["test"])
        out.print(f"[green]wrote[/green] {path}: {report}")
        return

    from ..compress.finetune import FinetuneOptions
    from ..compress.finetune import finetune as run
    from ..data import RT_LABELS, labelled_file, rotten_tomatoes_splits

    if data in (None, "rotten-tomatoes"):
        rt = rotten_tomatoes_splits()
        texts, labels, names = rt["train"].texts, rt["train"].labels, RT_LABELS
        ev_texts, ev_labels = rt["validation"].texts, rt["validation"].labels
    else:
        split, names = labelled_file(data)
        texts, labels = split.texts, split.labels
        ev_texts, ev_labels = None, None
    opts = FinetuneOptions(epochs=epochs, lr=lr, max_len=max_len, max_steps=max_steps, threads=threads,
                           batch_size=batch_size, seed=seed)
    path, report = run(
        base, out_dir, texts, labels, names, opts=opts, eval_texts=ev_texts, eval_labels=ev_labels
    )
    out.print(f"[green]wrote[/green] {path}: {report}")


@app.command()
def distill(
    out_dir: OutArg,
    teacher: TeacherOpt = None,
    layers: Annotated[int, typer.Option(min=1, help="Student depth.")] = 2,
    corpus: CorpusOpt = None,
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 2e-4,
    max_len: MaxLenOpt = 64,
    temperature: Annotated[float, typer.Option(help="Soft-target temperature (classifiers).",
                                               callback=positive)] = 2.0,
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Weight of hidden-state matching (0: off).")]
    = 0.0,
    init_from: InitOpt = None,
    init_layers: InitLayersOpt = "spread",
    augment: AugmentOpt = 0,
    label_weight: LabelWeightOpt = 0.0,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Distil the teacher into one shallow student trained on transfer texts."""
    from ..artifact import load_manifest
    from ..compress.distill import distill as run

    _, manifest = load_manifest(teacher)
    data = _augmented(_texts(corpus, n, eval_n, manifest), augment, teacher, init_from)
    opts = _options(
        epochs, lr, max_len, temperature, hidden_weight, threads, max_steps, device, train_precision,
        init_layers, label_weight,
    )
    path, report = run(
        teacher,
        data.texts,
        out_dir,
        layers=layers,
        opts=opts,
        init_from=init_from,
        eval_texts=data.eval_texts or None,
        eval_labels=data.eval_labels,
        labels=data.labels,
        **data.pair_kwargs(),
        groups=data.groups,
    )
    _print_report(report, path)


@app.command()
def stack(
    out_dir: OutArg,
    teacher: TeacherOpt = None,
    students: Annotated[int, typer.Option("--students", "-k", min=1, help="Number of students K.")] = 3,
    layers: Annotated[int, typer.Option("--layers", "-l", min=1, help="Layers per student L.")] = 1,
    corpus: CorpusOpt = None,
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 2e-4,
    max_len: MaxLenOpt = 64,
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Virtual-stacking loss weight (L ≥ 2).")]
    = 0.1,
    init_from: InitOpt = None,
    init_layers: Annotated[
        str, typer.Option(help="Layers the first student starts from (as for distill).")
    ] = "spread",
    augment: AugmentOpt = 0,
    refit_epochs: RefitEpochsOpt = 0.0,
    refit_lr: RefitLrOpt = None,
    prefix_weight: PrefixWeightOpt = 0.5,
    label_weight: LabelWeightOpt = 0.0,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop each student after this many steps.")]
    = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Stacking distillation + boosting: K shallow students that run in parallel and add up."""
    from ..artifact import load_manifest
    from ..compress.refit import RefitOptions
    from ..compress.stacking import stack as run

    _, manifest = load_manifest(teacher)
    data = _augmented(_texts(corpus, n, eval_n, manifest), augment, teacher, init_from)
    opts = _options(
        epochs, lr, max_len, 2.0, hidden_weight, threads, max_steps, device, train_precision, init_layers,
        label_weight,
    )
    path, report = run(
        teacher,
        data.texts,
        out_dir,
        students=students,
        layers=layers,
        opts=opts,
        init_from=init_from,
        eval_texts=data.eval_texts or None,
        eval_labels=data.eval_labels,
        refit_opts=RefitOptions(refit_epochs, refit_lr, prefix_weight),
        labels=data.labels,
        **data.pair_kwargs(),
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
    corpus: CorpusOpt = None,
    n: LimitOpt = 4000,
    eval_n: EvalOpt = 500,
    epochs: EpochsOpt = 1.0,
    lr: LrOpt = 3e-4,
    max_len: MaxLenOpt = 64,
    prefix_weight: PrefixWeightOpt = 0.5,
    augment: AugmentOpt = 0,
    label_weight: LabelWeightOpt = 0.0,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many steps.")] = None,
    threads: ThreadsOpt = None,
    device: TrainDeviceOpt = "auto",
    train_precision: TrainPrecisionOpt = "auto",
) -> None:
    """Train a boosted stack's students together (α fixed): boosting's totally corrective step."""
    from ..artifact import load_manifest
    from ..compress.refit import RefitOptions, refit_artifact

    folder, manifest = load_manifest(stack_dir)
    prov = manifest.provenance or {}
    teacher = teacher or prov.get("teacher")
    data = _augmented(_texts(corpus, n, eval_n, manifest), augment, teacher, prov.get("init_from"))
    opts = _options(
        epochs, lr, max_len, 2.0, 0.0, threads, max_steps, device, train_precision, "spread", label_weight
    )
    path, report, before = refit_artifact(
        folder,
        data.texts,
        out_dir,
        teacher=teacher,
        students=students,
        opts=opts,
        refit_opts=RefitOptions(epochs, lr, prefix_weight),
        eval_texts=data.eval_texts or None,
        eval_labels=data.eval_labels,
        labels=data.labels,
        **data.pair_kwargs(),
    )
    for q in before:
        out.print(
            f"before the refit, {q.students} student(s): {q.metric} {q.value:.4f}, "
            f"residual {q.residual:.4f}"
        )
    _print_report(report, path)
