"""Classifier teachers: fine-tune (a few steps), then distil and stack onto its logits."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):
    from bertserve.compress.finetune import FinetuneOptions, finetune
    from bertserve.data import RT_LABELS, rotten_tomatoes_splits

    rt = rotten_tomatoes_splits()
    # 30 steps (≈ 10 s) are enough to beat always answering the majority label by a clear margin.
    opts = FinetuneOptions(max_steps=30, batch_size=16, max_len=32, lr=4e-4, progress=False)
    held_out = rt["validation"]
    path, report = finetune(None, tmp_path_factory.mktemp("ft") / "teacher", rt["train"].texts[:480],
                            rt["train"].labels[:480], RT_LABELS, opts=opts,
                            eval_texts=held_out.texts[:128], eval_labels=held_out.labels[:128])
    return path, report


def test_finetune_writes_a_classifier_artifact(teacher):
    from bertserve import Encoder
    from bertserve.data import rotten_tomatoes_splits

    path, report = teacher
    held_out = rotten_tomatoes_splits()["validation"].labels[:128]
    majority = max(sum(held_out), len(held_out) - sum(held_out)) / len(held_out)  # chance, here 0.56
    assert report["steps"] == 30 and report["eval_accuracy"] >= majority + 0.05
    enc = Encoder.load(path, backend="torch")
    assert enc.task == "classify" and enc.labels == ["rotten", "fresh"]
    assert enc.classify(["a wonderful, moving film"])[0].label in enc.labels
    assert not list(path.rglob("*.bin"))


def test_distill_and_stack_a_classifier(teacher, tmp_path, fast_opts):
    from bertserve import Encoder
    from bertserve.compress.distill import distill
    from bertserve.compress.stacking import stack
    from bertserve.data import rotten_tomatoes_splits

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


def test_blended_targets_are_the_mixture_of_soft_targets_and_labels():
    import numpy as np

    from bertserve.compress.transfer import blend_labels

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype(np.float32) * 3
    labels = [0, 2, -1, 1, -1, 0]
    tau, w = 2.0, 0.4

    def probs(x):
        e = np.exp(x / tau - (x / tau).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    out = blend_labels(logits, labels, w, tau)
    labelled = [i for i, y in enumerate(labels) if y >= 0]
    want = (1 - w) * probs(logits[labelled]) + w * np.eye(3)[[labels[i] for i in labelled]]
    np.testing.assert_allclose(probs(out[labelled]), want, atol=1e-5)
    np.testing.assert_array_equal(out[[2, 4]], logits[[2, 4]])  # no label: the teacher's logits
    np.testing.assert_allclose(probs(blend_labels(logits, labels, 0.0, tau)), probs(logits), atol=1e-5)
    hard = blend_labels(logits, labels, 1.0, tau)
    assert np.isfinite(hard).all() and (probs(hard[labelled]).argmax(1) == [0, 2, 1, 0]).all()
    from bertserve.errors import ConfigError

    with pytest.raises(ConfigError, match="past the teacher's 3 classes"):
        blend_labels(logits, [0, 3, -1, 1, -1, 0], w, tau)
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\]"):
        blend_labels(logits, labels, 1.5, tau)


def test_label_weight_pulls_the_student_toward_the_labels(teacher, tmp_path, fast_opts):
    """Labels that contradict the teacher move the student their way only when weighted in."""
    from dataclasses import replace

    import numpy as np

    from bertserve import Encoder
    from bertserve.compress.distill import distill
    from bertserve.compress.teacher import teacher_outputs
    from bertserve.data import rotten_tomatoes_splits

    texts = rotten_tomatoes_splits()["train"].texts[300:364]
    flipped = (1 - teacher_outputs(teacher[0], texts, max_len=32, backend="torch").argmax(1)).tolist()
    opts = replace(fast_opts, max_steps=4, lr=1e-3, hidden_weight=0.0)

    def margin(weight: float) -> float:
        """Mean logit of the flipped label minus the other, over the training texts."""
        path, _ = distill(teacher[0], texts, tmp_path / f"w{weight}", layers=1,
                          opts=replace(opts, label_weight=weight), labels=flipped)
        student = Encoder.load(path, backend="torch")
        logits = student.run_ids(student.tokenize(texts).ids)
        y = np.asarray(flipped)
        return float((logits[np.arange(len(y)), y] - logits[np.arange(len(y)), 1 - y]).mean())

    assert margin(0.9) > margin(0.0) + 0.05


def test_label_weight_needs_labelled_classifier_texts(teacher, texts, tmp_path, fast_opts):
    from dataclasses import replace

    import numpy as np

    from bertserve.compress.distill import distill
    from bertserve.compress.stacking import stack
    from bertserve.compress.transfer import Transfer
    from bertserve.errors import ConfigError

    opts = replace(fast_opts, label_weight=0.5)
    some = texts["transfer"][:20]
    with pytest.raises(ConfigError, match="for classifiers"):
        distill(None, some, tmp_path / "e", layers=1, opts=opts, labels=[0] * 20)
    with pytest.raises(ConfigError, match="labelled transfer texts"):
        distill(teacher[0], some, tmp_path / "n", layers=1, opts=opts)
    with pytest.raises(ConfigError, match="3 labels for 20 texts"):
        distill(teacher[0], some, tmp_path / "m", layers=1, opts=opts, labels=[0, 1, 0])
    with pytest.raises(ConfigError, match="refit only"):
        stack(teacher[0], some, tmp_path / "s", students=2, layers=1, opts=opts, labels=[0] * 20)
    part = Transfer([[1], [2], [3]], np.eye(3, dtype=np.float32), [0, -1, 1]).subset([2, 0])
    assert part.ids == [[3], [1]] and part.labels == [1, 0] and part.targets[0, 2] == 1


def test_cli_reads_labelled_transfer_texts(teacher, tmp_path):
    from typer.testing import CliRunner

    from bertserve.cli import _register, app

    _register()
    runner = CliRunner()
    tsv = tmp_path / "t.tsv"
    tsv.write_text("fresh\ta joy from start to end\nrotten\ttedious and long\nfresh\tsharp, funny\n")
    train = ["--teacher", str(teacher[0]), "--eval-n", "8", "--max-steps", "1", "--max-len", "24",
             "--threads", "1", "--label-weight", "0.5"]
    common = [*train, "--layers", "1"]
    for corpus in ("reviews", str(tsv)):
        res = runner.invoke(app, ["distill", str(tmp_path / "d"), "--corpus", corpus, "--n", "32", *common])
        assert res.exit_code == 0, res.output
        hyper = json.loads((tmp_path / "d" / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
        assert hyper["label_weight"] == 0.5
    stack = ["stack", str(tmp_path / "s"), "-k", "2", "-l", "1", "--corpus", "reviews", "--n", "32", *train]
    res = runner.invoke(app, [*stack, "--refit-epochs", "1"])
    assert res.exit_code == 0, res.output
    hyper = json.loads((tmp_path / "s" / "bertserve.json").read_text())["provenance"]["hyper_parameters"]
    assert hyper["label_weight"] == 0.5 and hyper["refit_steps"] == 1
    res = runner.invoke(app, stack)
    assert res.exit_code != 0 and "refit only" in str(res.exception)
    bad = tmp_path / "bad.tsv"
    bad.write_text("neutral\tmeh\n")
    res = runner.invoke(app, ["distill", str(tmp_path / "b"), "--corpus", str(bad), *common])
    assert res.exit_code != 0 and "not the classifier's" in str(res.exception)
    res = runner.invoke(app, ["distill", str(tmp_path / "n"), "--corpus", "tweets", "--n", "32", *common])
    assert res.exit_code != 0 and "labelled transfer texts" in str(res.exception)
