"""Pruning: structured (attention heads, FFN neurons) and unstructured (magnitude).

Structured pruning *removes* rows and columns, so the matrices shrink and every kernel gets
faster; the result is a ``slim-bert`` artifact (layers may differ in size). Importance is
measured on a transfer set:

- heads, ``activation``: the mean norm of each head's contribution to the attention output
  (its context vectors times its slice of the output projection);
- heads, ``gradient``: |Σ ∂L/∂g| for a gate g=1 on each head (Michel et al., 2019), with L the
  in-batch contrastive loss against the unpruned embeddings (embedders) or the CE against the
  model's own predictions (classifiers), which is not flat at the unpruned model;
- FFN neurons: mean |activation| times the norm of the neuron's output weights.

Head scores are normalised per layer, then the lowest ``fraction`` of all heads go (at least one
head stays in every layer). FFN neurons are cut by the same fraction in every layer.

Magnitude pruning zeroes the smallest weights of every encoder linear. The checkpoint keeps
dense tensors: dense CPU kernels run zeros as fast as any number, so it buys no speed or size
by itself (only compressed storage or sparse kernels would), and the sparsity is reported.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.slim import SLIM_FILE, head_size
from ..models.tokenizer import TextTokenizer
from .artifacts import finish, load_module, load_torch_source, prepare_out, save_module, write_weights
from .recover import RecoverConfig, batches, recover, tensors

Importance = Literal["activation", "gradient"]


@dataclass(slots=True, frozen=True)
class PruneConfig:
    """heads: share of all attention heads to remove; ffn: share of FFN neurons per layer;
    magnitude: unstructured sparsity of encoder linears (no speedup, see module doc);
    importance: how heads are scored; transfer: corpus name for scoring and recovery."""

    heads: float = 0.0
    ffn: float = 0.0
    magnitude: float = 0.0
    importance: Importance = "activation"
    transfer: str = "tweets"
    score_texts: int = 256
    recover: RecoverConfig = field(default_factory=lambda: RecoverConfig(steps=0))

    def check(self) -> None:
        for name in ("heads", "ffn", "magnitude"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"prune {name} must be a fraction in [0, 1), got {v}")
        if self.importance not in ("activation", "gradient"):
            raise ConfigError(f"importance must be 'activation' or 'gradient', not {self.importance!r}")
        if not (self.heads or self.ffn or self.magnitude):
            raise ConfigError("nothing to prune: give --heads, --ffn or --magnitude")


def layers_of(module: nn.Module) -> nn.ModuleList:
    return module.model.base_model.encoder.layer  # type: ignore[attr-defined,return-value]


def score(module: nn.Module, tok: TextTokenizer, texts: list[str], task: str, hd: int,
          importance: Importance) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Head scores (L, H) and per-layer FFN neuron scores on ``texts``."""
    layers = layers_of(module)
    n_heads = [layer.attention.self.query.out_features // hd for layer in layers]
    gates = [torch.ones(h, requires_grad=importance == "gradient") for h in n_heads]
    head_acc = [torch.zeros(h) for h in n_heads]
    ffn_acc = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    hooks = []

    def head_hook(i: int):
        def hook(mod: nn.Linear, args: tuple[torch.Tensor, ...]):
            (ctx,) = args  # (B, T, H*hd)
            b, t, _ = ctx.shape
            heads = ctx.view(b, t, n_heads[i], hd)  # (B, T, H, hd)
            if importance == "activation":
                w = mod.weight.view(mod.out_features, n_heads[i], hd)  # (D, H, hd)
                contrib = torch.einsum("bthd,ohd->btho", heads.detach(), w.detach())
                head_acc[i] += contrib.norm(dim=-1).mean(dim=(0, 1))
            return ((heads * gates[i].view(1, 1, -1, 1)).view(b, t, -1),)
        return hook

    def ffn_hook(i: int):
        def hook(mod: nn.Linear, args: tuple[torch.Tensor, ...]):
            ffn_acc[i] += args[0].detach().abs().mean(dim=(0, 1)) * mod.weight.detach().norm(dim=0)
        return hook

    for i, layer in enumerate(layers):
        hooks.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(i)))
        hooks.append(layer.output.dense.register_forward_pre_hook(ffn_hook(i)))
    try:
        data = batches(tok, sorted(texts, key=len), 32, 64)
        for batch in tqdm(data, desc="scoring", unit="batch", leave=False):
            ids, mask = tensors(batch)
            if importance == "activation":
                with torch.no_grad():
                    module(ids, mask)
                continue
            with torch.no_grad():
                target = module(ids, mask)
            out = module(ids, mask)
            if task == "classify":
                loss = nn.functional.cross_entropy(out, target.argmax(-1))
            else:
                sim = nn.functional.normalize(out, dim=-1) @ nn.functional.normalize(target, dim=-1).T
                loss = nn.functional.cross_entropy(sim / 0.05, torch.arange(len(sim)))
            grads = torch.autograd.grad(loss, gates)
            for acc, g in zip(head_acc, grads, strict=True):
                acc += g.abs()
    finally:
        for h in hooks:
            h.remove()
    norm = [s / s.norm().clamp(min=1e-12) for s in head_acc]
    width = max(n_heads)
    table = torch.full((len(layers), width), float("inf"))
    for i, s in enumerate(norm):
        table[i, : len(s)] = s
    return table, ffn_acc


