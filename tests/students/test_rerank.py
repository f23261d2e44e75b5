"""A real reranker teacher (finetune --task rerank) and its students (distill, stack), on the news
ranking split: a few training steps each, so the tests check behaviour and a quality floor only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Measured on the held-out split (100 queries): 30 steps of 2 queries × 8 candidates at lr 2e-4
# reach MRR@10 0.74 / 0.68 / 0.76 (seeds 0 / 1 / 2) against 0.098 for a random order of 30.
TEACHER_STEPS = 30
EVAL_QUERIES = 60  # held-out queries the test scores (1,800 pairs)
REPORT_QUERIES = 5  # held-out queries finetune's own report scores (the test checks it is the same)


@pytest.fixture(scope="session")
def ranking():
    from bertserve.data import ranking_splits

    return ranking_splits()


@pytest.fixture(scope="session")
def reranker(tmp_path_factory: pytest.TempPathFactory, ranking) -> tuple[Path, dict]:
    """A cross-encoder fine-tuned from the bundled MiniLM for a few steps; (path, report)."""
    from bertserve.compress.finetune import RerankOptions, finetune_rerank

    opts = RerankOptions(max_steps=TEACHER_STEPS, batch_size=16, lr=2e-4, max_len=64,
                         eval_queries=REPORT_QUERIES, progress=False)
    out = tmp_path_factory.mktemp("rerank") / "teacher"
    return finetune_rerank(None, out, ranking["train"], opts=opts, eval_split=ranking["test"])


@pytest.fixture(scope="session")
def student_data(ranking):
    """Transfer pairs (the first 16 training queries × 8) and 4 held-out queries × 30."""
    train = ranking["train"].head(16)
    q, p, _ = train.pairs()
    ev = ranking["test"].head(4)
    eq, ep, ey = ev.pairs()
    return {"pairs": (q, p), "groups": train.groups,
            "eval": {"eval_texts": eq, "eval_pairs": ep, "eval_labels": ey, "eval_groups": ev.groups}}


@pytest.fixture(scope="session")
def student_opts():
    from bertserve.compress.transfer import TrainOptions

    return TrainOptions(max_steps=3, batch_size=16, max_len=64, lr=2e-4, progress=False,
                        teacher_backend="torch", ridge=0.5, hidden_weight=0.1)


def test_score_loss_fits_margins_within_each_query() -> None:
    """Grouped: a student off by one constant per query has only the plain-MSE tenth of its error."""
    import torch

    from bertserve.compress.distill import RANK_MSE_WEIGHT, score_loss

    out = torch.tensor([1.0, 2.0, 5.0, 7.0]).view(1, 4, 1)
    target = torch.tensor([0.0, 1.0, 0.0, 2.0]).view(4, 1)  # off by 1 in query 1, by 5 in query 2
    plain = (1 + 1 + 25 + 25) / 4
    assert float(score_loss(out, target)) == pytest.approx(plain)
    assert float(score_loss(out, target, [2, 2])) == pytest.approx(RANK_MSE_WEIGHT * plain)
    swapped = torch.tensor([1.0, 0.0, 5.0, 7.0]).view(1, 4, 1)  # query 1's order reversed
    centred = (1 + 1 + 0 + 0) / 4  # diffs (1, −1, 5, 5), centred per query: (1, −1, 0, 0)
    assert float(score_loss(swapped, target, [2, 2])) == pytest.approx(
        centred + RANK_MSE_WEIGHT * float(score_loss(swapped, target)))


def test_reranker_artifact_is_a_one_logit_pair_model(reranker) -> None:
    from bertserve.artifact import load_manifest

    path, report = reranker
    folder, manifest = load_manifest(path)
    assert manifest.task == "rerank" and manifest.pairs and manifest.output_dim == 1
    assert manifest.labels is None and manifest.architecture == "hf-encoder"
    assert manifest.provenance["report"]["steps"] == TEACHER_STEPS == report["steps"]
    assert list(folder.glob("*.safetensors")) and not list(folder.rglob("*.bin"))
    config = json.loads((folder / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["architectures"] == ["BertForSequenceClassification"]


def test_reranker_scores_equal_hugging_face_on_pairs(reranker, query_pairs) -> None:
    """bertserve (its tokenizer, token types, torch module) = HF's own classifier + tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertserve import Encoder

    path, _ = reranker
    queries, passages = query_pairs
    n = min(len(queries), len(passages))
    queries, passages = queries[:n], passages[:n]
    ours = Encoder.load(path, backend="torch").score(queries, passages)
    tok = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    batch = tok(queries, passages, padding=True, truncation=True, max_length=256, return_tensors="pt")
    assert batch["token_type_ids"].max() == 1  # the second text is type 1
    with torch.no_grad():
        ref = model(**batch).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    with torch.no_grad():  # and the token types matter: without them the scores differ
        zero = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=torch.zeros_like(batch["input_ids"])).logits[:, 0].numpy()
    assert np.abs(zero - ref).max() > 1e-3


def test_reranker_beats_a_random_ranking_on_held_out_queries(reranker, ranking) -> None:
    from bertserve.compress.ranking import evaluate_artifact, random_mrr

    path, report = reranker
    metrics = evaluate_artifact(path, ranking["test"].head(EVAL_QUERIES), backend="torch")
    assert metrics["queries"] == EVAL_QUERIES
    assert metrics["mrr@10"] > 2.5 * random_mrr(30), metrics  # random: 0.098; measured 0.68–0.74
    first = evaluate_artifact(path, ranking["test"].head(REPORT_QUERIES), backend="torch")
    assert report["eval"] == first  # finetune's report scores the held-out queries as served
    assert metrics["ndcg@10"] > metrics["mrr@10"] * 0.9


