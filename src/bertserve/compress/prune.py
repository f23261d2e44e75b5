"""Pruning: structured (attention heads, FFN neurons) and unstructured (magnitude).

Structured pruning *removes* rows and columns, so the matrices shrink and every kernel gets
faster; the result is a ``slim-bert`` artifact (layers may differ in size). Importance is
measured on a transfer set (by default tweets plus the review *train* split, so the held-out
review test split that quality is measured on stays unseen):

- heads, ``ablation`` (default): switch each head off alone and measure how far the model's
  outputs move from the unpruned ones (``1 - cos``; KL for classifiers); remove the least
  harmful heads, in ``rounds`` rounds that each re-measure with the earlier heads gone. One
  forward pass over ``score_texts`` per head (72 for MiniLM-L6) — slower, but it measures the
  quantity we care about. On all-MiniLM-L6-v2 with 25% of heads gone it keeps 0.968 mean
  cosine on held-out reviews before recovery and 0.983 after 150 recovery steps; activation
  importance keeps 0.943 and reaches only 0.970-0.975 after 150-400 steps (RESULTS.md);
- heads, ``activation``: the mean norm of each head's contribution to the attention output
  (its context vectors times its slice of the output projection), over real tokens;
- heads, ``gradient``: |Σ ∂L/∂g| for a gate g=1 on each head (Michel et al., 2019), with L the
  in-batch contrastive loss against the unpruned embeddings (embedders) or the CE against the
  model's own predictions (classifiers), which is not flat at the unpruned model;
- FFN neurons: mean |activation| times the norm of the neuron's output weights.

Activation/gradient head scores are normalised per layer, then the lowest ``fraction`` of all
heads go. Every method keeps at least one head per layer and at most ``max_per_layer`` removed
from one layer (if set). FFN neurons are cut by the same fraction in every layer.
``compensate`` folds each removed head's mean contribution into the output bias (measured: no
real gain on MiniLM, kept as an option).

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

from ..artifact import Manifest, check_out, staged_out
from ..errors import ConfigError
from ..models.slim import SLIM_FILE, head_size
from ..tokenizer import TextTokenizer
from .artifacts import (
    check_recovery,
    finish,
    load_module,
    load_torch_source,
    save_module,
    write_weights,
)
from .batching import text_batches
from .recover import RecoverConfig, loss_fn, recover

Importance = Literal["activation", "gradient", "ablation"]


@dataclass(slots=True, frozen=True)
class PruneConfig:
    """heads: share of all attention heads to remove; ffn: share of FFN neurons per layer;
    magnitude: unstructured sparsity of encoder linears (no speedup, see module doc);
    importance: how heads are scored (``ablation`` in ``rounds`` rounds, ``activation``,
    ``gradient``); max_per_layer: most heads removed from one layer; compensate: fold removed
    heads' mean output into the bias; transfer: corpus for scoring and recovery (``a+b`` mixes);
    score_texts: how many transfer texts score (the rest train the recovery)."""

    heads: float = 0.0
    ffn: float = 0.0
    magnitude: float = 0.0
    importance: Importance = "ablation"
    rounds: int = 1
    max_per_layer: int | None = None
    compensate: bool = False
    transfer: str = "tweets+reviews:train"
    score_texts: int = 128
    recover: RecoverConfig = field(default_factory=lambda: RecoverConfig(steps=0))

    def check(self) -> None:
        for name in ("heads", "ffn", "magnitude"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"prune {name} must be a fraction in [0, 1), got {v}")
        if self.importance not in ("activation", "gradient", "ablation"):
            raise ConfigError("importance must be 'activation', 'gradient' or 'ablation', "
                              f"not {self.importance!r}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_per_layer is not None and self.max_per_layer < 1:
            raise ConfigError(f"max_per_layer must be >= 1 (or unset), got {self.max_per_layer}")
        if self.score_texts < 1:
            raise ConfigError(f"score_texts must be >= 1, got {self.score_texts}")
        check_recovery(self.recover)
        if not (self.heads or self.ffn or self.magnitude):
            raise ConfigError("nothing to prune: give --heads, --ffn or --magnitude")


def layers_of(module: nn.Module) -> nn.ModuleList:
    return module.model.base_model.encoder.layer  # type: ignore[attr-defined,return-value]


def transfer_texts(name: str) -> list[str]:
    """Texts of ``name``; ``a+b`` interleaves corpora (``reviews:train`` keeps test reviews unseen)."""
    from .vocab import corpus_texts

    parts = [corpus_texts(n.strip()) for n in name.split("+") if n.strip()]
    if len(parts) == 1:
        return parts[0]
    out: list[str] = []
    for i in range(max(len(p) for p in parts)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


def score(module: nn.Module, tok: TextTokenizer, texts: list[str], task: str, hd: int,
          importance: Importance, means: list[torch.Tensor] | None = None,
          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Head scores (L, H) and per-layer FFN neuron scores on ``texts``.

    If ``means`` is a list, it receives per layer each head's mean contribution (H, D) to the
    attention output over real tokens (what :func:`prune_heads` can fold into the bias)."""
    layers = layers_of(module)
    n_heads = [layer.attention.self.query.out_features // hd for layer in layers]
    gates = [torch.ones(h, requires_grad=importance == "gradient") for h in n_heads]
    head_acc = [torch.zeros(h) for h in n_heads]
    dim = layers[0].attention.output.dense.out_features
    mean_acc = [torch.zeros(h, dim) for h in n_heads]
    ffn_acc = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    hooks = []
    state: dict[str, torch.Tensor] = {}

    def head_hook(i: int):
        def hook(mod: nn.Linear, args: tuple[torch.Tensor, ...]):
            (ctx,) = args  # (B, T, H*hd)
            b, t, _ = ctx.shape
            heads = ctx.view(b, t, n_heads[i], hd)  # (B, T, H, hd)
            if importance == "activation" or means is not None:
                w = mod.weight.view(mod.out_features, n_heads[i], hd)  # (D, H, hd)
                contrib = torch.einsum("bthd,ohd->btho", heads.detach(), w.detach())
                m = state["mask"].view(b, t, 1, 1).to(contrib.dtype)
                if importance == "activation":
                    head_acc[i] += (contrib.norm(dim=-1, keepdim=True) * m).sum(dim=(0, 1))[:, 0] / m.sum()
                mean_acc[i] += (contrib * m).sum(dim=(0, 1))
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
        data = text_batches(tok, sorted(texts, key=len), 32, 64)
        for ids, mask in tqdm(data, desc="scoring", unit="batch", leave=False):
            state["mask"] = mask
            state["tokens"] = state.get("tokens", torch.zeros(())) + mask.sum()
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
    if means is not None:
        means[:] = [m / state["tokens"].clamp(min=1) for m in mean_acc]
    norm = [s / s.norm().clamp(min=1e-12) for s in head_acc]
    width = max(n_heads)
    table = torch.full((len(layers), width), float("inf"))
    for i, s in enumerate(norm):
        table[i, : len(s)] = s
    return table, ffn_acc


def layer_cap(max_per_layer: int | None, n_drop: int, layers: int) -> int | None:
    """The per-layer removal cap, raised to what ``n_drop`` heads over ``layers`` layers need."""
    return None if max_per_layer is None else max(max_per_layer, -(-n_drop // layers))


def heads_to_keep(scores: torch.Tensor, fraction: float, n_heads: list[int],
                  max_per_layer: int | None = None) -> list[list[int]]:
    """Drop the globally lowest ``fraction`` of heads, never a layer's last one and never more
    than ``max_per_layer`` heads of one layer (if given; the cap rises if it cannot be met)."""
    total = sum(n_heads)
    n_drop = int(round(fraction * total))
    max_per_layer = layer_cap(max_per_layer, n_drop, len(n_heads))
    keep = [set(range(h)) for h in n_heads]
    flat = sorted((float(scores[i, j]), i, j) for i, h in enumerate(n_heads) for j in range(h))
    for _, i, j in flat:
        if n_drop == 0:
            break
        dropped = n_heads[i] - len(keep[i])
        if len(keep[i]) > 1 and (max_per_layer is None or dropped < max_per_layer):
            keep[i].discard(j)
            n_drop -= 1
    return [sorted(k) for k in keep]


def ablation_keep(module: nn.Module, tok: TextTokenizer, texts: list[str], task: str, hd: int,
                  fraction: float, rounds: int = 1, max_per_layer: int | None = None,
                  ) -> tuple[list[list[int]], list[dict]]:
    """Greedy head removal by measured damage: in each of ``rounds`` rounds, switch every
    remaining head off alone, measure how far the model's outputs on ``texts`` move from the
    unpruned ones (``1 - cos`` for embedders, the softened KL for classifiers), and remove the
    least harmful share; later rounds see the heads already gone."""
    layers = layers_of(module)
    n_heads = [layer.attention.self.query.out_features // hd for layer in layers]
    n_drop = int(round(fraction * sum(n_heads)))
    cap = layer_cap(max_per_layer, n_drop, len(n_heads))
    gates = [torch.ones(h) for h in n_heads]

    def removable(i: int) -> bool:
        """Layer ``i`` keeps at least one head and stays under the cap."""
        gone = n_heads[i] - int(gates[i].sum())
        return n_heads[i] - gone > 1 and (cap is None or gone < cap)

    def gate_hook(i: int):
        def hook(mod: nn.Linear, args: tuple[torch.Tensor, ...]):
            (ctx,) = args
            b, t, _ = ctx.shape
            return ((ctx.view(b, t, n_heads[i], hd) * gates[i].view(1, 1, -1, 1)).view(b, t, -1),)
        return hook

    data = text_batches(tok, sorted(texts, key=len), 64, 64)
    hooks = [layer.attention.output.dense.register_forward_pre_hook(gate_hook(i))
             for i, layer in enumerate(layers)]
    log: list[dict] = []
    try:
        with torch.no_grad():
            ref = [module(ids, mask) for ids, mask in data]

            def damage() -> float:
                total = sum(float(loss_fn(module(ids, mask), r, task, 2.0)) * len(ids)
                            for (ids, mask), r in zip(data, ref, strict=True))
                return total / len(texts)

            dropped = 0
            for r in range(rounds):
                want = round(n_drop * (r + 1) / rounds) - dropped
                cand = []
                todo = [(i, j) for i, h in enumerate(n_heads) if removable(i)
                        for j in range(h) if gates[i][j]]
                desc = "head ablation" + (f" (round {r + 1}/{rounds})" if rounds > 1 else "")
                for i, j in tqdm(todo, desc=desc, unit="head", leave=False):  # one pass per head
                    gates[i][j] = 0.0
                    cand.append((damage(), i, j))
                    gates[i][j] = 1.0
                for _, i, j in sorted(cand):
                    if want == 0:
                        break
                    if not removable(i):
                        continue
                    gates[i][j] = 0.0
                    want -= 1
                    dropped += 1
                log.append({"round": r, "dropped": dropped, "damage": round(damage(), 5)})
    finally:
        for hk in hooks:
            hk.remove()
    return [[j for j in range(h) if gates[i][j]] for i, h in enumerate(n_heads)], log


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


def prune_heads(module: nn.Module, keep: list[list[int]], hd: int,
                means: list[torch.Tensor] | None = None) -> None:
    """Physically remove the heads not in ``keep`` (per layer). With ``means`` (from
    :func:`score`), each removed head's mean contribution moves into the output bias."""
    for i, (layer, heads) in enumerate(zip(layers_of(module), keep, strict=True)):
        idx = torch.tensor([h * hd + j for h in heads for j in range(hd)])
        att = layer.attention
        for name in ("query", "key", "value"):
            setattr(att.self, name, take_rows(getattr(att.self, name), idx))
        att.self.num_attention_heads = len(heads)
        att.self.all_head_size = len(idx)
        dense = take_cols(att.output.dense, idx)
        if means is not None:
            gone = [h for h in range(len(means[i])) if h not in set(heads)]
            with torch.no_grad():
                dense.bias += means[i][gone].sum(dim=0)
        att.output.dense = dense


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
    """Prune the torch artifact ``src`` into a new artifact at ``out``.

    ``out`` appears only when the whole artifact is written; a failed run leaves it as it was.
    """
    config.check()
    folder, manifest = load_torch_source(src)
    slim = folder / manifest.weights / SLIM_FILE
    if (config.heads or config.ffn) and slim.exists() and json.loads(slim.read_text()).get("ranks"):
        raise ConfigError("structured pruning needs full-rank layers: prune before you factorize")
    check_out(out, overwrite=overwrite)
    texts = transfer_texts(config.transfer)
    if config.recover.steps and len(texts) <= config.score_texts:
        raise ConfigError(
            f"recovery trains on the transfer texts after the first {config.score_texts} (kept for "
            f"scoring), but {config.transfer!r} has only {len(texts)}: give a larger --transfer "
            "corpus or --recover 0")
    with staged_out(out, overwrite=overwrite) as tmp:
        prune_into(folder, manifest, tmp, config, texts)
    return Path(out)


def prune_into(folder: Path, manifest: Manifest, out: Path, config: PruneConfig, texts: list[str]) -> None:
    """The work of :func:`prune`, written into the (staging) folder ``out``."""
    module, hf_config = load_module(folder, manifest)
    teacher = copy.deepcopy(module)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    hd = head_size(hf_config)
    step: dict = {"step": "prune", "config": asdict(config)}
    params_before = sum(p.numel() for p in module.parameters())
    if config.heads or config.ffn:
        means: list[torch.Tensor] | None = [] if config.compensate else None
        ablation = config.importance == "ablation"
        head_scores, ffn_scores = score(module, tok, texts[: config.score_texts], manifest.task, hd,
                                        "activation" if ablation else config.importance, means)
        if config.heads:
            n_heads = [layer.attention.self.query.out_features // hd for layer in layers_of(module)]
            if ablation:
                keep, step["ablation"] = ablation_keep(
                    module, tok, texts[: config.score_texts], manifest.task, hd, config.heads, config.rounds,
                    config.max_per_layer)
            else:
                keep = heads_to_keep(head_scores, config.heads, n_heads, config.max_per_layer)
            prune_heads(module, keep, hd, means)
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
