"""The Accumulator, alone: batches close by count, by bytes, by linger, or when forced."""

from __future__ import annotations

import pytest

from grete.producer.accumulator import RECORD_OVERHEAD, Accumulator, record_size
from grete.producer.batch import ProducerBatch
from grete.producer.grouping import packed_ids
from grete.protocol.compression import CompressionType


def _acc(
    max_records: int = 3,
    max_bytes: int = 10_000,
    linger_s: float = 0.0,
    closed: list[int] | None = None,
) -> Accumulator:
    return Accumulator(
        "t",
        max_records=max_records,
        max_bytes=max_bytes,
        linger_s=linger_s,
        on_new_batch=None if closed is None else closed.append,
    )


def _add(acc: Accumulator, partition: int, value: bytes, now: float, handle: object = None) -> bool:
    size = record_size(None, value, None)
    return acc.append(partition, None, value, None, 1000, handle, size, now)


def test_record_size_counts_key_value_and_headers() -> None:
    assert record_size(None, None, None) == RECORD_OVERHEAD
    assert record_size(b"ab", b"cde", None) == RECORD_OVERHEAD + 5
    with_headers = record_size(None, b"v", [("h", b"xy"), ("g", None)])
    assert with_headers == RECORD_OVERHEAD + 1 + (1 + 2 + 10) + (1 + 0 + 10)


def test_batch_is_full_by_count() -> None:
    closed: list[int] = []
    acc = _acc(max_records=3, linger_s=100.0, closed=closed)
    assert _add(acc, 0, b"a", 0.0) is False
    assert _add(acc, 0, b"b", 0.0) is False
    assert _add(acc, 0, b"c", 0.0) is True  # the third record fills it
    assert closed == [0]
    assert acc.next_deadline() == 0.0  # a ready batch: send now
    batches = acc.drain(0.0)
    assert [b.values for b in batches] == [[b"a", b"b", b"c"]]
    assert len(acc) == 0
    assert acc.next_deadline() is None


def test_batch_is_full_by_bytes() -> None:
    closed: list[int] = []
    one = record_size(None, b"x" * 100, None)
    acc = _acc(max_records=1000, max_bytes=2 * one + 10, linger_s=100.0, closed=closed)
    assert _add(acc, 1, b"x" * 100, 0.0) is False
    assert _add(acc, 1, b"x" * 100, 0.0) is False
    # The third does not fit: the open batch closes, a new one takes it.
    assert _add(acc, 1, b"y" * 100, 0.0) is True
    assert closed == [1]
    ready = acc.drain(0.0)
    assert len(ready) == 1 and len(ready[0]) == 2 and ready[0].size == 2 * one
    assert len(acc) == 1  # the new open batch with the third record
    rest = acc.drain(0.0, force=True)
    assert [b.values for b in rest] == [[b"y" * 100]]


def test_linger_drain_waits_for_the_oldest_batch() -> None:
    acc = _acc(max_records=100, linger_s=0.5)
    _add(acc, 0, b"a", 10.0)
    _add(acc, 1, b"b", 10.2)
    assert acc.next_deadline() == 10.5
    assert acc.drain(10.4) == []
    first = acc.drain(10.5)
    assert [(b.partition, b.values) for b in first] == [(0, [b"a"])]
    assert acc.next_deadline() is not None and abs(acc.next_deadline() - 10.7) < 1e-9  # type: ignore[operator]
    second = acc.drain(10.7)
    assert [(b.partition, b.values) for b in second] == [(1, [b"b"])]
    assert len(acc) == 0


def test_force_drain_takes_everything_and_take_all_too() -> None:
    closed: list[int] = []
    acc = _acc(max_records=2, linger_s=1000.0, closed=closed)
    for p in range(3):
        _add(acc, p, b"v", 0.0)
    _add(acc, 0, b"w", 0.0)  # partition 0 is now full (ready)
    assert acc.drain(1.0) != [] and closed == [0]
    _add(acc, 0, b"z", 1.0)
    forced = acc.drain(1.0, force=True)
    assert sorted(b.partition for b in forced) == [0, 1, 2]
    assert sorted(closed) == [0, 0, 1, 2]
    _add(acc, 2, b"late", 2.0)
    taken = acc.take_all()
    assert [(b.partition, b.values) for b in taken] == [(2, [b"late"])]
    assert len(acc) == 0 and acc.drain(99.0, force=True) == []


