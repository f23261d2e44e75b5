"""Quality of a candidate against the teacher, on text training never saw and on another source.

- Classifiers: accuracy on the held-out test split (Rotten Tomatoes' for a sentiment teacher)
  and on out-of-domain labelled sentiment text, each as a share of the teacher's own accuracy
  there, and agreement with the teacher.
- Embedders: what a retrieval user feels, recall@10 of the teacher's own ten nearest neighbours
  over a corpus of a few thousand texts from a source the transfer set does not use, and the
  mean cosine to the teacher's embeddings on held-out texts of the transfer source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..artifact import Manifest
from ..compress.quality import compare
from ..encoder import Encoder
from ..errors import ConfigError

SOURCES = ("reviews", "news", "tweets")


@dataclass(slots=True)
class Score:
    """The candidate's figures; ``value`` is the one the quality floor applies to."""

    metric: str  # "accuracy share" (classifiers) | "recall@10" (embedders)
    value: float
    ood: float | None  # classifiers: accuracy share out of domain; embedders: None
    details: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def neighbours(emb: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of each query row's ``k`` nearest corpus rows by cosine, itself left out."""
    sims = _unit(emb[queries]) @ _unit(emb).T
    sims[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-sims, axis=1)[:, :k]


def recall_at_k(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean share of the reference's neighbours that the candidate's neighbours keep."""
    k = reference.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(reference, candidate, strict=True)]))


def load(path: str | Path, backend: str, precision: str | None, threads: int | None) -> Encoder:
    return Encoder.load(path, backend=backend, precision=precision, threads=threads)


class Judge:
    """Held-out sets and the teacher's answers on them, computed once; then any candidate."""

    def __init__(self, teacher: Encoder, manifest: Manifest, transfer: str, *, eval_n: int = 1000,
                 corpus_n: int = 3000, queries: int = 300) -> None:
        from ..data import corpus, rotten_tomatoes_splits

        self.task = manifest.task
        if self.task == "classify":
            test = rotten_tomatoes_splits()["test"]
            self.sets = {"test": (test.texts[:eval_n], np.asarray(test.labels[:eval_n]))}
            ood = out_of_domain(manifest)
            if ood is not None:
                self.sets["ood"] = ood
            self.reference = {name: teacher.run_texts(texts) for name, (texts, _) in self.sets.items()}
            return
        if self.task != "embed":
            raise ConfigError(f"bertserve optimize serves classifiers and embedders; {manifest.name} is a "
                              f"{self.task} model: for a reranker run distill/quantize and measure with "
                              "benchmarks/rerank.py")
        used = {part.split(":")[0] for part in transfer.split("+")}
        other = next((s for s in SOURCES if s not in used), None)
        if other is None:
            raise ConfigError(f"the transfer set {transfer!r} uses every shipped source; keep one "
                              f"of {', '.join(SOURCES)} out for the retrieval check")
        own = next(iter(sorted(used & set(SOURCES))), None) or other
        self.held = corpus(own)[-eval_n:]
        self.corpus = corpus(other)[-corpus_n:]
        self.sources = {"held_out": own, "retrieval_corpus": other}
        self.queries = np.random.default_rng(0).choice(len(self.corpus), min(queries, len(self.corpus)),
                                                       replace=False)
        self.reference = {"held": teacher.embed(self.held),
                          "near": neighbours(teacher.embed(self.corpus), self.queries)}

    def score(self, enc: Encoder) -> Score:
        if self.task == "classify":
            details: dict[str, float] = {}
            shares: dict[str, float] = {}
            for name, (texts, labels) in self.sets.items():
                out = enc.run_texts(texts)
                acc, ref = accuracy(out, labels), accuracy(self.reference[name], labels)
                agree = float((out.argmax(-1) == self.reference[name].argmax(-1)).mean())
                details |= {f"{name}_accuracy": acc, f"{name}_teacher_accuracy": ref,
                            f"{name}_agreement": agree}
                shares[name] = acc / ref if ref else 0.0
            return Score("accuracy share", shares["test"], shares.get("ood"), details)
        cos = compare(self.reference["held"], enc.embed(self.held), "embed").mean
        recall = recall_at_k(self.reference["near"], neighbours(enc.embed(self.corpus), self.queries))
        return Score("recall@10", recall, None, {"cosine": cos, "recall@10": recall})


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(-1) == labels).mean())


def out_of_domain(manifest: Manifest) -> tuple[list[str], np.ndarray] | None:
    """Labelled sentiment text from other sources, for a teacher whose labels are RT's
    (negative, positive); None for other label sets."""
    from .. import data

    if manifest.labels != data.RT_LABELS:
        return None
    split = data.ood_sentiment()
    return split.texts, np.asarray(split.labels)
