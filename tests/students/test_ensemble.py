"""The fused student ensemble against references: HF/sentence-transformers, and students one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _ensemble(minilm_dir, k: int, layers: int, seed: int = 0):
    from bertserve.compress.teacher import init_student, student_config
    from bertserve.models.ensemble import StudentEnsemble

    cfg = student_config(minilm_dir, layers=layers, task="embed", output_dim=384, pooling="mean",
                         normalize=True, max_len=256)
    g = torch.Generator().manual_seed(seed)
    model = StudentEnsemble(cfg, k, [1.0, 0.7, -0.3, 0.2][:k])
    for j in range(k):
        init_student(model, j, minilm_dir, [j + i for i in range(layers)])
    with torch.no_grad():  # distinct heads, so a mix-up of students would show
        model.head_w.copy_(torch.randn(k, 384, 384, generator=g) * 0.05)
        model.head_b.copy_(torch.randn(k, 384, generator=g) * 0.01)
    return model.eval()


def _batch(minilm_dir, sentences):
    from bertserve.runtime import Batch
    from bertserve.tokenizer import TextTokenizer

    tok = TextTokenizer(minilm_dir, 256)
    b = Batch.from_ids(tok.encode(sentences[:12]).ids)
    return torch.from_numpy(b.input_ids), torch.from_numpy(b.attention_mask)


def test_full_depth_student_is_the_teacher(minilm_dir, sentences, st_reference):
    """A 6-layer student initialised from MiniLM with an identity head reproduces MiniLM."""
    model = _ensemble(minilm_dir, 1, 6)
    with torch.no_grad():
        model.head_w.copy_(torch.eye(384)[None])
        model.head_b.zero_()
        ids, mask = _batch(minilm_dir, sentences)
        out = model(ids, mask).numpy()
    np.testing.assert_allclose(out, st_reference[:12], atol=2e-5)


@pytest.mark.parametrize("students", [1, 2, 3])
def test_fused_equals_students_one_by_one(minilm_dir, sentences, students):
    from bertserve.models.ensemble import ThreadedEnsemble

    model = _ensemble(minilm_dir, 3, 2)
    ids, mask = _batch(minilm_dir, sentences)
    with torch.no_grad():
        fused = model(ids, mask, students=students)
        one_by_one = model.forward_one_by_one(ids, mask, students=students)
        threaded = ThreadedEnsemble(model)(ids, mask, students=students)
        # by hand: Σ α_k S_k(x), each student alone, then normalised
        total = sum(model.alpha[k] * model.student_outputs(ids, mask, k, k + 1)[0] for k in range(students))
        by_hand = torch.nn.functional.normalize(total, dim=-1)
    torch.testing.assert_close(fused, one_by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, threaded, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused, by_hand, atol=1e-5, rtol=0)


def test_prefix_copy_matches_and_is_smaller(minilm_dir, sentences):
    model = _ensemble(minilm_dir, 3, 1)
    ids, mask = _batch(minilm_dir, sentences)
    sub = model.prefix(2)
    with torch.no_grad():
        torch.testing.assert_close(sub(ids, mask), model(ids, mask, students=2), atol=1e-6, rtol=0)
    layer_params = lambda m: sum(p.numel() for n, p in m.named_parameters() if not n.startswith("embeddings"))  # noqa: E731
    assert layer_params(sub) * 3 == layer_params(model) * 2
    half = model.to(torch.bfloat16).prefix(2)  # a copy keeps the source's type (and device)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_students_on_cuda_streams_equal_fused(minilm_dir, sentences):
    from bertserve.models.ensemble import ThreadedEnsemble

    model = _ensemble(minilm_dir, 3, 2).cuda()
    ids, mask = (t.cuda() for t in _batch(minilm_dir, sentences))
    threaded = ThreadedEnsemble(model)
    with torch.no_grad():
        for students in (1, 3, 2):  # the streams are made once and reused
            torch.testing.assert_close(threaded(ids, mask, students=students),
                                       model(ids, mask, students=students), atol=1e-4, rtol=0)
        assert model.prefix(2).head_w.is_cuda


def test_students_clamped_to_what_exists(minilm_dir, sentences):
    model = _ensemble(minilm_dir, 2, 1)
    ids, mask = _batch(minilm_dir, sentences)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, students=9), model(ids, mask), atol=0, rtol=0)
        torch.testing.assert_close(model(ids, mask, students=0), model(ids, mask, students=1), atol=0, rtol=0)