def test_order_and_handles_are_kept_per_partition() -> None:
    acc = _acc(max_records=4, linger_s=0.0)
    for i in range(10):
        _add(acc, i % 2, str(i).encode(), 0.0, handle=i)
    batches = acc.drain(0.0, force=True)
    by_partition: dict[int, list[object]] = {}
    for b in batches:
        by_partition.setdefault(b.partition, []).extend(b.handles)
        assert len(b) <= 4
    assert by_partition == {0: [0, 2, 4, 6, 8], 1: [1, 3, 5, 7, 9]}


def test_on_new_batch_is_called_once_per_closed_batch() -> None:
    closed: list[int] = []
    acc = _acc(max_records=2, linger_s=0.0, closed=closed)
    for _ in range(5):
        _add(acc, 3, b"v", 0.0)  # batches of 2, 2, and 1 open
    assert closed == [3, 3]
    acc.drain(0.0)  # linger 0: the open one closes too
    assert closed == [3, 3, 3]
    assert acc.drain(0.0) == [] and closed == [3, 3, 3]


def test_no_hook_is_fine() -> None:
    acc = Accumulator("t", max_records=1, max_bytes=1000)
    assert _add(acc, 0, b"a", 0.0) is True
    assert len(acc.drain(0.0)) == 1


def test_held_batches_keep_filling_past_linger() -> None:
    # A partition whose earlier batches still wait to be sent keeps its open batch
    # open (and filling) after linger: one bigger batch instead of many small ones.
    acc = _acc(max_records=100, linger_s=0.005)
    held = {0}

    def hold(batch: object) -> bool:
        return getattr(batch, "partition", None) in held

    _add(acc, 0, b"a", 0.0)
    _add(acc, 1, b"b", 0.0)
    assert [b.partition for b in acc.drain(1.0, hold=hold)] == [1]
    _add(acc, 0, b"c", 1.0)  # the held batch takes more records
    assert acc.next_deadline(hold) is None  # nothing to wake up for but the backlog
    assert acc.next_deadline() == 0.005  # without a hold it would be due
    held.clear()
    (batch,) = acc.drain(1.0, hold=hold)
    assert batch.values == [b"a", b"c"]


def test_full_and_forced_batches_are_never_held() -> None:
    acc = _acc(max_records=2, linger_s=0.005)

    def hold(batch: object) -> bool:
        return True

    _add(acc, 0, b"a", 0.0)
    _add(acc, 0, b"b", 0.0)  # full
    _add(acc, 1, b"c", 0.0)
    assert [b.values for b in acc.drain(1.0, hold=hold)] == [[b"a", b"b"]]
    assert [b.values for b in acc.drain(1.0, force=True, hold=hold)] == [[b"c"]]


# -- the stage: keyed records placed in their partitions all at once ---------


def _staging_acc(
    max_records: int = 100, max_bytes: int = 10_000, count: int = 3, linger_s: float = 0.0
) -> tuple[Accumulator, list[ProducerBatch]]:
    """An accumulator whose keys are decimal numbers hashing to themselves
    (key k goes to partition k % count), and a list it adds each stage to."""
    stages: list[ProducerBatch] = []
    acc = Accumulator(
        "t",
        max_records=max_records,
        max_bytes=max_bytes,
        linger_s=linger_s,
        key_placer=lambda keys, _: (packed_ids([int(k) for k in keys], count), count),
    )
    new_stage = acc.new_stage

    def recording(now: float) -> ProducerBatch:
        stages.append(new_stage(now))
        return stages[-1]

    acc.new_stage = recording  # type: ignore[method-assign]
    return acc, stages


def _forwarded(stage: ProducerBatch, handles: list[object]) -> list[tuple[int, object, int]]:
    """Where the stage's forward sends each of its records (whose handles
    were ``handles``): (partition, handle found there, index there)."""
    assert stage.forward is not None
    out = []
    for i, handle in enumerate(handles):
        batch, index = stage.forward(i)
        assert batch.handles is not None and batch.handles[index] == handle
        out.append((batch.partition, handle, index))
    return out


def _stage(acc: Accumulator, keys: list[int], now: float = 0.0, value: bytes = b"v") -> None:
    stage = acc.stage if acc.stage is not None else acc.new_stage(now)
    for k in keys:
        key = b"%d" % k
        stage.values.append(value)
        stage.keys.append(key)  # type: ignore[union-attr]
        stage.timestamps.append(1000 + k)  # type: ignore[union-attr]
        stage.handles.append(k)  # type: ignore[union-attr]
        # No stage.size, as the front end's inline path keeps none.


