"""More transfer texts from few: distorted copies the teacher labels (``--augment``).

A classifier comes with few labelled texts (10,246 review train texts), and a shallow student
learns the teacher's function better from more inputs near them, each labelled by the teacher's
soft targets. This is the augmentation of Tang et al. (2019, "Distilling task-specific knowledge
from BERT into simple neural networks"): in each copy every word is, with ``p_mask``, replaced by
the tokenizer's mask token or, with ``p_swap``, by a word drawn from the whole text set (they
drew one of the same part of speech; no tagger here); then, with ``p_ngram``, the copy is cut to
a random n-gram of 1 to ``max_ngram`` words. The teacher never sees labels for the copies, only
its own outputs, so no label can be wrong.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class AugmentOptions:
    copies: int = 4  # distorted copies per text
    p_mask: float = 0.1
    p_swap: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    mask_token: str = "[MASK]"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ConfigError(f"augment copies must be ≥ 0, not {self.copies}")
        for name in ("p_mask", "p_swap", "p_ngram"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], not {p}")
        if self.p_mask + self.p_swap > 1.0:
            raise ConfigError("p_mask + p_swap must not exceed 1")
        if self.max_ngram < 1:
            raise ConfigError(f"max_ngram must be ≥ 1, not {self.max_ngram}")


def augment(texts: list[str], opts: AugmentOptions = AugmentOptions()) -> list[str]:
    """The texts, then ``opts.copies`` distorted copies of each (repeats and empty copies dropped).

    Deterministic for a seed; the originals keep their order and come first, so the first
    ``len(texts)`` entries of the result are the plain transfer set.
    """
    rng = random.Random(opts.seed)
    vocabulary = [w for t in texts for w in t.split()]
    seen = set(texts)
    out = list(texts)
    for _ in range(opts.copies):
        for text in texts:
            copy = _distort(text.split(), vocabulary, rng, opts)
            if copy and copy not in seen:
                seen.add(copy)
                out.append(copy)
    return out


def _distort(words: list[str], vocabulary: list[str], rng: random.Random, opts: AugmentOptions) -> str:
    out = []
    for w in words:
        r = rng.random()
        if r < opts.p_mask:
            out.append(opts.mask_token)
        elif r < opts.p_mask + opts.p_swap and vocabulary:
            out.append(rng.choice(vocabulary))
        else:
            out.append(w)
    if out and rng.random() < opts.p_ngram:
        n = rng.randint(1, min(opts.max_ngram, len(out)))
        start = rng.randint(0, len(out) - n)
        out = out[start : start + n]
    return " ".join(out)


def mask_token_of(model: str | Path | None) -> str | None:
    """The mask token in text form of a model's tokenizer (BERT's ``[MASK]``, MPNet's ``<mask>``)."""
    from ..artifact import load_manifest
    from ..tokenizer import TextTokenizer

    folder, manifest = load_manifest(model)
    return TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length).mask_token


def options_for(
    copies: int, teacher: str | Path | None, init_from: str | Path | None = None
) -> AugmentOptions:
    """Augmentation for distilling ``teacher`` into students that start from ``init_from``.

    The mask token must mean "masked" to both tokenizers; when the teacher's tokenizer has none,
    or the student's is another one (e.g. MiniLM students of an MPNet teacher) whose token
    differs, copies swap words only.
    """
    mask = mask_token_of(teacher)
    if mask is None or (init_from is not None and mask_token_of(init_from) != mask):
        return AugmentOptions(copies=copies, p_mask=0.0)
    return AugmentOptions(copies=copies, mask_token=mask)
