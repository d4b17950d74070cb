"""Keyed records grouped by partition many at a time, with C-level passes.

Both front ends place keyed records in bulk rather than one by one: the
synchronous producer a whole ``produce()`` call, the background producer the
records staged since its last placement (see ``Accumulator.place_stage``).
Murmur2 partition ids of a list of keys in big-int lanes (:func:`java_ids`),
and splitting columns with ``itertools.compress``, leave no Python work per
record: that is the point of grouping in bulk.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, repeat
from typing import Any, TypeVar

from grete._murmur2 import murmur2_partition_ids, unsigned_murmur2_many

T = TypeVar("T")

#: ``ids_of(keys, count)``: the partition id of each key among ``count``
#: partitions, packed as :func:`packed_ids` packs them.
KeyIds = Callable[[list[bytes], int], "bytes | array[int]"]

#: Takes one partition's records out of a column (any sequence, one item per
#: record, in input order), keeping their order.
Take = Callable[[Sequence[T]], list[T]]

# Up to this many partitions, records are grouped with one masked pass per
# partition (bytes.translate + itertools.compress, all in C, one byte per
# record); beyond it one stable sort by partition id is cheaper.
MASKED_GROUPING_MAX = 8
# _MASKS[pid] maps the byte ``pid`` to 1 and every other byte to 0.
_MASKS = [bytes(int(i == pid) for i in range(256)) for pid in range(MASKED_GROUPING_MAX)]


def packed_ids(hashes: Iterable[int], count: int) -> bytes | array[int]:
    """The partition id of each record (``hashes``: one per record), packed:
    one byte each up to 256 partitions (1 byte, not 8 + 28, a record). A
    record goes to ``(hash & 0x7fffffff) % count``, as in the Java client."""
    # The hashes listed first, then one comprehension: cheaper than lazy maps
    # of and_/mod over the extension's map.
    hashes = list(hashes)
    pids = [(h & 0x7FFFFFFF) % count for h in hashes]
    del hashes
    return bytes(pids) if count <= 256 else array("I", pids)


def java_ids(keys: list[bytes], count: int, length: int | None = None) -> bytes | array[int]:
    """The Java client's partition for each key (murmur2, placed as
    :func:`packed_ids` places hashes): all at once in lanes when the keys
    have one length (:func:`grete._murmur2.murmur2_partition_ids`, the modulo
    included, ``length`` passed on), else the keys hashed one C call each."""
    ids = murmur2_partition_ids(keys, count, length)
    return ids if ids is not None else packed_ids(unsigned_murmur2_many(keys), count)


def hashed_ids(key_hash: Callable[[bytes], int]) -> KeyIds:
    """A :data:`KeyIds` for any hash, placed as :func:`packed_ids` places it."""

    def ids_of(keys: list[bytes], count: int) -> bytes | array[int]:
        return packed_ids(map(key_hash, keys), count)

    return ids_of


def grouped(ids: bytes | array[int], count: int) -> Iterator[tuple[int, Take[Any]]]:
    """``(partition id, take)`` for each partition that has records, in
    partition id order (``ids``: from :func:`packed_ids` or :func:`java_ids`).
    ``take(column)`` is the partition's items of any column, in input order."""
    if type(ids) is bytes and count <= MASKED_GROUPING_MAX:
        for pid in range(count):
            if pid in ids:
                yield pid, _compressor(ids.translate(_MASKS[pid]))
        return
    order = sorted(range(len(ids)), key=ids.__getitem__)  # stable: input order kept
    placed = list(map(ids.__getitem__, order))
    for pid in sorted(set(placed)):
        lo, hi = bisect_left(placed, pid), bisect_left(placed, pid + 1)
        yield pid, _picker(order[lo:hi])


def _compressor(mask: bytes) -> Take[Any]:
    def take(column: Sequence[T]) -> list[T]:
        return list(compress(column, mask))

    return take


def _picker(indexes: list[int]) -> Take[Any]:
    def take(column: Sequence[T]) -> list[T]:
        return list(map(column.__getitem__, indexes))

    return take


# Past this many distinct timestamps a stage's are grouped as any column is:
# records staged as they come change millisecond a few times a stage.
TIME_RUNS_MAX = 32


def time_runs(timestamps: list[int]) -> list[tuple[int, int, int]] | None:
    """``timestamps`` as runs of one value, ``(value, start, end)`` in order,
    covering them all, when they never decrease and change at most
    :data:`TIME_RUNS_MAX` times; else None (a clock set back, timestamps
    given by the caller).

    A stage's records carry a timestamp each, yet they take a few values in
    order (one a millisecond): grouped as runs, each partition's timestamps
    and their deltas are a few repeats (:func:`partition_time_runs`), not a
    pass per record of ``compress`` and of a subtraction. Each run is found
    by a bisect and checked by one C-level count over its slice; values
    rising from run to run and every item of each run equal to its value
    make the whole list non-decreasing, whatever the bisects found."""
    n = len(timestamps)
    runs: list[tuple[int, int, int]] = []
    start = 0
    previous = None
    while start < n:
        value = timestamps[start]
        if (previous is not None and value <= previous) or len(runs) >= TIME_RUNS_MAX:
            return None
        end = bisect_right(timestamps, value, start)
        if timestamps[start:end].count(value) != end - start:
            return None
        runs.append((value, start, end))
        previous = value
        start = end
    return runs


def partition_time_runs(
    runs: list[tuple[int, int, int]], ids: bytes, pid: int
) -> tuple[list[tuple[int, int]], list[int]]:
    """Partition ``pid``'s share of a stage's :func:`time_runs` (``ids``: each
    record's partition, one byte each): its ``(value, count)`` runs, and its
    timestamp column. A C-level count of ``pid`` over each run's ids."""
    mine: list[tuple[int, int]] = []
    column: list[int] = []
    for value, start, end in runs:
        count = ids.count(pid, start, end)
        if count:
            mine.append((value, count))
            column += repeat(value, count)
    return mine, column
