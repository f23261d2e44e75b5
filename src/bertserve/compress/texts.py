"""Transfer and held-out texts for distill / stack / refit / optimize, by corpus name.

One place decides what a ``--corpus`` means, so a command ``bertserve optimize`` prints runs
exactly what it ran. A classifier's held-out texts are the Rotten Tomatoes test split (never a
transfer text); a reranker's are held-out news queries with their candidates.
"""

from __future__ import annotations

from typing import NamedTuple

from ..artifact import Manifest
from ..errors import ConfigError


class TransferTexts(NamedTuple):
    texts: list[str]
    labels: list[int] | None  # classifier: the true label of each transfer text, −1 where unknown
    eval_texts: list[str]
    eval_labels: list[int] | None  # a reranker's: the relevance of each held-out pair
    pairs: list[str] | None = None  # a reranker's: the passage of each query in ``texts``
    eval_pairs: list[str] | None = None
    eval_groups: list[int] | None = None  # a reranker's: candidates per held-out query
    groups: list[int] | None = None  # a reranker's news pairs: candidates per training query

    def pair_kwargs(self) -> dict:
        """The pair arguments of distill / stack / refit (none for single texts)."""
        if self.pairs is None:
            return {}
        return {"pairs": self.pairs, "eval_pairs": self.eval_pairs or None,
                "eval_groups": self.eval_groups or None}


def read_pairs(path: str) -> tuple[list[str], list[str]]:
    """(queries, passages) from a file of query<TAB>passage lines (lines without a tab skipped)."""
    from ..data import read_text_file

    rows = [line.split("\t", 1) for line in read_text_file(path, "pairs").splitlines() if "\t" in line]
    if not rows:
        raise ConfigError(f"{path}: expected lines 'query<TAB>passage'")
    return [r[0] for r in rows], [r[1] for r in rows]


def rerank_texts(corpus: str | None, n: int, eval_n: int) -> TransferTexts:
    """A reranker's transfer pairs (news ranking train split, or a query<TAB>passage file) and
    its held-out queries (the first ``eval_n`` of the test split, with their relevance)."""
    from ..data import ranking_splits

    splits = ranking_splits()
    groups = None
    if corpus in (None, "news"):  # whole queries (8 pairs each), at least one
        train = splits["train"].head(max(1, n // max(splits["train"].groups)))
        (queries, passages, _), groups = train.pairs(), train.groups
    elif corpus.endswith(".tsv"):  # pairs without their queries' groups: plain MSE on the score
        queries, passages = read_pairs(corpus)
        queries, passages = queries[:n], passages[:n]
    else:
        raise ConfigError("a reranker's students learn from (query, passage) pairs: --corpus news (the "
                          "news ranking train split) or a .tsv file of query<TAB>passage lines, "
                          f"not {corpus!r}")
    ev = splits["test"].head(eval_n)
    eq, ep, ey = ev.pairs()
    return TransferTexts(queries, None, eq, ey if eval_n else None, passages, ep, ev.groups, groups)


Part = tuple[list[str], list[int] | None]  # a source's texts and (classifier) labels


def _source(name: str, manifest: Manifest) -> Part:
    """One corpus's texts and, for a classifier where it has them, their labels."""
    from ..data import corpus as load_corpus
    from ..data import labelled_file, rotten_tomatoes_splits

    classify = manifest.task == "classify"
    if name.endswith(".tsv"):
        split, _ = labelled_file(name, manifest.labels if classify else None)
        return split.texts, split.labels if classify else None
    if classify and name == "reviews":  # the RT train split: labelled, and never the test split
        train = rotten_tomatoes_splits()["train"]
        return train.texts, train.labels
    return load_corpus(name), None


def _interleaved(parts: list[Part], n: int) -> Part:
    """Up to ``n`` texts, an equal share from each part (a short part's rest goes to the others),
    taken in turn so every batch mixes the sources; labels −1 where a part has none."""
    share, left = [0] * len(parts), n
    while left > 0:
        open_ = [i for i, (texts, _) in enumerate(parts) if share[i] < len(texts)]
        if not open_:
            break
        each = max(1, left // len(open_))
        for i in open_:
            take = min(each, len(parts[i][0]) - share[i], left)
            share[i] += take
            left -= take
    labelled = any(labels is not None for _, labels in parts)
    texts: list[str] = []
    labels: list[int] = []
    for row in range(max(share, default=0)):
        for i, (part_texts, part_labels) in enumerate(parts):
            if row < share[i]:
                texts.append(part_texts[row])
                labels.append(part_labels[row] if part_labels is not None else -1)
    return texts, labels if labelled else None


def transfer_texts(corpus: str | None, n: int, eval_n: int, manifest: Manifest) -> TransferTexts:
    """Transfer and held-out texts; ``corpus`` may join sources with ``+`` (e.g. reviews+tweets).

    Classifier transfer texts carry labels when they are the RT train split (``reviews``) or a
    .tsv file with the teacher's label names, −1 elsewhere; its held-out texts are the RT test
    split. An embedder's held-out texts are the last ``eval_n`` of a single corpus (none for a
    joined one). A reranker's are (query, passage) pairs.
    """
    from ..data import rotten_tomatoes_splits

    if manifest.task == "rerank":
        return rerank_texts(corpus, n, eval_n)
    names = [part.strip() for part in (corpus or "tweets").split("+") if part.strip()]
    if not names:
        raise ConfigError(f"no corpus named in {corpus!r}")
    parts = [_source(name, manifest) for name in names]
    texts, labels = _interleaved(parts, n) if len(parts) > 1 else (parts[0][0][:n], parts[0][1])
    if labels is not None and len(parts) == 1:
        labels = labels[:n]
    if manifest.task == "classify":
        test = rotten_tomatoes_splits()["test"]
        return TransferTexts(texts, labels, test.texts[:eval_n], test.labels[:eval_n])
    whole = parts[0][0]
    if len(parts) == 1 and eval_n and len(whole) > n + eval_n:
        return TransferTexts(texts, None, whole[-eval_n:], None)
    return TransferTexts(texts, None, [], None)


def augmented(data: TransferTexts, copies: int, teacher: str | None,
              init_from: str | None) -> TransferTexts:
    """``data`` with ``copies`` distorted copies of each transfer text (copies carry no label)."""
    if not copies:
        return data
    if data.pairs is not None:
        raise ConfigError("--augment distorts single texts; a reranker's transfer set is pairs")
    from .augment import augment, options_for

    more = augment(data.texts, options_for(copies, teacher, init_from))
    labels = data.labels + [-1] * (len(more) - len(data.texts)) if data.labels is not None else None
    return data._replace(texts=more, labels=labels)
