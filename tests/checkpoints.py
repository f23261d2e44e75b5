"""Hugging Face classifier checkpoints made in tests: a real encoder with a seeded, untrained head."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def seeded_head_checkpoint(src: Path, out: Path, *, seed: int, num_labels: int, **config: object) -> Path:
    """``src``'s encoder with a ``num_labels`` sequence-classification head drawn with ``seed``
    (wide, so scores spread and rankings are not ties), saved as safetensors with the tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=num_labels, **config)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.5)
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    return out
