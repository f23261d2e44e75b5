"""Length-aware buffer: texts wait in length bins, so a batch pads only within its bin.

A text of ``n`` tokens belongs to bin ``ceil(n / bin_width)``. It joins the open batch of its
bin if that batch has room (``max_batch`` texts and ``max_tokens`` padded tokens), else it
opens a new batch there. Closed (full) batches wait beside the open one until dispatched.
Batches are handed out most urgent first: earliest deadline of their oldest member.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, eq=False)
class Item:
    """One text of a request, tokenised, waiting to be computed."""

    ids: list[int]
    arrival: float
    deadline: float
    owner: Any = None  # the request this text belongs to (opaque to the buffer)
    index: int = 0  # position of the text in its request
    attempts: int = 0  # times it was sent to a worker that died
    type_start: int = -1  # a text pair: where its second text's tokens start (-1: a single text)

    @property
    def length(self) -> int:
        return len(self.ids)


_batch_ids = itertools.count(1)


@dataclass(slots=True, eq=False)
class PendingBatch:
    """Items of one bin that will run together, padded to the longest."""

    bin: int
    items: list[Item] = field(default_factory=list)
    width: int = 0
    closed: bool = False
    id: int = field(default_factory=lambda: next(_batch_ids))

    @property
    def size(self) -> int:
        return len(self.items)

    @property
    def deadline(self) -> float:
        return min(i.deadline for i in self.items)

    @property
    def tokens(self) -> int:
        return sum(i.length for i in self.items)

    @property
    def padded_tokens(self) -> int:
        return self.width * len(self.items)

    @property
    def full(self) -> bool:
        return self.closed

    def fits(self, item: Item, max_batch: int, max_tokens: int) -> bool:
        width = max(self.width, item.length)
        return len(self.items) < max_batch and width * (len(self.items) + 1) <= max_tokens

    def add(self, item: Item) -> None:
        self.items.append(item)
        self.width = max(self.width, item.length)


class LengthBuffer:
    """Owns the waiting texts; only the batcher touches it."""

    def __init__(self, *, bin_width: int, max_batch: int, max_tokens: int) -> None:
        self.bin_width = bin_width
        self.max_batch = max_batch
        self.max_tokens = max_tokens
        self._bins: dict[int, deque[PendingBatch]] = {}
        self.items = 0
        self.tokens = 0

    def bin_of(self, length: int) -> int:
        return max(0, (length - 1) // self.bin_width)

    def target(self, item: Item) -> PendingBatch | None:
        """The open batch ``item`` would join, or None if it would open a new one."""
        queue = self._bins.get(self.bin_of(item.length))
        batch = queue[-1] if queue and not queue[-1].closed else None
        if batch is None or not batch.fits(item, self.max_batch, self.max_tokens):
            return None
        return batch

    def add(self, item: Item, join: bool = True) -> PendingBatch:
        """Put ``item`` in the open batch of its bin (or a new one); return that batch.

        ``join=False`` closes the bin's open batch first: the batcher asks for it when growing
        that batch would make its oldest member late.
        """
        queue = self._bins.setdefault(self.bin_of(item.length), deque())
        batch = queue[-1] if queue and not queue[-1].closed else None
        if batch is None or not join or not batch.fits(item, self.max_batch, self.max_tokens):
            if batch is not None:
                batch.closed = True
            batch = PendingBatch(self.bin_of(item.length))
            queue.append(batch)
        batch.add(item)
        if batch.size >= self.max_batch:
            batch.closed = True
        self.items += 1
        self.tokens += item.length
        return batch

    def batches(self) -> Iterator[PendingBatch]:
        for queue in self._bins.values():
            yield from queue

    def __len__(self) -> int:
        return self.items

    def most_urgent(self) -> PendingBatch | None:
        """The batch whose oldest member's deadline comes first (ties: the fuller batch)."""
        best: PendingBatch | None = None
        for queue in self._bins.values():
            for batch in queue:
                if best is None or (batch.deadline, -batch.size) < (best.deadline, -best.size):
                    best = batch
        return best

    def discard(self, owner: Any) -> int:
        """Drop every waiting text of ``owner`` (a request given up on); return how many."""
        dropped = 0
        for b, queue in list(self._bins.items()):
            for batch in list(queue):
                keep = [i for i in batch.items if i.owner is not owner]
                if len(keep) == batch.size:
                    continue
                gone = [i for i in batch.items if i.owner is owner]
                dropped += len(gone)
                self.items -= len(gone)
                self.tokens -= sum(i.length for i in gone)
                batch.items = keep
                batch.width = max((i.length for i in keep), default=0)
                if not keep:
                    queue.remove(batch)
            if not queue:
                del self._bins[b]
        return dropped

    def remove(self, batch: PendingBatch) -> None:
        queue = self._bins[batch.bin]
        queue.remove(batch)
        if not queue:
            del self._bins[batch.bin]
        self.items -= batch.size
        self.tokens -= batch.tokens
