"""Teachers: their outputs over a text set (computed once, cached), and student initialisation.

Teacher outputs are the head outputs the artifact serves (normalised embedding or logits), so
distillation targets are exactly what users see. They are cached as ``.npy`` (no pickles) under
``$BERTSERVE_CACHE/teacher``, keyed by the teacher's files, the texts and the length limit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..artifact import Manifest, load_manifest
from ..errors import ConfigError
from ..models.ensemble import StudentConfig, StudentEnsemble

BERT_PREFIXES = ("bert.", "model.", "")


def _fingerprint(folder: Path, manifest: Manifest, texts: list[str], max_len: int,
                 pairs: list[str] | None = None) -> str:
    h = hashlib.sha256()
    h.update(manifest.model_dump_json().encode())
    for f in sorted(folder.rglob("*.safetensors")) + sorted(folder.rglob("*.onnx")):
        st = f.stat()
        h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(str(max_len).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    if pairs is not None:  # single texts keep the keys they always had
        h.update(b"\1pairs")
        for t in pairs:
            h.update(t.encode())
            h.update(b"\0")
    return h.hexdigest()[:20]


def teacher_outputs(
    teacher: str | Path | None,
    texts: list[str],
    *,
    max_len: int = 128,
    batch_size: int = 64,
    cache: bool = True,
    backend: str = "onnxruntime",
    pairs: list[str] | None = None,
) -> np.ndarray:
    """Head outputs (N, D) of ``teacher`` on ``texts`` (with ``pairs``: on the pairs (text,
    pair), for a reranker its scores (N, 1)), computed once and cached on disk."""
    from ..cache import cache_root
    from ..encoder import Encoder

    folder, manifest = load_manifest(teacher)
    if (pairs is not None) != manifest.pairs:
        raise ConfigError(f"{folder} reads " + ("text pairs: its transfer set needs (query, passage) pairs"
                                                 if manifest.pairs else "single texts, not pairs"))
    if pairs is not None and len(pairs) != len(texts):
        raise ConfigError(f"{len(texts)} texts but {len(pairs)} pairs")
    path = cache_root() / "teacher" / f"{_fingerprint(folder, manifest, texts, max_len, pairs)}.npy"
    if cache and path.exists():
        return np.load(path, allow_pickle=False)
    enc = Encoder.load(folder, backend=backend)  # ORT: ~2× faster than torch eager on CPU
    enc.tokenizer.max_length = min(max_len, manifest.max_seq_length)
    out = np.empty((len(texts), enc.backend.output_dim), dtype=np.float32)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(texts), 1024), desc="teacher outputs", unit="chunk", leave=False):
        chunk = texts[start : start + 1024]
        tok = enc.tokenize(chunk, pairs=None if pairs is None else pairs[start : start + 1024])
        out[start : start + len(chunk)] = enc.run_ids(tok.ids, max_batch=batch_size,
                                                      type_starts=tok.type_starts)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out, allow_pickle=False)
        tmp.replace(path)
    return out


def bert_state(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, state dict with the ``bert.`` prefix stripped) of a BERT checkpoint."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise ConfigError(
            f"students are initialised from a BERT checkpoint; {folder} is {config.get('model_type')!r}. "
            "Pass --init-from a BERT model (e.g. the bundled MiniLM) with a projection to the teacher."
        )
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        for key, value in load_file(str(f)).items():
            for prefix in BERT_PREFIXES:
                if key.startswith(prefix) and (key[len(prefix) :].startswith(("embeddings.", "encoder."))):
                    state[key[len(prefix) :]] = value
                    break
    if "embeddings.word_embeddings.weight" not in state:
        raise ConfigError(f"{folder}: no BERT embeddings found in its safetensors")
    return config, state


def student_config(
    init_from: Path, *, layers: int, task: str, output_dim: int, pooling: str, normalize: bool, max_len: int
) -> StudentConfig:
    config, _ = bert_state(init_from)
    return StudentConfig(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        num_heads=config["num_attention_heads"],
        intermediate_size=config["intermediate_size"],
        num_layers=layers,
        max_position=min(config["max_position_embeddings"], max(max_len, 8)),
        type_vocab_size=config.get("type_vocab_size", 2),
        layer_norm_eps=config.get("layer_norm_eps", 1e-12),
        output_dim=output_dim,
        task=task,
        pooling=pooling,
        normalize=normalize,
    )


def init_student(model: StudentEnsemble, k: int, init_from: Path, layer_ids: list[int]) -> None:
    """Copy the checkpoint's embeddings and layers ``layer_ids`` into student k of ``model``."""
    config, state = bert_state(init_from)
    n = config["num_hidden_layers"]
    if len(layer_ids) != len(model.layers) or any(not 0 <= i < n for i in layer_ids):
        raise ConfigError(
            f"layers {layer_ids} do not fit a {n}-layer checkpoint / {len(model.layers)}-layer student"
        )
    emb = model.embeddings
    t = model.cfg.max_position
    with torch.no_grad():
        emb.word.weight.copy_(state["embeddings.word_embeddings.weight"])
        emb.position.weight.copy_(state["embeddings.position_embeddings.weight"][:t])
        emb.token_type.weight.copy_(state["embeddings.token_type_embeddings.weight"])
        emb.norm.weight.copy_(state["embeddings.LayerNorm.weight"])
        emb.norm.bias.copy_(state["embeddings.LayerNorm.bias"])
        for layer, i in zip(model.layers, layer_ids, strict=False):
            p = f"encoder.layer.{i}."
            att = p + "attention."
            qkv_w = torch.cat([state[att + f"self.{x}.weight"] for x in ("query", "key", "value")], 0)
            qkv_b = torch.cat([state[att + f"self.{x}.bias"] for x in ("query", "key", "value")], 0)
            pairs = {
                "qkv_w": qkv_w.T,
                "qkv_b": qkv_b,
                "o_w": state[att + "output.dense.weight"].T,
                "o_b": state[att + "output.dense.bias"],
                "ln1_w": state[att + "output.LayerNorm.weight"],
                "ln1_b": state[att + "output.LayerNorm.bias"],
                "ff1_w": state[p + "intermediate.dense.weight"].T,
                "ff1_b": state[p + "intermediate.dense.bias"],
                "ff2_w": state[p + "output.dense.weight"].T,
                "ff2_b": state[p + "output.dense.bias"],
                "ln2_w": state[p + "output.LayerNorm.weight"],
                "ln2_b": state[p + "output.LayerNorm.bias"],
            }
            for name, value in pairs.items():
                getattr(layer, name)[k].copy_(value)


def pick_layers(num_teacher_layers: int, n: int, how: str = "bottom") -> list[int]:
    """Which checkpoint layers initialise an n-layer student.

    ``bottom``: the first n; ``top``: the last n; ``spread``: evenly from the first to the last
    (one layer: the last, which writes the representation the teacher pools); or explicit
    comma-separated indices such as ``0,5``.
    """
    depth = num_teacher_layers
    if how == "bottom":
        return list(range(min(n, depth)))[:n] + [depth - 1] * max(0, n - depth)
    if how == "top":
        return [max(0, depth - n + i) for i in range(n)]
    if how == "spread":
        return [depth - 1] if n == 1 else [round(i * (depth - 1) / (n - 1)) for i in range(n)]
    try:
        ids = [int(x) for x in how.split(",")]
    except ValueError:
        raise ConfigError(f"init layers {how!r}: use bottom, top, spread or indices like 0,5") from None
    if len(ids) != n or not all(0 <= i < depth for i in ids):
        raise ConfigError(f"init layers {how!r}: need {n} indices in 0..{depth - 1}")
    return ids
