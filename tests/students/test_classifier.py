"""Classifier teachers: fine-tune (a few steps), then distil and stack onto its logits."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    from bertserve.compress.finetune import FinetuneOptions, finetune
    from bertserve.data import RT_LABELS, rotten_tomatoes_splits

    rt = rotten_tomatoes_splits()
    opts = FinetuneOptions(max_steps=2, batch_size=16, max_len=32, progress=False)
    path, report = finetune(None, tmp_path_factory.mktemp("ft") / "teacher", rt["train"].texts[:64],
                            rt["train"].labels[:64], RT_LABELS, opts=opts,
                            eval_texts=rt["validation"].texts[:32], eval_labels=rt["validation"].labels[:32])
    return path, report


def test_finetune_writes_a_classifier_artifact(teacher):
    from bertserve.models import Encoder

    path, report = teacher
    assert report["steps"] == 2 and 0.0 <= report["eval_accuracy"] <= 1.0
    enc = Encoder.load(path, backend="torch")
    assert enc.task == "classify" and enc.labels == ["rotten", "fresh"]
    assert enc.classify(["a wonderful, moving film"])[0].label in enc.labels
    assert not list(path.rglob("*.bin"))


def test_distill_and_stack_a_classifier(teacher, tmp_path, fast_opts):
    from bertserve.compress.distill import distill
    from bertserve.compress.stacking import stack
    from bertserve.data import rotten_tomatoes_splits
    from bertserve.models import Encoder

    rt = rotten_tomatoes_splits()
    texts, ev, labels = rt["train"].texts[100:260], rt["test"].texts[:48], rt["test"].labels[:48]
    path, report = distill(teacher[0], texts, tmp_path / "d", layers=1, opts=fast_opts,
                           eval_texts=ev, eval_labels=labels)
    assert report.quality[0].metric == "accuracy"
    student = Encoder.load(path, backend="torch")
    assert student.task == "classify" and student.labels == ["rotten", "fresh"]
    assert len(student.classify(ev[:5])) == 5

    path, report = stack(teacher[0], texts, tmp_path / "s", students=2, layers=1, opts=fast_opts,
                         eval_texts=ev, eval_labels=labels)
    hyper = json.loads((path / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
    res = hyper["validation_residuals"]
    assert res[1] < res[0]
    assert [q.students for q in report.quality] == [1, 2]
    assert Encoder.load(path, backend="torch").classify(ev[:3], students=1)[0].label in ("rotten", "fresh")
