"""The keyed fast path's grouping of messages by partition (``sync._by_partition``)."""

from __future__ import annotations

import random

import pytest

from grete._murmur2 import murmur2_pure
from grete.producer import sync


def _naive(keys: list[bytes], count: int) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault((murmur2_pure(key) & 0x7FFFFFFF) % count, []).append(i)
    return groups


@pytest.mark.parametrize("count", [1, 2, 3, sync._MASKED_GROUPING_MAX, 9, 50, 300])
def test_groups_like_the_java_partitioner_in_input_order(count: int) -> None:
    rnd = random.Random(count)
    keys = [rnd.randbytes(rnd.randrange(0, 20)) for _ in range(2000)]
    values = [rnd.randbytes(rnd.randrange(0, 5)) for _ in range(2000)]
    messages = list(zip(keys, values, strict=True))
    groups = list(sync._by_partition(messages, murmur2_pure, count))
    expected = _naive(keys, count)
    assert [g[0] for g in groups] == sorted(expected)  # by id, empty partitions left out
    for pid, indexes, share in groups:
        assert list(indexes) == expected[pid]
        assert share == [messages[i] for i in indexes]
        assert all(a is b for a, b in zip(share, (messages[i] for i in indexes), strict=True))
