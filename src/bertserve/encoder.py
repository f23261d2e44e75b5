"""The encoder: tokenise → run the backend on length-grouped batches → post-process.

This is the in-process API (``Encoder.load().embed(texts)``, ``.classify(texts)``,
``.score(query, documents)`` for a cross-encoder); the server reuses its pieces but batches
across requests instead of within one call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .artifact import Manifest
from .errors import InputError
from .export.prepare import prepare
from .postprocess import softmax
from .runtime import Backend, BackendOptions, Batch, load_backend
from .tokenizer import TextTokenizer, Tokenized


@dataclass(slots=True)
class Prediction:
    label: str
    score: float
    probabilities: dict[str, float]
    logits: list[float]


def length_groups(lengths: list[int], max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches whose padded size fits the budgets.

    Sorting first means each batch pads only to its own longest member.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i]  # the longest so far, since the order is ascending
        if current and (len(current) >= max_batch or width * (len(current) + 1) > max_tokens):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class Encoder:
    """A loaded model that embeds or classifies lists of texts."""

    def __init__(self, folder: Path, manifest: Manifest, backend: Backend) -> None:
        self.folder = folder
        self.manifest = manifest
        self.backend = backend
        self.tokenizer = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)

    @classmethod
    def load(cls, path: str | Path | None = None, **options: object) -> Encoder:
        """Load an artifact or HF checkpoint (None → bundled all-MiniLM-L6-v2).

        Options are those of :class:`~bertserve.runtime.BackendOptions`; a torch checkpoint
        that a graph runtime is to run is exported to ONNX first, once (cached).
        """
        opts = BackendOptions(**options)  # type: ignore[arg-type]
        folder, _, backend, precision = prepare(path, opts)
        folder, manifest, runner = load_backend(folder, replace(opts, backend=backend, precision=precision))  # type: ignore[arg-type]
        return cls(folder, manifest, runner)

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels or [])

    def tokenize(self, texts: list[str], *, pairs: list[str] | None = None,
                 truncate: bool = True) -> Tokenized:
        if not texts:
            raise InputError("no texts given")
        if (pairs is not None) != self.manifest.pairs:
            reads = "text pairs: pass pairs=" if self.manifest.pairs else "single texts, not pairs"
            raise InputError(f"model '{self.manifest.name}' reads {reads}")
        if pairs is not None and len(pairs) != len(texts):
            raise InputError(f"{len(texts)} texts but {len(pairs)} pairs")
        return self.tokenizer.encode(texts, pairs=pairs, truncate=truncate)

    def run_ids(
        self,
        ids: list[list[int]],
        *,
        max_batch: int = 32,
        max_tokens: int = 8192,
        students: int | None = None,
        type_starts: list[int] | None = None,
    ) -> np.ndarray:
        """Head outputs for pre-tokenised texts (pairs: with ``type_starts``), in input order,
        with minimal padding."""
        out = np.empty((len(ids), self.backend.output_dim), dtype=np.float32)
        for group in length_groups([len(x) for x in ids], max_batch, max_tokens):
            starts = None if type_starts is None else [type_starts[i] for i in group]
            batch = Batch.from_ids([ids[i] for i in group], self.tokenizer.pad_id, students, starts)
            out[group] = self.backend.run(batch)
        return out

    def run_texts(self, texts: list[str], pairs: list[str] | None = None, **kwargs: object) -> np.ndarray:
        tok = self.tokenize(texts, pairs=pairs)
        return self.run_ids(tok.ids, type_starts=tok.type_starts, **kwargs)  # type: ignore[arg-type]

    def _expect(self, task: str, use: str) -> None:
        if self.task != task:
            kind = {"embed": "an embedder", "classify": "a classifier", "rerank": "a reranker"}[self.task]
            raise InputError(f"model '{self.manifest.name}' is {kind}; use {use}()")

    def embed(self, texts: list[str], **kwargs: object) -> np.ndarray:
        """(N, D) float32 embeddings (normalised if the model is)."""
        self._expect("embed", {"classify": "classify", "rerank": "score"}.get(self.task, "embed"))
        return self.run_texts(texts, **kwargs)

    def classify(self, texts: list[str], pairs: list[str] | None = None,
                 **kwargs: object) -> list[Prediction]:
        """Labels of texts, or of (text, pair) pairs for a pair classifier."""
        self._expect("classify", {"embed": "embed", "rerank": "score"}.get(self.task, "classify"))
        return self.predictions(self.run_texts(texts, pairs, **kwargs))

    def score(self, query: str | list[str], documents: list[str], **kwargs: object) -> np.ndarray:
        """A cross-encoder's raw relevance scores (logits), one per document, in input order.

        ``query`` is one query for every document, or one query per document.
        """
        self._expect("rerank", {"embed": "embed", "classify": "classify"}.get(self.task, "score"))
        queries = [query] * len(documents) if isinstance(query, str) else list(query)
        return self.run_texts(queries, documents, **kwargs)[:, 0]

    def predictions(self, logits: np.ndarray) -> list[Prediction]:
        probs = softmax(logits)
        labels = self.labels
        result = []
        for row_logits, row in zip(logits, probs, strict=True):
            best = int(row.argmax())
            result.append(
                Prediction(
                    label=labels[best],
                    score=float(row[best]),
                    probabilities={lab: float(p) for lab, p in zip(labels, row, strict=True)},
                    logits=[float(x) for x in row_logits],
                )
            )
        return result
