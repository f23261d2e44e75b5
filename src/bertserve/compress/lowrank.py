"""Low-rank factorisation: replace a linear ``W`` (out × in) by ``B·A`` from its truncated SVD.

``W = U S Vᵀ``; keeping the top ``r`` singular values gives ``A = √S_r V_rᵀ`` (r × in) and
``B = U_r √S_r`` (out × r). It saves parameters and FLOPs only when ``r·(in+out) < in·out``;
a layer where the asked rank would not save anything is left alone (and reported). The rank is
either fixed or the smallest that keeps ``energy`` of Σ s². The result is a ``slim-bert``
artifact; a short recovery distillation can follow, as after pruning.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..artifact import check_out, staged_out
from ..errors import ConfigError
from ..models.slim import LowRankLinear, get_submodule_parent
from ..tokenizer import TextTokenizer
from .artifacts import check_recovery, load_module, load_torch_source, save_module
from .recover import RecoverConfig, recover

DEFAULT_LAYERS = ("encoder.layer.*.intermediate.dense", "encoder.layer.*.output.dense")


@dataclass(slots=True, frozen=True)
class FactorizeConfig:
    """layers: glob patterns of linear names in the base model (default: the FFN);
    rank: fixed rank, or energy: share of squared singular values to keep (one of the two)."""

    layers: tuple[str, ...] = DEFAULT_LAYERS
    rank: int | None = None
    energy: float | None = 0.9
    transfer: str = "tweets"
    recover: RecoverConfig = field(default_factory=lambda: RecoverConfig(steps=0))

    def check(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise ConfigError("give exactly one of rank or energy")
        if self.rank is not None and self.rank < 1:
            raise ConfigError(f"rank must be positive, got {self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ConfigError(f"energy must be in (0, 1], got {self.energy}")
        if not self.layers:
            raise ConfigError("give at least one layer pattern")
        check_recovery(self.recover)


def choose_rank(s: torch.Tensor, rank: int | None, energy: float | None) -> int:
    if rank is not None:
        return min(rank, len(s))
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    return int(torch.searchsorted(share, torch.tensor(energy or 1.0)).item()) + 1


def factorize_linear(linear: nn.Linear, r: int) -> LowRankLinear:
    u, s, vh = torch.linalg.svd(linear.weight.data.double(), full_matrices=False)
    root = s[:r].sqrt()
    new = LowRankLinear(linear.in_features, linear.out_features, r)
    with torch.no_grad():
        new[0].weight.copy_((root[:, None] * vh[:r]).float())  # (r, in)
        new[1].weight.copy_((u[:, :r] * root[None, :]).float())  # (out, r)
        if linear.bias is not None:
            new[1].bias.copy_(linear.bias)
        else:
            new[1].bias.zero_()
    return new


def factorize_module(base: nn.Module, config: FactorizeConfig) -> dict[str, object]:
    """Factorise the matching linears of ``base`` in place; returns rank per layer and skips."""
    ranks: dict[str, int] = {}
    skipped: dict[str, str] = {}
    names = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)
             and any(fnmatch.fnmatchcase(n, p) for p in config.layers)]
    if not names:
        raise ConfigError(f"no linear layer matches {list(config.layers)}")
    for name in names:
        parent, leaf = get_submodule_parent(base, name)
        linear: nn.Linear = getattr(parent, leaf)
        s = torch.linalg.svdvals(linear.weight.data.double())
        r = choose_rank(s, config.rank, config.energy)
        if r * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
            skipped[name] = f"rank {r} saves nothing"
            continue
        setattr(parent, leaf, factorize_linear(linear, r))
        ranks[name] = r
    return {"ranks": ranks, "skipped": skipped}


def factorize(src: str | Path | None, out: str | Path, config: FactorizeConfig = FactorizeConfig(),
              *, overwrite: bool = False) -> Path:
    """Factorise the torch artifact ``src`` into a new slim-bert artifact at ``out``.

    ``out`` appears only when the whole artifact is written; a failed run leaves it as it was.
    """
    from ..data import corpus

    config.check()
    folder, manifest = load_torch_source(src)
    check_out(out, overwrite=overwrite)
    texts = corpus(config.transfer) if config.recover.steps else []  # checked before any work
    with staged_out(out, overwrite=overwrite) as tmp:
        module, hf_config = load_module(folder, manifest)
        teacher = copy.deepcopy(module) if config.recover.steps else None
        before = sum(p.numel() for p in module.parameters())
        report = factorize_module(module.model.base_model, config)  # type: ignore[union-attr]
        if teacher is not None:
            tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
            recover(module, teacher, tok, texts, manifest.task, config.recover)
        step = {"step": "factorize", "config": asdict(config), **report,
                "parameters": {"before": before, "after": sum(p.numel() for p in module.parameters())}}
        save_module(folder, manifest, tmp, module, hf_config, step)
    return Path(out)
