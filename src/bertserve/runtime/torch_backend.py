"""PyTorch eager backend: fp32, bf16 (cast once; AVX-512-BF16/AMX on CPU), fp16 (CUDA) and
int8 (torch dynamic quantisation of every linear, CPU only: the fallback where onnxruntime's
faster INT8 is not wanted)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import BackendError, ConfigError
from .base import Batch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}


def quantize_linears(module: nn.Module) -> nn.Module:
    """Dynamic INT8 for every ``nn.Linear``: weights per output channel (per-tensor scales cost
    MiniLM ~0.06 cosine), activations quantised per call."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device(device)


class TorchBackend:
    """Runs a head-output module (see :mod:`bertserve.models.heads`) with torch."""

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        precision: str = "fp32",
        device: str = "cpu",
        threads: int | None = None,
        output_dim: int,
        max_students: int = 1,
    ) -> None:
        if precision not in DTYPES:
            raise ConfigError(f"torch backend supports {sorted(DTYPES)}, not {precision!r}")
        self.device = pick_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("fp16 runs on CUDA only; on CPU use bf16 (AVX-512-BF16/AMX)")
        if precision == "int8" and self.device.type != "cpu":
            raise ConfigError("torch int8 runs on CPU only; on CUDA use fp16")
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        # Casting the weights once is faster than autocast, which re-casts them every call.
        self.module = module.to(device=self.device, dtype=DTYPES[precision]).eval()
        if precision == "int8":
            self.module = quantize_linears(self.module)
        self.precision = precision
        self.output_dim = output_dim
        self.max_students = max_students

    @torch.inference_mode()
    def run(self, batch: Batch) -> np.ndarray:
        ids = torch.from_numpy(batch.input_ids).to(self.device, non_blocking=True)
        mask = torch.from_numpy(batch.attention_mask).to(self.device, non_blocking=True)
        extra = {}
        if batch.token_type_ids is not None:
            types = torch.from_numpy(batch.token_type_ids)
            extra["token_type_ids"] = types.to(self.device, non_blocking=True)
        if batch.students is not None and self.max_students > 1:
            extra["students"] = batch.students
        try:
            out = self.module(ids, mask, **extra)
        except RuntimeError as exc:
            raise BackendError(f"torch failed on a batch of shape {tuple(ids.shape)}: {exc}") from exc
        return out.float().cpu().numpy()
