"""A student ensemble: K shallow BERT students that run side by side and whose outputs add up.

``F_m(x) = Σ_{k<m} α_k S_k(x)`` (then L2-normalised for normalised embedders). All students share
the teacher's frozen embeddings, so the token embedding runs once; their layers are stored
*stacked* on a leading student axis, so the K students run as one horizontally fused
computation (batched matmuls): the latency is one shallow student's depth. A prefix of m
students slices the stacked weights (a view, no copy) and costs proportionally less.

Artifact layout (``architecture = "student-ensemble"``)::

    bertserve.json            manifest; ``students`` lists students/k in boosting order with α_k
    ensemble.json             StudentConfig (widths, depth, head)
    embeddings.safetensors    shared word/position/type embeddings + LayerNorm
    students/k/student.safetensors   layers.{l}.{name} and head_w/head_b of student k
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..artifact import Manifest
from ..errors import ArtifactError
from .heads import mean_pool
from .registry import BuiltModule

CONFIG_NAME = "ensemble.json"
EMBEDDINGS_NAME = "embeddings.safetensors"
STUDENT_NAME = "student.safetensors"
# (name, shape given hidden H and intermediate I) of one student layer; W are (in, out).
LAYER_PARAMS = (
    "qkv_w",
    "qkv_b",
    "o_w",
    "o_b",
    "ln1_w",
    "ln1_b",
    "ff1_w",
    "ff1_b",
    "ff2_w",
    "ff2_b",
    "ln2_w",
    "ln2_b",
)


@dataclass(slots=True)
class StudentConfig:
    """Shape of every student (all students of an ensemble share it, so they can be fused)."""

    vocab_size: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    num_layers: int
    max_position: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    output_dim: int = 384  # embedding width (after projection) or number of labels
    task: str = "embed"
    pooling: str = "mean"
    normalize: bool = True

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        h, i = self.hidden_size, self.intermediate_size
        return {
            "qkv_w": (h, 3 * h),
            "qkv_b": (3 * h,),
            "o_w": (h, h),
            "o_b": (h,),
            "ln1_w": (h,),
            "ln1_b": (h,),
            "ff1_w": (h, i),
            "ff1_b": (i,),
            "ff2_w": (i, h),
            "ff2_b": (h,),
            "ln2_w": (h,),
            "ln2_b": (h,),
        }

    def save(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> StudentConfig:
        path = folder / CONFIG_NAME
        if not path.exists():
            raise ArtifactError(f"{folder}: a student-ensemble artifact needs {CONFIG_NAME}")
        return cls(**json.loads(path.read_text()))


class Embeddings(nn.Module):
    """BERT embeddings (word + position + token type, then LayerNorm), shared by all students.

    Without ``token_type_ids`` (single texts) every token has type 0, added as one row.
    """

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device)
        types = self.token_type.weight[0] if token_type_ids is None else self.token_type(token_type_ids)
        x = self.word(input_ids) + self.position(pos) + types  # (B, T, H)
        return self.norm(x)


def stacked_norm(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm with per-student affine: h (m, N, H), w/b (m, H)."""
    return F.layer_norm(h, (w.shape[-1],), eps=eps) * w.unsqueeze(1) + b.unsqueeze(1)


def linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-student linear map as one batched matmul: (m, N, in) @ (m, in, out) + (m, 1, out).

    One student takes a plain 2-D matmul instead (ONNX INT8 quantises those per channel).
    """
    if w.shape[0] == 1:
        return torch.addmm(b[0], h[0], w[0]).unsqueeze(0)  # (1, N, out)
    return torch.baddbmm(b.unsqueeze(1), h, w)


class FusedLayer(nn.Module):
    """Layer l of all K students, each weight stacked on a leading student axis (K, ...)."""

    def __init__(self, cfg: StudentConfig, k: int) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.width = cfg.hidden_size  # constant, so ONNX tracing keeps static shapes where it needs them
        self.eps = cfg.layer_norm_eps
        for name, shape in cfg.layer_shapes().items():
            self.register_parameter(name, nn.Parameter(torch.zeros(k, *shape)))

    def forward(self, h: torch.Tensor, keep: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """h (m, B, T, H) for students lo..hi-1; keep (B, T) bool, True for real tokens."""
        m, b, t = h.shape[:3]
        hid = self.width
        p = {name: getattr(self, name)[lo:hi] for name in LAYER_PARAMS}  # views, no copies
        x = h.reshape(m, b * t, hid)  # (m, N, H)
        qkv = linear(x, p["qkv_w"], p["qkv_b"])  # (m, N, 3H)
        qkv = qkv.view(m * b, t, 3, self.heads, hid // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (m·B, heads, T, d)
        mask = keep[:, None, None, :].repeat(m, 1, 1, 1)  # (m·B, 1, 1, T)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (m·B, heads, T, d)
        att = att.transpose(1, 2).reshape(m, b * t, hid)  # (m, N, H)
        x = stacked_norm(x + linear(att, p["o_w"], p["o_b"]), p["ln1_w"], p["ln1_b"], self.eps)
        ff = linear(F.gelu(linear(x, p["ff1_w"], p["ff1_b"])), p["ff2_w"], p["ff2_b"])  # (m, N, H)
        x = stacked_norm(x + ff, p["ln2_w"], p["ln2_b"], self.eps)
        return x.view(m, b, t, hid)


class StudentEnsemble(nn.Module):
    """K students over shared embeddings; ``forward`` runs a prefix of them fused and sums."""

    def __init__(self, cfg: StudentConfig, k: int, alphas: list[float] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_students = k
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(FusedLayer(cfg, k) for _ in range(cfg.num_layers))
        self.head_w = nn.Parameter(torch.zeros(k, cfg.hidden_size, cfg.output_dim))
        self.head_b = nn.Parameter(torch.zeros(k, cfg.output_dim))
        self.register_buffer("alpha", torch.tensor(alphas or [1.0] * k, dtype=torch.float32))

    def hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        lo: int,
        hi: int,
        token_type_ids: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Hidden states of students lo..hi-1 after each layer: L tensors (m, B, T, H)."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H), computed once for all students
        return self.hidden_from(x, attention_mask, lo, hi)

    def hidden_from(
        self, x: torch.Tensor, attention_mask: torch.Tensor, lo: int, hi: int
    ) -> list[torch.Tensor]:
        """As :meth:`hidden`, from the embedded tokens x (B, T, H) (side-by-side ONNX graphs)."""
        h = x.unsqueeze(0).expand(hi - lo, *x.shape)  # (m, B, T, H)
        keep = attention_mask.bool()
        states = []
        for layer in self.layers:
            h = layer(h, keep, lo, hi)
            states.append(h)
        return states

    def head(self, last: torch.Tensor, attention_mask: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Unscaled student outputs S_k(x): last (m, B, T, H) → (m, B, D)."""
        m, b, t, hid = last.shape
        mask = attention_mask.unsqueeze(0).expand(m, b, t).reshape(m * b, t)
        flat = last.reshape(m * b, t, hid)
        pooled = mean_pool(flat, mask) if self.cfg.pooling == "mean" else flat[:, 0]  # (m·B, H)
        return linear(pooled.view(m, b, hid), self.head_w[lo:hi], self.head_b[lo:hi])  # (m, B, D)

    def student_outputs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lo: int = 0, hi: int | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hi = self.num_students if hi is None else hi
        last = self.hidden(input_ids, attention_mask, lo, hi, token_type_ids)[-1]
        return self.head(last, attention_mask, lo, hi)

    def combine(self, outputs: torch.Tensor, lo: int = 0) -> torch.Tensor:
        """Σ α_k S_k(x) over the students in ``outputs`` (m, B, D) → (B, D), then normalise."""
        m = outputs.shape[0]
        alpha = self.alpha[lo : lo + m].to(outputs.dtype).view(m, 1, 1)
        total = (alpha * outputs).sum(0).float()
        if self.cfg.task == "embed" and self.cfg.normalize:
            return F.normalize(total, dim=-1)
        return total

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, students: int | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Head output of the first ``students`` students (all if None), fused: (B, D)."""
        m = self.num_students if students is None else max(1, min(int(students), self.num_students))
        return self.combine(self.student_outputs(input_ids, attention_mask, 0, m, token_type_ids))

    def forward_one_by_one(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, students: int | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reference: each student on its own, outputs summed. Equals ``forward`` up to float error."""
        m = self.num_students if students is None else students
        outs = [self.student_outputs(input_ids, attention_mask, k, k + 1, token_type_ids) for k in range(m)]
        return self.combine(torch.cat(outs, 0))

    def prefix(self, m: int) -> StudentEnsemble:
        """A standalone copy holding only the first m students (for one ONNX graph per prefix)."""
        return self.select(0, m)

    def select(self, lo: int, hi: int) -> StudentEnsemble:
        """A standalone copy holding students lo..hi-1 with their α (and the shared embeddings)."""
        sub = StudentEnsemble(self.cfg, hi - lo, self.alpha[lo:hi].tolist())
        sub.embeddings.load_state_dict(self.embeddings.state_dict())
        with torch.no_grad():
            for src, dst in zip(self.layers, sub.layers, strict=False):
                for name in LAYER_PARAMS:
                    getattr(dst, name).copy_(getattr(src, name)[lo:hi])
            sub.head_w.copy_(self.head_w[lo:hi])
            sub.head_b.copy_(self.head_b[lo:hi])
        return sub.to(self.head_w.device, self.head_w.dtype)  # where and as the source lives

    def student_state(self, k: int) -> dict[str, torch.Tensor]:
        """Student k's own tensors (no student axis), as stored in students/k."""
        state = {
            f"layers.{i}.{n}": getattr(layer, n)[k].detach().cpu().contiguous()
            for i, layer in enumerate(self.layers)
            for n in LAYER_PARAMS
        }
        state["head_w"] = self.head_w[k].detach().cpu().contiguous()
        state["head_b"] = self.head_b[k].detach().cpu().contiguous()
        return state

    def load_student_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                for n in LAYER_PARAMS:
                    getattr(layer, n)[k].copy_(state[f"layers.{i}.{n}"])
            self.head_w[k].copy_(state["head_w"])
            self.head_b[k].copy_(state["head_b"])


