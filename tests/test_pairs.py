"""Text pairs through the model path: tokenizer, every backend and the student ensembles,
against the unmodified Hugging Face cross-encoder on real (headline, sentence) pairs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bertserve.artifact import Manifest, StudentEntry, copy_tokenizer, load_manifest, save_manifest
from bertserve.encoder import Encoder
from bertserve.errors import InputError, TextTooLongError
from bertserve.export.onnx import export_onnx
from bertserve.models.ensemble import StudentConfig, StudentEnsemble, save_ensemble
from bertserve.runtime import BackendOptions, Batch, load_backend
from bertserve.runtime.openvino_backend import cpu_has_bf16
from bertserve.serving.workers.protocol import Run
from bertserve.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def pairs(query_pairs: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
    queries, passages = query_pairs
    # each query with a passage, plus a query that itself holds "[SEP]" (a special token to the
    # tokenizer: the type ids must follow the real boundary, not the first [SEP])
    return [*queries[:12], "is a [SEP] inside a query harmless"], [*passages[:12], "it should be"]


@pytest.fixture(scope="module")
def hf_scores(rerank_dir: Path, pairs: tuple[list[str], list[str]]) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(rerank_dir)).eval()
    enc = AutoTokenizer.from_pretrained(str(rerank_dir))(*pairs, padding=True, truncation="longest_first",
                                                          return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[:, 0].numpy()


def test_a_one_logit_classifier_checkpoint_is_a_reranker(rerank_dir: Path) -> None:
    _, manifest = load_manifest(rerank_dir)
    assert (manifest.task, manifest.pairs, manifest.output_dim, manifest.labels) == ("rerank", True, 1, None)
    assert Manifest(task="rerank").pairs  # a reranker always reads pairs


def test_pair_tokens_match_hugging_face(rerank_dir: Path, pairs: tuple[list[str], list[str]]) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(rerank_dir))
    queries, passages = pairs
    for limit in (512, 24):  # 24: most pairs are cut, longest side first
        ours = TextTokenizer(rerank_dir, 512).encode(queries, pairs=passages, max_length=limit)
        ref = hf(queries, passages, truncation="longest_first", max_length=limit)
        assert ours.ids == ref["input_ids"]
        assert ours.type_starts is not None
        batch = Batch.from_ids(ours.ids, 0, type_starts=ours.type_starts)
        for row, types in enumerate(ref["token_type_ids"]):
            assert batch.token_type_ids[row, : len(types)].tolist() == types
            assert not batch.token_type_ids[row, len(types):].any()  # padding has type 0
        full = [len(x) for x in hf(queries, passages)["input_ids"]]
        assert ours.truncated == [n > limit for n in full]
    with pytest.raises(TextTooLongError):
        TextTokenizer(rerank_dir, 24).encode(queries, pairs=passages, truncate=False)


@pytest.mark.parametrize(("backend", "precision", "tol", "corr"), [
    ("torch", "fp32", 1e-4, 1.0),
    ("onnxruntime", "fp32", 1e-4, 1.0),
    ("openvino", "fp32", 1e-4, 1.0),
    pytest.param("openvino", "bf16", 0.05, 0.98, marks=pytest.mark.skipif(
        not cpu_has_bf16(), reason="OpenVINO bf16 needs a CPU with avx512_bf16 or amx_bf16")),
    ("onnxruntime", "int8", 0.25, 0.95),  # an untrained head: scores within ±0.6 of each other
])
def test_every_backend_scores_pairs_like_hugging_face(rerank_dir: Path, pairs, hf_scores: np.ndarray,
                                                      backend: str, precision: str, tol: float,
                                                      corr: float) -> None:
    enc = Encoder.load(rerank_dir, backend=backend, precision=precision)
    scores = enc.score(pairs[0], pairs[1], max_batch=5)  # several batches, each padded differently
    assert np.abs(scores - hf_scores).max() < tol
    assert np.corrcoef(scores, hf_scores)[0, 1] > corr - 1e-6


def test_a_reranker_refuses_single_texts_and_an_embedder_refuses_pairs(rerank_dir: Path,
                                                                       minilm_dir: Path) -> None:
    enc = Encoder.load(rerank_dir, backend="torch")
    with pytest.raises(InputError, match="pairs"):
        enc.run_texts(["a query"])
    with pytest.raises(InputError, match="reranker"):
        enc.embed(["a query"])
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        enc.run_texts(["a", "b"], ["c"])
    with pytest.raises(InputError, match="single texts"):
        Encoder.load(minilm_dir, backend="torch").run_texts(["a"], ["b"])


def test_one_query_scores_each_document_in_order(rerank_dir: Path, pairs) -> None:
    enc = Encoder.load(rerank_dir, backend="torch")
    query, docs = pairs[0][0], pairs[1][:6]
    together = enc.score(query, docs)
    alone = np.array([enc.score(query, [d])[0] for d in docs])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.fixture(scope="module")
def rerank_ensemble(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A 3-student rerank ensemble with random weights and distinct type embeddings."""
    cfg = StudentConfig(vocab_size=30522, hidden_size=64, num_heads=4, intermediate_size=128, num_layers=2,
                        max_position=512, output_dim=1, task="rerank", pooling="cls", normalize=False)
    torch.manual_seed(0)
    model = StudentEnsemble(cfg, 3, [1.0, 0.5, 0.25])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
        for layer in model.layers:
            layer.ln1_w.fill_(1.0)
            layer.ln2_w.fill_(1.0)
    out = tmp_path_factory.mktemp("rerank-ens") / "ens"
    paths = save_ensemble(model.eval(), out)
    src_folder, src = load_manifest(minilm_dir)
    students = [StudentEntry(path=p, alpha=a) for p, a in zip(paths, [1.0, 0.5, 0.25], strict=True)]
    save_manifest(out, Manifest(name="rerank-ens", task="rerank", architecture="student-ensemble",
                                pooling="cls", normalize=False, max_seq_length=256, output_dim=1,
                                tokenizer=copy_tokenizer(src_folder, src, out), students=students))
    return out


