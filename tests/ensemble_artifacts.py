"""Write a student ensemble built in a test as an artifact (manifest, weights, the tokenizer)."""

from __future__ import annotations

from pathlib import Path

from bertserve.artifact import Manifest, StudentEntry, copy_tokenizer, load_manifest, save_manifest
from bertserve.models.ensemble import StudentEnsemble, save_ensemble


def save_ensemble_artifact(model: StudentEnsemble, alphas: list[float], minilm_dir: Path, out: Path) -> Path:
    """``out`` as an embedding ensemble of ``model``'s students (the MiniLM tokenizer)."""
    paths = save_ensemble(model.eval(), out)
    src_folder, src = load_manifest(minilm_dir)
    students = [StudentEntry(path=p, alpha=a) for p, a in zip(paths, alphas, strict=True)]
    save_manifest(out, Manifest(name="ens", architecture="student-ensemble", normalize=True,
                                max_seq_length=256, tokenizer=copy_tokenizer(src_folder, src, out),
                                output_dim=384, students=students))
    return out
