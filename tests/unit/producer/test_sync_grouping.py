"""The keyed fast path's column reader and grouping by partition
(``sync._keyed_columns``, ``sync._by_partition``)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from grete._murmur2 import murmur2_pure
from grete.cluster import Cluster
from grete.producer import Producer, sync
from grete.producer.grouping import MASKED_GROUPING_MAX, hashed_ids, java_ids


def _naive(keys: list[bytes], count: int) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(_partition_of(key, count), []).append(i)
    return groups


@pytest.mark.parametrize("same_length", [False, True])
@pytest.mark.parametrize("ids_of", [hashed_ids(murmur2_pure), java_ids], ids=["pure", "java_ids"])
@pytest.mark.parametrize("count", [1, 2, 3, MASKED_GROUPING_MAX, 9, 50, 256, 300])
def test_groups_like_the_java_partitioner_in_input_order(
    count: int, ids_of: Any, same_length: bool
) -> None:
    # java_ids takes the lanes for keys of one length (and up to 256 partitions).
    rnd = random.Random(count)
    keys = [rnd.randbytes(16 if same_length else rnd.randrange(0, 20)) for _ in range(2000)]
    values = [rnd.randbytes(rnd.randrange(0, 5)) for _ in range(2000)]
    groups = list(sync._by_partition(keys, values, ids_of, count))
    expected = _naive(keys, count)
    assert [g[0] for g in groups] == sorted(expected)  # by id, empty partitions left out
    for pid, indexes, pkeys, pvalues in groups:
        assert list(indexes) == expected[pid]
        assert pkeys == [keys[i] for i in indexes]
        assert all(a is b for a, b in zip(pvalues, (values[i] for i in indexes), strict=True))


def _pairs(n: int) -> list[tuple[bytes, bytes]]:
    return [(b"k%d" % i, b"v%d" % i) for i in range(n)]


@pytest.mark.parametrize("as_iterator", [False, True])
def test_columns_of_key_value_tuples(monkeypatch: pytest.MonkeyPatch, as_iterator: bool) -> None:
    monkeypatch.setattr(sync, "_READ_CHUNK", 7)  # several chunks
    pairs = _pairs(30)
    source: Any = iter(pairs) if as_iterator else pairs
    chunks, rest = sync._keyed_columns(source)
    assert rest is None
    assert [len(keys) for keys, _ in chunks] == [7, 7, 7, 7, 2]
    assert list(sync._pairs(chunks)) == pairs


@pytest.mark.parametrize(
    "odd", [b"value only", (b"k", "str value"), (None, b"v"), (b"k", b"v", b"extra"), [b"k", b"v"]]
)
@pytest.mark.parametrize("as_iterator", [False, True])
def test_another_shape_hands_every_message_back_in_order(
    monkeypatch: pytest.MonkeyPatch, odd: Any, as_iterator: bool
) -> None:
    monkeypatch.setattr(sync, "_READ_CHUNK", 7)
    messages: list[Any] = [*_pairs(17), odd, *_pairs(12)]  # the odd one in the third chunk
    source: Any = iter(messages) if as_iterator else messages
    chunks, rest = sync._keyed_columns(source)
    assert chunks == [] and rest is not None
    assert list(rest) == messages


def test_empty_iterator_gives_empty_columns() -> None:
    assert sync._keyed_columns(iter(())) == ([], None)


def test_indexes_count_from_first() -> None:
    keys = [b"a", b"b", b"c", b"d"]
    groups = sync._by_partition(keys, keys, hashed_ids(murmur2_pure), 2, first=100)
    assert sorted(i for _, indexes, _, _ in groups for i in indexes) == [100, 101, 102, 103]
    groups = sync._by_partition(keys, keys, hashed_ids(murmur2_pure), 9, first=100)
    assert sorted(i for _, indexes, _, _ in groups for i in indexes) == [100, 101, 102, 103]


@pytest.mark.parametrize(("chunk", "batch_size", "count"), [(7, 3, 3), (16, 5, 2), (5, 200, 4)])
def test_keyed_batches_are_full_in_order_and_cover_every_message(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, chunk: int, batch_size: int, count: int
) -> None:
    """Grouped a chunk at a time, a partition's remainder waits for the next
    chunk (or the end): batches come out full except each partition's last,
    in input order per partition, every message in exactly one of them."""
    rnd = random.Random(chunk)
    keys = [rnd.randbytes(4) for _ in range(101)]
    values = [b"v%d" % i for i in range(101)]
    keys[50] = b"big"
    values[50] = b"x" * 5000  # over max_request_size: fails alone, where it is
    producer = Producer(cluster, cluster._topics["t"], batch_size=batch_size, max_request_size=4096)
    failures: list[Any] = []
    chunks = [(keys[i : i + chunk], values[i : i + chunk]) for i in range(0, 101, chunk)]
    batches = list(producer._keyed_batches(chunks, hashed_ids(murmur2_pure), count, failures))
    assert chunks == []  # each taken out as grouped, so freed then
    assert [f.index for f in failures] == [50]
    seen: list[int] = []
    by_partition: dict[int, list[int]] = {}
    for batch in batches:
        handles = list(batch.handles)
        assert 0 < len(handles) <= batch_size
        assert batch.keys == [keys[i] for i in handles]
        assert batch.values == [values[i] for i in handles]
        assert all((murmur2_pure(keys[i]) & 0x7FFFFFFF) % count == batch.partition for i in handles)
        by_partition.setdefault(batch.partition, []).extend(handles)
        seen += handles
    assert sorted(seen) == [i for i in range(101) if i != 50]
    big = _partition_of(keys[50], count)  # its neighbours' batches are cut around it
    for p, indexes in by_partition.items():
        assert indexes == sorted(indexes)
        sizes = [len(b.values) for b in batches if b.partition == p]
        if p != big:
            assert all(size == batch_size for size in sizes[:-1]), (p, sizes)


def _partition_of(key: bytes, count: int) -> int:
    return (murmur2_pure(key) & 0x7FFFFFFF) % count