@pytest.fixture(scope="session")
def distilled(tmp_path_factory: pytest.TempPathFactory, reranker, student_data, student_opts):
    """A 2-layer student distilled from the reranker for a few steps; (path, report)."""
    from bertserve.compress.distill import distill

    q, p = student_data["pairs"]
    out = tmp_path_factory.mktemp("rerank") / "student"
    return distill(reranker[0], q, out, layers=2, opts=student_opts, pairs=p, groups=student_data["groups"],
                   **student_data["eval"])


def test_distilled_rerank_student_reads_pairs(distilled, student_data) -> None:
    import torch

    from bertserve import Encoder
    from bertserve.artifact import load_manifest
    from bertserve.compress.batching import pad_pairs
    from bertserve.models.ensemble import load_ensemble

    path, report = distilled
    folder, manifest = load_manifest(path)
    assert manifest.task == "rerank" and manifest.pairs and manifest.output_dim == 1
    assert manifest.architecture == "student-ensemble" and len(manifest.students) == 1
    assert report.teacher.metric == "mrr@10" and report.teacher.agreement == 1.0
    assert report.quality[0].metric == "mrr@10" and np.isfinite(report.quality[0].residual)
    eq, ep = student_data["eval"]["eval_texts"][:6], student_data["eval"]["eval_pairs"][:6]
    scores = Encoder.load(path, backend="torch").score(eq, ep)
    assert scores.shape == (6,) and np.isfinite(scores).all()
    enc = Encoder.load(path, backend="torch").tokenizer.encode(eq, pairs=ep)
    ids, mask, types = pad_pairs(enc.ids, enc.type_starts)
    model = load_ensemble(folder, manifest)
    with torch.no_grad():
        ref = model(ids, mask, token_type_ids=types)[:, 0].numpy()
        untyped = model(ids, mask)[:, 0].numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-5)  # the served student gets the token types
    assert np.abs(untyped - ref).max() > 1e-6


def test_rerank_student_quantizes_to_int8(distilled, student_data, tmp_path) -> None:
    """``quantize --method dynamic-int8`` of a rerank student: its pair graphs at INT8."""
    from bertserve import Encoder
    from bertserve.compress.quantize import QuantizeConfig, quantize

    path, _ = distilled
    int8 = quantize(path, tmp_path / "int8", QuantizeConfig(method="dynamic-int8"))
    enc = Encoder.load(int8)
    assert enc.backend.name == "onnxruntime" and enc.manifest.precision == "int8" and enc.manifest.pairs
    assert enc.manifest.provenance["steps"][-1]["step"] == "quantize"
    eq, ep = student_data["eval"]["eval_texts"], student_data["eval"]["eval_pairs"]
    got, ref = enc.score(eq, ep), Encoder.load(path, backend="torch").score(eq, ep)
    assert np.corrcoef(got, ref)[0, 1] > 0.95, (got[:5], ref[:5])
    assert np.abs(got - ref).max() < 0.25 * ref.std() + 1e-3


def test_stacked_rerank_students_boost_the_score(reranker, student_data, student_opts, tmp_path) -> None:
    from bertserve import Encoder
    from bertserve.artifact import load_manifest
    from bertserve.compress.refit import RefitOptions
    from bertserve.compress.stacking import stack

    q, p = student_data["pairs"]
    path, report = stack(reranker[0], q, tmp_path / "stack", students=2, layers=2, opts=student_opts,
                         pairs=p, refit_opts=RefitOptions(epochs=0.2), **student_data["eval"])
    _, manifest = load_manifest(path)
    assert manifest.task == "rerank" and manifest.pairs and manifest.output_dim == 1
    assert len(manifest.students) == 2 and all(np.isfinite(s.alpha) for s in manifest.students)
    hyper = manifest.provenance["hyper_parameters"]
    assert hyper["validation_residuals"][1] <= hyper["validation_residuals"][0]  # α: least squares
    assert [q.students for q in report.quality] == [1, 2] and report.quality[0].metric == "mrr@10"
    enc = Encoder.load(path, backend="torch")
    eq, ep = student_data["eval"]["eval_texts"][:5], student_data["eval"]["eval_pairs"][:5]
    one, both = enc.score(eq, ep, students=1), enc.score(eq, ep)
    assert one.shape == both.shape == (5,) and not np.allclose(one, both)


def test_cli_finetune_and_distill_a_reranker(tmp_path) -> None:
    """``bertserve finetune --task rerank`` then ``bertserve distill`` of it, as a user runs them."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "bertserve.cli", *args], capture_output=True,
                              text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc

    teacher = tmp_path / "teacher"
    run("finetune", str(teacher), "--task", "rerank", "--max-steps", "2", "--batch-size", "8",
        "--max-len", "48", "--eval-queries", "1")
    manifest = json.loads((teacher / "bertserve.json").read_text())
    assert manifest["task"] == "rerank" and manifest["pairs"] is True
    assert manifest["provenance"]["report"]["eval"]["queries"] == 1
    student = tmp_path / "student"
    proc = run("distill", str(student), "--teacher", str(teacher), "--layers", "1", "--n", "16",
               "--eval-n", "1", "--max-steps", "2", "--max-len", "48")
    assert "mrr@10" in proc.stdout and "of the teacher's" in proc.stdout
    manifest = json.loads((student / "bertserve.json").read_text())
    assert manifest["task"] == "rerank" and manifest["architecture"] == "student-ensemble"
