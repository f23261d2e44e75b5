"""The corpora that ship in packages: splits, sentence splitting, lookup by name."""

from __future__ import annotations

import re

import pytest

from bertserve.data import corpus, news_sentences, rotten_tomatoes, rotten_tomatoes_splits
from bertserve.errors import ConfigError


def test_review_splits_are_disjoint_seeded_and_cover_every_review() -> None:
    splits = rotten_tomatoes_splits()
    sizes = {k: len(v.texts) for k, v in splits.items()}
    assert sum(sizes.values()) == len(rotten_tomatoes()[0])
    assert sizes["train"] == pytest.approx(0.8 * sum(sizes.values()), abs=1)
    assert splits["test"].texts == rotten_tomatoes_splits()["test"].texts
    assert rotten_tomatoes_splits(seed=1)["test"].texts != splits["test"].texts
    assert all(len(s.texts) == len(s.labels) and set(s.labels) == {0, 1} for s in splits.values())


def test_news_sentences_are_split_at_every_sentence_end() -> None:
    sentences = news_sentences()
    assert len(sentences) > 50_000
    assert all(len(s.split()) >= 4 for s in sentences)
    assert all(s == " ".join(s.split()) for s in sentences[:5000])  # whitespace collapsed
    inner_end = re.compile(r"[.!?]\s+[A-Z]")
    assert sum(bool(inner_end.search(s)) for s in sentences) == 0
    assert sum(s.endswith((".", "!", "?", '"')) for s in sentences) > 0.9 * len(sentences)


def test_corpus_by_name_by_file_and_unknown(tmp_path) -> None:
    assert corpus("news") is news_sentences()
    assert corpus("reviews") == rotten_tomatoes()[0]
    path = tmp_path / "texts.txt"
    path.write_text("  first text \n\nsecond text\n", encoding="utf-8")
    assert corpus(str(path)) == ["first text", "second text"]
    with pytest.raises(ConfigError, match="news"):
        corpus("no-such-corpus")


def test_labelled_file_reads_label_tab_text(tmp_path):
    from bertserve.data import labelled_file

    path = tmp_path / "x.tsv"
    path.write_text("pos\tgreat fun\nneg\ta bore\tto sit through\nno tab here\npos\tloved it\n")
    split, names = labelled_file(path)
    assert names == ["neg", "pos"] and split.labels == [1, 0, 1]
    assert split.texts == ["great fun", "a bore\tto sit through", "loved it"]
    split, names = labelled_file(path, ["pos", "neg"])
    assert names == ["pos", "neg"] and split.labels == [0, 1, 0]
    with pytest.raises(ConfigError, match="not the classifier's"):
        labelled_file(path, ["pos", "meh"])
    (tmp_path / "empty.tsv").write_text("no labels at all\n")
    with pytest.raises(ConfigError, match="label<TAB>text"):
        labelled_file(tmp_path / "empty.tsv")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"", "holds no text"), (b"  \n\n\t\n", "holds no text"),
     (b"\xff\xfe bad bytes\n", "not UTF-8"), ("dir", "not a file")],
    ids=["missing", "empty", "blank-lines", "not-utf8", "a-folder"],
)
def test_a_corpus_file_without_texts_is_a_config_error(tmp_path, content, message) -> None:
    """An empty corpus used to reach np.concatenate (static INT8) or prune a vocabulary to the
    specials: every command reads a user's corpus here, so it fails here, with one clear line."""
    path = tmp_path / "texts.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        corpus(str(path))


def test_a_missing_labelled_file_is_a_config_error(tmp_path) -> None:
    from bertserve.data import labelled_file

    with pytest.raises(ConfigError, match="does not exist"):
        labelled_file(tmp_path / "nope.tsv")


def test_ranking_split_holds_out_whole_articles() -> None:
    """Test headlines, their leads and every test candidate come from articles training never sees."""
    from bertserve.data import news_articles, ranking_splits

    splits = ranking_splits()
    train, test = splits["train"], splits["test"]
    assert len(test) == 300 and len(train) > 3000
    train_ids = {q.article_id for q in train.queries}
    assert not train_ids & {q.article_id for q in test.queries}
    train_titles = {q.query.lower() for q in train.queries}
    assert not any(q.query.lower() in train_titles for q in test.queries)
    train_passages = {p for q in train.queries for p in q.passages}
    assert not train_passages & {p for q in test.queries for p in q.passages}
    assert set(test.groups) == {30} and set(train.groups) == {8}
    assert all(sum(q.labels) == 1 for q in (*train.queries, *test.queries))
    assert all(len(set(q.passages)) == len(q.passages) for q in test.queries)
    by_id = {a.article_id: a for a in news_articles()}
    for q in test.queries[:50]:  # the relevant passage is the query's own article's lead
        article = by_id[q.article_id]
        assert q.query == article.title
        assert q.passages[q.labels.index(1)].startswith(article.sentences[0])
    assert [p.index(1) for p in (q.labels for q in test.queries)] != [0] * 300  # shuffled in
    queries, passages, labels = test.pairs()
    assert len(queries) == len(passages) == len(labels) == 9000 and sum(labels) == 300
    assert ranking_splits() == splits  # cached, seeded
    assert ranking_splits(seed=1)["test"].queries[0] != test.queries[0]


def test_ood_sentiment_is_balanced_labelled_tweets_unlike_the_reviews() -> None:
    from bertserve.data import ood_sentiment

    split = ood_sentiment()
    assert len(split.texts) == len(split.labels) == 2000
    assert split.labels.count(0) == split.labels.count(1) == 1000
    assert len(set(split.texts)) == 2000 and all(len(t.split()) >= 3 for t in split.texts)
    assert ood_sentiment(seed=0).texts == split.texts and ood_sentiment(seed=1).texts != split.texts
    assert not set(split.texts) & set(rotten_tomatoes()[0])
    assert sum("@" in t for t in split.texts) > 0.8 * len(split.texts)  # tweets, not reviews
    pairs = dict(zip(split.texts, split.labels, strict=True))
    assert any(pairs[t] == 1 and "thank" in t.lower() for t in pairs)
    assert not any("deflategate" in t.lower() for t in pairs)
    with pytest.raises(ConfigError, match="per_label"):
        ood_sentiment(per_label=100_000)