def heads_to_keep(scores: torch.Tensor, fraction: float, n_heads: list[int]) -> list[list[int]]:
    """Drop the globally lowest ``fraction`` of heads, never a layer's last one."""
    total = sum(n_heads)
    n_drop = int(round(fraction * total))
    keep = [set(range(h)) for h in n_heads]
    flat = sorted((float(scores[i, j]), i, j) for i, h in enumerate(n_heads) for j in range(h))
    for _, i, j in flat:
        if n_drop == 0:
            break
        if len(keep[i]) > 1:
            keep[i].discard(j)
            n_drop -= 1
    return [sorted(k) for k in keep]


def take_rows(linear: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(idx), bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[idx])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[idx])
    return new


def take_cols(linear: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(idx), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, idx])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def prune_heads(module: nn.Module, keep: list[list[int]], hd: int) -> None:
    """Physically remove the heads not in ``keep`` (per layer)."""
    for layer, heads in zip(layers_of(module), keep, strict=True):
        idx = torch.tensor([h * hd + j for h in heads for j in range(hd)])
        att = layer.attention
        for name in ("query", "key", "value"):
            setattr(att.self, name, take_rows(getattr(att.self, name), idx))
        att.self.num_attention_heads = len(heads)
        att.self.all_head_size = len(idx)
        att.output.dense = take_cols(att.output.dense, idx)


def prune_ffn(module: nn.Module, scores: list[torch.Tensor], fraction: float) -> None:
    """Keep the ``1 - fraction`` highest-scoring FFN neurons of every layer."""
    for layer, s in zip(layers_of(module), scores, strict=True):
        n_keep = max(1, int(round(len(s) * (1 - fraction))))
        idx = torch.sort(torch.topk(s, n_keep).indices).values
        layer.intermediate.dense = take_rows(layer.intermediate.dense, idx)
        layer.output.dense = take_cols(layer.output.dense, idx)


def magnitude_prune(module: nn.Module, sparsity: float) -> dict[str, float]:
    """Zero the smallest ``sparsity`` share of each encoder linear's weights; report sparsity."""
    zeros = total = 0
    for layer in layers_of(module):
        for mod in layer.modules():
            if isinstance(mod, nn.Linear):
                w = mod.weight.data
                k = int(w.numel() * sparsity)
                if k:
                    cut = w.abs().flatten().kthvalue(k).values
                    w[w.abs() <= cut] = 0.0
                zeros += int((w == 0).sum())
                total += w.numel()
    params = sum(p.numel() for p in module.parameters())
    return {"encoder_linear_sparsity": round(zeros / total, 4), "model_sparsity": round(zeros / params, 4)}


def prune(src: str | Path | None, out: str | Path, config: PruneConfig, *, overwrite: bool = False) -> Path:
    """Prune the torch artifact ``src`` into a new artifact at ``out``."""
    from ..data import corpus

    config.check()
    folder, manifest = load_torch_source(src)
    slim = folder / manifest.weights / SLIM_FILE
    if (config.heads or config.ffn) and slim.exists() and json.loads(slim.read_text()).get("ranks"):
        raise ConfigError("structured pruning needs full-rank layers: prune before you factorize")
    out = prepare_out(out, overwrite=overwrite)
    module, hf_config = load_module(folder, manifest)
    teacher = copy.deepcopy(module)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    texts = corpus(config.transfer)
    hd = head_size(hf_config)
    step: dict = {"step": "prune", "config": asdict(config)}
    params_before = sum(p.numel() for p in module.parameters())
    if config.heads or config.ffn:
        head_scores, ffn_scores = score(module, tok, texts[: config.score_texts], manifest.task, hd,
                                        config.importance)
        if config.heads:
            n_heads = [layer.attention.self.query.out_features // hd for layer in layers_of(module)]
            keep = heads_to_keep(head_scores, config.heads, n_heads)
            prune_heads(module, keep, hd)
            step["heads_kept"] = [len(k) for k in keep]
        if config.ffn:
            prune_ffn(module, ffn_scores, config.ffn)
    if config.magnitude:
        step["sparsity"] = magnitude_prune(module, config.magnitude)
        step["note"] = "dense storage and kernels: magnitude sparsity alone buys no speed or size"
    # Recovery trains on texts after the scoring slice, so scoring and training differ.
    curve = recover(module, teacher, tok, texts[config.score_texts :], manifest.task, config.recover)
    if config.magnitude and curve:  # training refills zeros; keep the mask the user asked for
        step["sparsity"] = magnitude_prune(module, config.magnitude)
    if curve:
        tail = curve[-10:]
        step["recovery_loss"] = {"first": round(curve[0], 5), "last": round(sum(tail) / len(tail), 5)}
    step["parameters"] = {"before": params_before, "after": sum(p.numel() for p in module.parameters())}
    if config.heads or config.ffn or manifest.architecture == "slim-bert":
        save_module(folder, manifest, out, module, hf_config, step)
    else:  # magnitude only: the shapes are unchanged, keep the plain HF architecture
        state = {k: v for k, v in module.model.state_dict().items() if not k.endswith("position_ids")}
        write_weights(out, state, hf_config)
        finish(folder, manifest, out, step)
    return out