def test_ensembles_score_pairs_on_every_path(rerank_ensemble: Path, tmp_path: Path, pairs) -> None:
    """Fused torch, one by one, ONNX prefix graphs, ONNX side by side and OpenVINO agree, and the
    token types count (the same ids with all types 0 score differently)."""
    from bertserve.models.ensemble import load_ensemble

    folder, manifest = load_manifest(rerank_ensemble)
    tok = TextTokenizer(folder / manifest.tokenizer, 256).encode(pairs[0], pairs=pairs[1])
    batch = Batch.from_ids(tok.ids, 0, type_starts=tok.type_starts)
    model = load_ensemble(folder, manifest)
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    types = torch.from_numpy(batch.token_type_ids)
    with torch.no_grad():
        for m in (1, 2, 3):
            fused = model(ids, mask, m, token_type_ids=types).numpy()
            ref = model.forward_one_by_one(ids, mask, m, token_type_ids=types).numpy()
            np.testing.assert_allclose(fused, ref, atol=1e-4)
        untyped = model(ids, mask, token_type_ids=None).numpy()
    assert np.abs(untyped - fused).max() > 1e-2
    onnx = export_onnx(rerank_ensemble, tmp_path / "onnx", precision="fp32")
    runs = {
        "onnx": load_backend(onnx, BackendOptions(backend="onnxruntime"))[2],
        "side by side": load_backend(onnx, BackendOptions(backend="onnxruntime", student_threads=3))[2],
        "openvino": load_backend(onnx, BackendOptions(backend="openvino", precision="fp32"))[2],
        "torch": load_backend(rerank_ensemble, BackendOptions(backend="torch"))[2],
    }
    for m in (1, 2, 3):
        with torch.no_grad():
            ref = model(ids, mask, m, token_type_ids=types).numpy()
        for name, backend in runs.items():
            got = backend.run(Batch.from_ids(tok.ids, 0, students=m, type_starts=tok.type_starts))
            np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=f"{name}, {m} students")


def test_the_worker_message_carries_type_starts() -> None:
    starts = np.array([3, 4], np.int32)
    run = Run(7, np.arange(10, dtype=np.int32), np.array([4, 6], np.int32), 2, False, starts)
    back = pickle.loads(pickle.dumps(run))
    assert back.type_starts.tolist() == [3, 4] and back.lengths.tolist() == [4, 6] and back.students == 2
    single = pickle.loads(pickle.dumps(Run(8, np.arange(3, dtype=np.int32), np.array([3], np.int32))))
    assert single.type_starts is None


def test_the_planner_counts_a_pair_model_in_pairs(rerank_dir: Path, minilm_dir: Path) -> None:
    from bertserve.planner import corpus_lengths

    single = corpus_lengths(minilm_dir, "tweets", sample=300)
    pairs = corpus_lengths(rerank_dir, "tweets", sample=300)
    # each pair holds two tweets and one more [SEP]: about twice as long, never past the limit
    assert 1.6 < pairs.mean() / single.mean() < 2.2
    assert pairs.max() <= 512
