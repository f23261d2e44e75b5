"""Torch modules that turn a Hugging Face encoder into the head output a backend returns.

``PooledEncoder`` is what both runtimes execute: the torch backend calls it, the ONNX export
traces it, so pooling, normalisation and the classifier head sit inside one graph.
"""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the hidden states of real tokens: (B, T, H), (B, T) → (B, H)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    return mean_pool(hidden, mask) if pooling == "mean" else hidden[:, 0]


HEAD_TASKS = ("classify", "rerank")  # tasks whose output is the sequence-classification logits


class PooledEncoder(nn.Module):
    """HF encoder → pooled (optionally L2-normalised) embedding, or logits for a classifier.

    A reranker is a classifier with one logit (its relevance score); pair models take
    ``token_type_ids`` as a third input.
    """

    def __init__(self, model: nn.Module, *, task: str, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        if self.task in HEAD_TASKS:
            return out.logits.float()  # (B, num_labels); (B, 1) for a reranker
        # Pool and normalise in fp32 even when the encoder runs in bf16/fp16.
        emb = pool(out.last_hidden_state.float(), attention_mask, self.pooling)  # (B, H)
        return nn.functional.normalize(emb, dim=-1) if self.normalize else emb


def load_hf_module(weights_dir: str, task: str, pooling: str, normalize: bool) -> PooledEncoder:
    """Load a safetensors HF checkpoint (never pickles) as a :class:`PooledEncoder` in eval mode."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    cls = AutoModelForSequenceClassification if task in HEAD_TASKS else AutoModel
    try:  # fused SDPA attention where the architecture has it (BERT), eager otherwise (MPNet)
        model = cls.from_pretrained(weights_dir, use_safetensors=True, attn_implementation="sdpa")
    except ValueError:
        model = cls.from_pretrained(weights_dir, use_safetensors=True, attn_implementation="eager")
    return PooledEncoder(model, task=task, pooling=pooling, normalize=normalize).eval()
