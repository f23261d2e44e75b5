"""Transfer-set augmentation: originals first, copies distorted as configured, the real mask token."""

from __future__ import annotations

import pytest

from bertserve.compress.augment import AugmentOptions, augment, mask_token_of
from bertserve.errors import ConfigError


@pytest.fixture(scope="module")
def reviews() -> list[str]:
    from bertserve.data import rotten_tomatoes

    return rotten_tomatoes()[0][:300]


def test_originals_come_first_and_copies_are_new(reviews):
    out = augment(reviews, AugmentOptions(copies=3))
    assert out[: len(reviews)] == reviews
    assert len(reviews) < len(out) <= 4 * len(reviews)
    assert len(set(out)) == len(out)
    assert all(out[len(reviews):])


def test_deterministic_for_a_seed(reviews):
    assert augment(reviews, AugmentOptions(seed=1)) == augment(reviews, AugmentOptions(seed=1))
    assert augment(reviews, AugmentOptions(seed=1)) != augment(reviews, AugmentOptions(seed=2))


def test_mask_rate_matches_the_option(reviews):
    opts = AugmentOptions(copies=2, p_mask=0.2, p_swap=0.0, p_ngram=0.0, mask_token="[MASK]")
    copies = augment(reviews, opts)[len(reviews):]
    words = [w for c in copies for w in c.split()]
    share = sum(w == "[MASK]" for w in words) / len(words)
    assert 0.17 < share < 0.23


def test_ngram_copies_are_short_spans_of_their_text(reviews):
    opts = AugmentOptions(copies=1, p_mask=0.0, p_swap=0.0, p_ngram=1.0, max_ngram=3)
    copies = augment(reviews, opts)[len(reviews):]
    assert copies and all(1 <= len(c.split()) <= 3 for c in copies)
    assert all(any(c in r for r in reviews) for c in copies)


def test_swapped_words_come_from_the_texts(reviews):
    vocabulary = {w for r in reviews for w in r.split()}
    opts = AugmentOptions(copies=1, p_mask=0.0, p_swap=1.0, p_ngram=0.0)
    copies = augment(reviews, opts)[len(reviews):]
    assert {w for c in copies for w in c.split()} <= vocabulary
    assert sum(c not in reviews for c in copies) > len(reviews) // 2


@pytest.mark.parametrize(
    "bad", [{"copies": -1}, {"p_mask": 1.5}, {"p_mask": 0.6, "p_swap": 0.6}, {"max_ngram": 0}]
)
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        AugmentOptions(**bad)


def test_mask_token_is_the_tokenizers_special_token():
    from bertserve.artifact import load_manifest
    from bertserve.tokenizer import TextTokenizer

    token = mask_token_of(None)
    folder, manifest = load_manifest(None)
    tok = TextTokenizer(folder / manifest.tokenizer, manifest.max_seq_length)
    plain = tok.encode(["a film"]).ids[0]
    masked = tok.encode([f"a {token} film"]).ids[0]
    assert token == "[MASK]" and len(masked) == len(plain) + 1  # one token, not split into pieces


def test_students_with_another_tokenizer_get_no_mask_token(tmp_path):
    from bertserve.artifact import load_manifest
    from bertserve.compress.augment import options_for

    assert options_for(2, None).p_mask > 0  # teacher and students share the bundled tokenizer
    folder, _ = load_manifest(None)  # a copy of MiniLM whose tokenizer calls its mask <mask>
    other = tmp_path / "other"
    other.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            text = f.read_bytes()
            if f.name in ("tokenizer.json", "special_tokens_map.json", "tokenizer_config.json"):
                text = text.replace(b"[MASK]", b"<mask>")
            (other / f.name).write_bytes(text)
    assert mask_token_of(other) == "<mask>"
    opts = options_for(2, other, None)
    assert opts.mask_token == "<mask>" and opts.p_mask > 0
    assert options_for(2, other, "default").p_mask == 0.0
    tok = other / "tokenizer.json"  # a tokenizer without any mask token: swapped words only
    tok.write_bytes(tok.read_bytes().replace(b"<mask>", b"<unused>"))
    assert mask_token_of(other) is None and options_for(2, other).p_mask == 0.0
