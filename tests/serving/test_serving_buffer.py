"""Length-aware buffer: bins, joining open batches, budgets, urgency order."""

from __future__ import annotations

from serving_fakes import item

from bertserve.serving.core.buffer import LengthBuffer


def test_same_bin_joins_one_batch_other_bins_open_their_own() -> None:
    buf = LengthBuffer(bin_width=16, max_batch=8, max_tokens=4096)
    a = buf.add(item(10))
    b = buf.add(item(16))
    c = buf.add(item(17))
    assert a is b and a is not c
    assert (a.size, a.width) == (2, 16)
    assert (c.bin, buf.bin_of(16), buf.bin_of(1)) == (1, 0, 0)
    assert len(buf) == 3 and buf.tokens == 43


def test_full_batch_closes_and_the_next_text_opens_a_new_one() -> None:
    buf = LengthBuffer(bin_width=16, max_batch=2, max_tokens=4096)
    first = buf.add(item(5))
    assert buf.add(item(6)) is first and first.closed
    second = buf.add(item(7))
    assert second is not first and not second.closed
    assert sorted(b.size for b in buf.batches()) == [1, 2]


def test_token_budget_limits_the_padded_size() -> None:
    buf = LengthBuffer(bin_width=64, max_batch=32, max_tokens=100)
    first = buf.add(item(40))
    assert buf.add(item(50)) is first  # 2 × 50 = 100 padded tokens fit
    third = buf.add(item(45))  # 3 × 50 = 150 would not
    assert third is not first and first.closed
    assert first.padded_tokens == 100 and first.tokens == 90


def test_most_urgent_is_the_earliest_deadline_and_remove_updates_counts() -> None:
    buf = LengthBuffer(bin_width=16, max_batch=8, max_tokens=4096)
    late = buf.add(item(40, now=0.0, slo=0.5))
    early = buf.add(item(5, now=0.1, slo=0.1))
    assert buf.most_urgent() is early
    buf.remove(early)
    assert buf.most_urgent() is late
    assert (len(buf), buf.tokens) == (1, 40)
    buf.remove(late)
    assert buf.most_urgent() is None and len(buf) == 0 and buf.tokens == 0
