"""Fast tokenisation with truncation to the model's limit and no padding (we pad per batch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from .errors import ArtifactError, TextTooLongError


@dataclass(slots=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[bool]

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

    def encode(self, texts: list[str], *, truncate: bool = True, max_length: int | None = None) -> Tokenized:
        """Token ids per text, cut to ``max_length`` (keeping the final [SEP]) if ``truncate``.

        ``max_length`` defaults to the model's limit; training code passes a shorter one.
        """
        limit = min(max_length or self.max_length, self.max_length)
        # one text (most online requests): skip the batch machinery
        encodings = [self._tok.encode(texts[0])] if len(texts) == 1 else self._tok.encode_batch(texts)
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

    def count(self, texts: list[str]) -> list[int]:
        return [min(len(e.ids), self.max_length) for e in self._tok.encode_batch(texts)]