def test_stage_places_records_in_their_partitions_in_order() -> None:
    acc, stages = _staging_acc(count=3)
    _stage(acc, list(range(10)), now=5.0)
    assert len(acc) == 1 and acc.stage is not None
    assert acc.place_stage() is False  # nothing filled up
    assert acc.stage is None
    for pid in range(3):
        batch = acc.open_batches[pid]
        assert batch.partition == pid and batch.created == 5.0
        assert batch.keys == [b"%d" % k for k in range(pid, 10, 3)]
        assert list(batch.handles) == list(range(pid, 10, 3))
        assert batch.timestamps == [1000 + k for k in range(pid, 10, 3)]
        assert batch.base_timestamp == 1000 + pid
        assert batch.size == sum(record_size(k, b"v", None) for k in batch.keys)
    # The stage forwards each record to where it went, and drops its columns.
    assert _forwarded(stages[0], list(range(10))) == [(k % 3, k, k // 3) for k in range(10)]
    assert stages[0].values == [] and stages[0].keys is None


def test_stage_placement_closes_batches_by_count_and_bytes() -> None:
    acc, stages = _staging_acc(max_records=3, count=1)
    _stage(acc, list(range(8)))
    assert acc.place_stage() is True
    ready = acc.drain(0.0, force=True)
    assert [list(b.handles) for b in ready] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert [index for *_, index in _forwarded(stages[0], list(range(8)))] == [0, 1, 2] * 2 + [0, 1]

    one = record_size(b"1", b"x" * 100, None)
    acc, _ = _staging_acc(max_bytes=2 * one + 1, count=1)
    _stage(acc, [0, 1, 2, 3, 4], value=b"x" * 100)
    acc.place_stage()
    ready = acc.drain(0.0, force=True)
    assert [list(b.handles) for b in ready] == [[0, 1], [2, 3], [4]]
    assert all(b.size <= 2 * one + 1 for b in ready)


def test_a_second_stage_extends_the_open_keyed_batch_until_it_is_full() -> None:
    # Stages that fit go in whole (Accumulator._extend's quick path); the one
    # that fills the batch to max_records closes it (the record-by-record path).
    acc, stages = _staging_acc(max_records=6, count=1)
    _stage(acc, [0, 1])
    assert acc.place_stage() is False
    _stage(acc, [2, 3, 4])
    assert acc.place_stage() is False  # 5 records: still open
    batch = acc.open_batches[0]
    assert batch.keys == [b"%d" % k for k in range(5)] and list(batch.handles) == [0, 1, 2, 3, 4]
    assert batch.timestamps == [1000 + k for k in range(5)] and batch.base_timestamp == 1000
    assert batch.size == sum(record_size(b"%d" % k, b"v", None) for k in range(5))
    assert _forwarded(stages[1], [2, 3, 4]) == [(0, 2, 2), (0, 3, 3), (0, 4, 4)]
    _stage(acc, [5, 6])
    assert acc.place_stage() is True  # the 6th record fills it
    ready = acc.drain(0.0, force=True)
    assert [list(b.handles) for b in ready] == [[0, 1, 2, 3, 4, 5], [6]]
    assert _forwarded(stages[2], [5, 6]) == [(0, 5, 5), (0, 6, 0)]


def test_stage_fills_an_open_unkeyed_batch_and_keeps_columns_aligned() -> None:
    acc, stages = _staging_acc(count=1)
    acc.append(0, None, b"first", None, 999, "h", record_size(None, b"first", None), 0.0)
    _stage(acc, [7, 8])
    acc.place_stage()
    batch = acc.open_batches[0]
    assert batch.values == [b"first", b"v", b"v"]
    assert batch.keys == [None, b"7", b"8"]
    assert list(batch.handles) == ["h", 7, 8]
    assert batch.timestamps == [999, 1007, 1008] and batch.base_timestamp == 999
    assert _forwarded(stages[0], [7, 8]) == [(0, 7, 1), (0, 8, 2)]


def test_many_partitions_are_grouped_by_sorting() -> None:
    acc, stages = _staging_acc(count=20)
    _stage(acc, list(range(100)))
    acc.place_stage()
    assert sorted(acc.open_batches) == list(range(20))
    for pid, batch in acc.open_batches.items():
        assert list(batch.handles) == list(range(pid, 100, 20))
    assert _forwarded(stages[0], list(range(100))) == [(k % 20, k, k // 20) for k in range(100)]


def test_a_stage_of_many_partitions_packs_ids_in_an_array() -> None:
    # Over 256 partitions an id no longer fits a byte.
    acc, stages = _staging_acc(count=300)
    keys = [5, 299, 5, 7, 299, 5]
    _stage(acc, keys)
    acc.place_stage()
    assert _forwarded(stages[0], keys) == [
        (5, 5, 0),
        (299, 299, 0),
        (5, 5, 1),
        (7, 7, 0),
        (299, 299, 1),
        (5, 5, 2),
    ]


def test_stage_lingers_like_a_batch_and_is_placed_by_drain() -> None:
    acc, _ = _staging_acc(linger_s=1.0)
    _stage(acc, [1, 2], now=10.0)
    assert acc.next_deadline() == 11.0
    assert acc.drain(10.5) == [] and acc.stage is not None  # not lingered yet
    ready = acc.drain(11.0)  # placed, and its batches lingered since 10.0
    assert acc.stage is None
    assert sorted(list(b.handles) for b in ready) == [[1], [2]]
    _stage(acc, [3], now=20.0)
    assert [list(b.handles) for b in acc.take_all()] == [[3]]
    assert len(acc) == 0


def test_a_stage_that_cannot_be_placed_stays_whole_for_take_all() -> None:
    def broken(keys: list[bytes], length: int | None) -> tuple[bytes, int]:
        raise RuntimeError("no partition count")

    acc = Accumulator("t", max_records=100, max_bytes=10_000, key_placer=broken)
    _stage(acc, [1, 2, 3])
    stage = acc.stage
    with pytest.raises(RuntimeError):
        acc.place_stage()
    assert acc.stage is stage and stage is not None and list(stage.handles) == [1, 2, 3]
    assert acc.take_all() == [stage]  # failed whole, not lost
    assert acc.stage is None and len(acc) == 0
    # Its size counted then, for the bytes its failure releases.
    assert stage.size == sum(record_size(b"%d" % k, b"v", None) for k in (1, 2, 3))


def test_placed_stage_records_are_encoded_as_runs_where_they_land() -> None:
    # The thread placing the stage encodes each partition's share as a run
    # (Accumulator._extend, quick path and record-by-record path alike): the
    # sender only frames them, into the bytes the columns make.
    acc, _ = _staging_acc(max_records=25, count=3)
    for _ in range(3):
        _stage(acc, list(range(10, 40)))
        acc.place_stage()
    batches = acc.drain(0.0, force=True)
    assert sum(len(b) for b in batches) == 90 and len(batches) > 3  # some closed full
    for batch in batches:
        assert batch.runs is not None and batch.runs[0] == len(batch)
        from_runs = batch.encode(CompressionType.NONE, None)
        batch.release_encoding()
        assert batch.runs is None
        assert batch.encode(CompressionType.NONE, None) == from_runs


@pytest.mark.parametrize("pattern", ["one ms", "rising", "clock set back", "many", "past a byte"])
def test_placed_records_keep_their_timestamps_however_they_run(pattern: str) -> None:
    # Timestamps in order (a few values: grouped as runs, see grouping.time_runs)
    # or not (a clock set back; too many values; deltas past a byte): each
    # record keeps its own, and the runs encode them as the columns do.
    n = 300
    stamps = {
        "one ms": [5000] * n,
        "rising": [5000 + i // 100 for i in range(n)],
        "clock set back": [5000 + i // 100 for i in range(n)][::-1],
        "many": [5000 + i for i in range(n)],
        "past a byte": [5000] * (n // 2) + [5300] * (n - n // 2),  # runs, deltas too far
    }[pattern]
    acc, _ = _staging_acc(max_records=80, count=3)
    stage = acc.new_stage(0.0)
    for i, stamp in enumerate(stamps):
        stage.values.append(b"v%05d" % i)
        stage.keys.append(b"%d" % i)  # type: ignore[union-attr]
        stage.timestamps.append(stamp)  # type: ignore[union-attr]
        stage.handles.append(i)  # type: ignore[union-attr]
    acc.place_stage()
    batches = acc.drain(0.0, force=True)
    assert sum(len(b) for b in batches) == n
    for batch in batches:
        assert batch.timestamps == [stamps[h] for h in batch.handles]  # type: ignore[union-attr]
        from_runs = batch.encode(CompressionType.NONE, None)
        batch.release_encoding()
        assert batch.encode(CompressionType.NONE, None) == from_runs
