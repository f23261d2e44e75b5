"""Batching for the training loops: padding, length-sorted batches, an endless shuffled stream.

Texts of similar length share a batch so little compute goes to padding. (The training device
comes from :func:`bertserve.runtime.torch_backend.pick_device`, the one device picker.)
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch

from ..tokenizer import TextTokenizer


def pad(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, T) padded with ``pad_id`` to the longest row, and the attention mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def pad_pairs(
    rows: list[list[int]], type_starts: list[int] | None, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`pad`, plus the token type ids (B, T) of text pairs: 0 before each row's
    ``type_starts`` entry (``Tokenized.type_starts``), 1 from it to the row's end, 0 on padding.
    Single texts (``type_starts`` None) get None: every token type 0."""
    ids, mask = pad(rows, pad_id)
    if type_starts is None:
        return ids, mask, None
    if len(type_starts) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(type_starts)} type starts")
    pos = torch.arange(ids.shape[1])
    starts = torch.tensor(type_starts, dtype=torch.long).unsqueeze(1)
    types = ((pos >= starts) & mask.bool()).long()
    return ids, mask, types


def batches(lengths: list[int], batch_size: int, rng: random.Random | None) -> list[list[int]]:
    """Batches of similar length (little padding); shuffled when ``rng`` is given."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
    chunk = batch_size * 50
    out: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lengths.__getitem__)
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def epochs(lengths: list[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """:func:`batches` epoch after epoch, reshuffled each time from one ``seed``: never ends."""
    rng = random.Random(seed)
    while lengths:
        yield from batches(lengths, batch_size, rng)


def text_batches(
    tok: TextTokenizer, texts: list[str], batch_size: int, max_length: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``texts`` in order, cut at ``max_length`` tokens, as padded (ids, mask) batches."""
    ids = tok.encode(texts, max_length=max_length).ids
    return [pad(ids[i : i + batch_size], tok.pad_id) for i in range(0, len(ids), batch_size)]
