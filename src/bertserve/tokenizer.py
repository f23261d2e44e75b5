"""Fast tokenisation with truncation to the model's limit and no padding (we pad per batch).

A cross-encoder reads a *pair* (query, passage) as ``[CLS] a [SEP] b [SEP]``; its second segment
has token type 1. A pair is cut ``longest_first`` (the longer side loses a token at a time),
as Hugging Face does. The type ids of a pair are 0 … 0 1 … 1, so one number per text, where the
1s start (``type_starts``), carries them: derived from the ids it would be wrong for a query
that itself contains "[SEP]".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from .errors import ArtifactError, TextTooLongError


@dataclass(slots=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[bool]
    type_starts: list[int] | None = None  # pairs: index of each text's first type-1 token

    @property
    def total_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


class TextTokenizer:
    """Wraps a Hugging Face ``tokenizer.json``; the Rust encoder releases the GIL."""

    def __init__(self, folder: Path, max_length: int) -> None:
        path = folder / "tokenizer.json"
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise ArtifactError(f"cannot read tokenizer {path}: {exc}") from exc
        self._tok.no_padding()
        self._tok.no_truncation()
        self.max_length = max_length
        self.pad_id = self._tok.token_to_id("[PAD]") or 0
        self.vocab_size = self._tok.get_vocab_size()
        # the special mask token in text form (BERT's [MASK], MPNet's <mask>): for augmentation
        specials = [t.content for t in self._tok.get_added_tokens_decoder().values() if t.special]
        self.mask_token = next((t for t in specials if "mask" in t.lower()), None)
        self._pair_toks: dict[int, Tokenizer] = {}  # by length limit: truncation lives on the object

    def _pair_tokenizer(self, limit: int) -> Tokenizer:
        tok = self._pair_toks.get(limit)
        if tok is None:
            tok = Tokenizer.from_str(self._tok.to_str())
            tok.no_padding()
            tok.enable_truncation(limit, strategy="longest_first")
            self._pair_toks[limit] = tok
        return tok

    def encode(self, texts: list[str], *, pairs: list[str] | None = None, truncate: bool = True,
               max_length: int | None = None) -> Tokenized:
        """Token ids per text, cut to ``max_length`` (keeping the final [SEP]) if ``truncate``.

        With ``pairs`` (one second text per text) each row is the pair's encoding. ``max_length``
        defaults to the model's limit; training code passes a shorter one.
        """
        limit = min(max_length or self.max_length, self.max_length)
        if pairs is not None:
            return self._encode_pairs(texts, pairs, truncate=truncate, limit=limit)
        # without offsets, which nothing here reads and encode() would compute
        encodings = self._tok.encode_batch_fast(texts)
        ids: list[list[int]] = []
        truncated: list[bool] = []
        for i, enc in enumerate(encodings):
            row = enc.ids
            if len(row) > limit:
                if not truncate:
                    raise TextTooLongError(
                        f"text {i} has {len(row)} tokens; this model accepts at most "
                        f"{limit} (send it shorter, or enable truncation)"
                    )
                row = row[: limit - 1] + row[-1:]
                truncated.append(True)
            else:
                truncated.append(False)
            ids.append(row)
        return Tokenized(ids, truncated)

    def _encode_pairs(self, texts: list[str], pairs: list[str], *, truncate: bool, limit: int) -> Tokenized:
        if len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        encodings = self._pair_tokenizer(limit).encode_batch(list(zip(texts, pairs, strict=True)))
        ids, truncated, starts = [], [], []
        for i, enc in enumerate(encodings):
            cut = bool(enc.overflowing)
            if cut and not truncate:
                raise TextTooLongError(f"pair {i} has more than {limit} tokens, the most this model "
                                       "accepts (send it shorter, or enable truncation)")
            types = enc.type_ids
            ids.append(enc.ids)
            truncated.append(cut)
            starts.append(types.index(1) if 1 in types else len(types))
        return Tokenized(ids, truncated, starts)

    def count(self, texts: list[str]) -> list[int]:
        return [min(len(e.ids), self.max_length) for e in self._tok.encode_batch_fast(texts)]
