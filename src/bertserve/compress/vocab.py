"""Vocabulary pruning: keep the tokens a corpus uses, shrink the embedding matrix to match.

In MiniLM the word embeddings are half of all parameters (30,522 × 384), yet a deployment's
traffic uses a fraction of the vocabulary. We keep the special tokens, every single-character
piece (so an unseen word splits into characters instead of collapsing to [UNK]) and the most
frequent corpus tokens up to ``coverage`` of token occurrences and at most ``max_size`` rows,
then renumber ids in their old order and slice the embedding rows.

WordPiece matches the longest piece in the vocabulary; every piece of an in-vocabulary text is
still there and no longer piece was added, so such a text tokenises to the same pieces and
its outputs are identical. ``tokenizer/id_map.json`` lists the old id of each new id.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ..artifact import check_out, staged_out
from ..errors import ArtifactError, ConfigError
from .artifacts import (
    finish,
    load_torch_source,
    read_config,
    read_state,
    write_weights,
)

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass(slots=True, frozen=True)
class VocabConfig:
    """corpora: names for :func:`corpus_texts`; coverage: share of the corpus's token
    occurrences the kept vocabulary must cover (1.0 = every token seen); max_size: cap on the
    kept rows (None = no cap); keep_chars: keep all one-character pieces as an [UNK] fallback."""

    corpora: tuple[str, ...] = ("tweets", "reviews:train")
    coverage: float = 1.0
    max_size: int | None = None
    keep_chars: bool = True

    def check(self) -> None:
        if not 0.0 < self.coverage <= 1.0:
            raise ConfigError(f"coverage must be in (0, 1], got {self.coverage}")
        if self.max_size is not None and self.max_size < len(SPECIALS):
            raise ConfigError(f"max_size must be at least {len(SPECIALS)}")


def corpus_texts(name: str) -> list[str]:
    """A corpus by name; ``reviews:train`` is the training split, so held-out reviews stay unseen."""
    from ..data import corpus, rotten_tomatoes_splits

    if name.startswith("reviews:"):
        split = name.split(":", 1)[1]
        splits = rotten_tomatoes_splits()
        if split not in splits:
            raise ConfigError(f"unknown split {split!r} (train, validation, test)")
        return splits[split].texts
    return corpus(name)


def load_tokenizer(path: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    return tok


def count_tokens(tok: Tokenizer, texts: list[str]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for enc in tok.encode_batch(texts):
        counts.update(enc.ids)
    return counts


def select_ids(tok_json: dict[str, Any], counts: Counter[int], config: VocabConfig) -> list[int]:
    """Old ids to keep, ascending: specials, characters, then tokens by frequency."""
    vocab: dict[str, int] = tok_json["model"]["vocab"]
    keep = {vocab[t] for t in SPECIALS if t in vocab}
    keep |= {a["id"] for a in tok_json.get("added_tokens", [])}
    if config.keep_chars:
        keep |= {i for t, i in vocab.items() if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    limit = config.max_size or len(vocab)
    if len(keep) > limit:
        raise ConfigError(f"max_size {limit} is below the {len(keep)} special/character tokens "
                          "(raise it or pass keep_chars=False)")
    total = sum(counts.values())
    covered = sum(counts[i] for i in keep)
    for i, n in counts.most_common():
        if len(keep) >= limit or covered >= config.coverage * total:
            break
        if i not in keep:
            keep.add(i)
            covered += n
    return sorted(keep)


def rewrite_tokenizer(tok_json: dict[str, Any], kept: list[int]) -> dict[str, Any]:
    """The tokenizer.json for the kept ids, renumbered 0..n-1 in their old order."""
    new_id = {old: new for new, old in enumerate(kept)}
    id_to_tok = {i: t for t, i in tok_json["model"]["vocab"].items()}
    out = json.loads(json.dumps(tok_json))
    out["model"]["vocab"] = {id_to_tok[old]: new for new, old in enumerate(kept)}
    for added in out.get("added_tokens", []):
        added["id"] = new_id[added["id"]]
    post = out.get("post_processor") or {}
    for special in (post.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if post.get("type") == "BertProcessing":
        for key in ("sep", "cls"):
            post[key] = [post[key][0], new_id[post[key][1]]]
    if out.get("padding"):
        out["padding"]["pad_id"] = new_id.get(out["padding"]["pad_id"], 0)
    return out


def coverage(original: Tokenizer, pruned: Tokenizer, kept: list[int], texts: list[str]) -> dict[str, float]:
    """Share of texts that tokenise exactly as before, of token occurrences kept, [UNK] rate."""
    unk = pruned.token_to_id("[UNK]")
    kept_set = set(kept)
    same = tokens = kept_tokens = unks = 0
    for a, b in zip(original.encode_batch(texts), pruned.encode_batch(texts), strict=True):
        same += [kept[i] for i in b.ids] == a.ids
        tokens += len(a.ids)
        kept_tokens += sum(1 for i in a.ids if i in kept_set)
        unks += sum(1 for i in b.ids if i == unk)
    n = max(1, len(texts))
    return {"texts_in_vocab": round(same / n, 4), "tokens_in_vocab": round(kept_tokens / max(1, tokens), 4),
            "unk_rate": round(unks / max(1, tokens), 5)}


def embedding_key(state: dict[str, Any]) -> str:
    keys = [k for k in state if k.endswith("word_embeddings.weight")]
    if len(keys) != 1:
        raise ArtifactError(f"expected one word_embeddings.weight tensor, found {keys}")
    return keys[0]


def prune_vocab(src: str | Path | None, out: str | Path, config: VocabConfig = VocabConfig(),
                *, overwrite: bool = False) -> Path:
    """Write a copy of the torch artifact ``src`` with a pruned vocabulary to ``out``.

    ``out`` appears only when the whole artifact is written; a failed run leaves it as it was.
    """
    config.check()
    check_out(out, overwrite=overwrite)  # before the slow token count
    folder, manifest = load_torch_source(src)
    tok_dir = folder / manifest.tokenizer
    tok_json = json.loads((tok_dir / "tokenizer.json").read_text())
    if tok_json.get("model", {}).get("type") != "WordPiece":
        raise ArtifactError("vocabulary pruning supports WordPiece tokenizers (BERT family) only")
    original = load_tokenizer(tok_dir / "tokenizer.json")
    texts = [t for name in config.corpora for t in corpus_texts(name)]
    kept = select_ids(tok_json, count_tokens(original, texts), config)
    new_json = rewrite_tokenizer(tok_json, kept)

    with staged_out(out, overwrite=overwrite) as tmp:
        weights = folder / manifest.weights
        state = read_state(weights)
        key = embedding_key(state)
        rows_before = int(state[key].shape[0])
        state[key] = state[key][kept].clone()
        hf_config = read_config(weights)
        hf_config["vocab_size"] = len(kept)
        pad = hf_config.get("pad_token_id") or 0
        hf_config["pad_token_id"] = kept.index(pad) if pad in kept else 0
        slim_file = weights / "slim.json"
        slim = json.loads(slim_file.read_text()) if slim_file.exists() else None
        write_weights(tmp, state, hf_config, slim)

        new_tok_dir = tmp / "tokenizer"
        new_tok_dir.mkdir(parents=True, exist_ok=True)
        (new_tok_dir / "tokenizer.json").write_text(json.dumps(new_json, ensure_ascii=False))
        id_to_tok = {i: t for t, i in tok_json["model"]["vocab"].items()}
        (new_tok_dir / "vocab.txt").write_text("".join(id_to_tok[i] + "\n" for i in kept), encoding="utf-8")
        (new_tok_dir / "id_map.json").write_text(json.dumps(kept))
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (tok_dir / name).exists():
                (new_tok_dir / name).write_text((tok_dir / name).read_text())
        pruned = load_tokenizer(new_tok_dir / "tokenizer.json")
        step = {
            "step": "prune-vocab",
            "config": asdict(config),
            "rows": {"before": rows_before, "after": len(kept)},
            "corpus_coverage": coverage(original, pruned, kept, texts[:: max(1, len(texts) // 5000)]),
        }
        finish(folder, manifest, tmp, step, tokenizer_done=True)
    return Path(out)
