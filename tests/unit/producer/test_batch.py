"""ProducerBatch bookkeeping that the producers' buffer bounds rely on."""

from __future__ import annotations

import pytest

from grete.producer.batch import ProducerBatch


@pytest.mark.parametrize("n", [2, 3, 7, 10])
def test_split_halves_add_up_to_the_whole(n: int) -> None:
    # A producer counts each record's size against max_buffer_bytes and
    # releases batch.size when the batch is done: a split must not lose bytes
    # (the bound would creep) nor invent them.
    batch = ProducerBatch("t", 0, 0.0)
    for i in range(n):
        batch.append(b"k" if i % 2 else None, b"v" * i, None, 1000 + i, i, 21 + i + i % 2)
    first, second = batch.split()
    assert first.size + second.size == batch.size
    assert first.values + second.values == batch.values
    assert list(first.handles) + list(second.handles) == list(range(n))
    assert first.order < second.order