class ThreadedEnsemble(nn.Module):
    """The alternative to fusion: students on their own threads (on CUDA, streams), summed.

    Torch's intra-op pool is one per process; with ``torch.set_num_threads(1)`` each student
    runs on its thread alone, so K students use up to ``threads`` cores at once. Used by the
    torch backend when ``student_threads`` > 1 (benchmarks/students.py measures both).
    """

    def __init__(self, ensemble: StudentEnsemble, threads: int | None = None) -> None:
        super().__init__()
        self.ensemble = ensemble
        self.num_students = ensemble.num_students
        self.pool = ThreadPoolExecutor(max_workers=threads or ensemble.num_students)
        self._streams: dict[torch.device, list] = {}  # made once per device: not per call

    def streams(self, device: torch.device, m: int) -> list:
        """m CUDA side streams on ``device``, each ordered after the caller's current stream."""
        if device not in self._streams:
            self._streams[device] = [torch.cuda.Stream(device) for _ in range(self.num_students)]
        caller = torch.cuda.current_stream(device)
        side = self._streams[device][:m]
        for s in side:
            s.wait_stream(caller)  # the inputs were written on the caller's stream
        return side

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, students: int | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ens = self.ensemble
        m = ens.num_students if students is None else max(1, min(int(students), ens.num_students))
        cuda = input_ids.is_cuda
        streams = self.streams(input_ids.device, m) if cuda else [None] * m

        def one(k: int) -> torch.Tensor:
            with torch.inference_mode():
                if streams[k] is None:
                    return ens.student_outputs(input_ids, attention_mask, k, k + 1, token_type_ids)
                with torch.cuda.stream(streams[k]):
                    return ens.student_outputs(input_ids, attention_mask, k, k + 1, token_type_ids)

        outs = list(self.pool.map(one, range(m)))
        if cuda:
            torch.cuda.synchronize()
        return ens.combine(torch.cat(outs, 0))


# --- storage ---------------------------------------------------------------------------------


def save_ensemble(model: StudentEnsemble, folder: Path) -> list[str]:
    """Write config, shared embeddings and one folder per student; return the student paths."""
    folder.mkdir(parents=True, exist_ok=True)
    model.cfg.save(folder)
    emb = {k: v.detach().cpu().contiguous() for k, v in model.embeddings.state_dict().items()}
    save_file(emb, str(folder / EMBEDDINGS_NAME))
    paths = []
    for k in range(model.num_students):
        rel = f"students/{k}"
        (folder / rel).mkdir(parents=True, exist_ok=True)
        save_file(model.student_state(k), str(folder / rel / STUDENT_NAME))
        paths.append(rel)
    return paths


def load_ensemble(folder: Path, manifest: Manifest) -> StudentEnsemble:
    """Read a student-ensemble artifact (safetensors only) into one fused module, in eval mode."""
    if not manifest.students:
        raise ArtifactError(f"{folder}: a student-ensemble manifest must list its students")
    cfg = StudentConfig.load(folder)
    model = StudentEnsemble(cfg, len(manifest.students), [s.alpha for s in manifest.students])
    emb_file = folder / EMBEDDINGS_NAME
    if not emb_file.exists():
        raise ArtifactError(f"{folder}: missing {EMBEDDINGS_NAME}")
    model.embeddings.load_state_dict(load_file(str(emb_file)))
    for k, entry in enumerate(manifest.students):
        path = folder / entry.path / STUDENT_NAME
        if not path.exists():
            raise ArtifactError(f"{folder}: student {k} has no weights at {path}")
        model.load_student_state(k, load_file(str(path)))
    return model.eval()


def build_ensemble(folder: Path, manifest: Manifest) -> BuiltModule:
    """Registry builder for ``architecture = "student-ensemble"``."""
    model = load_ensemble(folder, manifest)
    return BuiltModule(model, model.cfg.output_dim, model.num_students, None)
