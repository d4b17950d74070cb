"""ProducerBatch bookkeeping that the producers' buffer bounds rely on."""

from __future__ import annotations

from itertools import pairwise

import pytest

from grete.producer.batch import ProducerBatch, move_watchers
from grete.protocol.compression import CompressionType
from grete.protocol.records import decode_batches


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


class _Watcher:
    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self._batch, self._index = batch, index


class _AppendInterrupted(list[object]):
    """A watcher list whose append of ``victim`` raises KeyboardInterrupt
    (once, unappended)."""

    def __init__(self, victim: object) -> None:
        super().__init__()
        self.victim: object | None = victim

    def append(self, item: object) -> None:
        if item is self.victim:
            self.victim = None
            raise KeyboardInterrupt
        super().append(item)


@pytest.mark.parametrize("cut", ["in the forward", "in the append"])
@pytest.mark.parametrize("at", [0, 3, 9])
def test_watchers_moved_all_when_the_move_is_cut_short(cut: str, at: int) -> None:
    """A KeyboardInterrupt while a relocated batch's watchers move (a stage
    placed by the thread calling produce()) must not lose the rest: their
    callbacks and delivery reports would never come."""
    old = ProducerBatch("t", -1, 0.0)
    even, odd = ProducerBatch("t", 0, 0.0), ProducerBatch("t", 1, 0.0)
    watchers = [_Watcher(old, i) for i in range(10)]
    old.watchers = list(watchers)
    calls = [0]

    def forward(i: int) -> tuple[ProducerBatch, int]:
        calls[0] += 1
        if cut == "in the forward" and calls[0] == at + 1:
            raise KeyboardInterrupt
        return (odd if i % 2 else even), i // 2

    if cut == "in the append":
        # The watcher ``at`` goes to a batch whose list raises on appending it.
        target = odd if at % 2 else even
        target.watchers = _AppendInterrupted(watchers[at])
    with pytest.raises(KeyboardInterrupt):
        move_watchers(old, forward)
    left: object = old.watchers  # (typed, not narrowed by the assignment above)
    assert old.forward is forward and left is None
    for w in watchers:
        assert w._batch is (odd if watchers.index(w) % 2 else even)
        assert w._index == watchers.index(w) // 2
    assert [w._index for w in even.watchers or []] == [0, 1, 2, 3, 4]
    assert [w._index for w in odd.watchers or []] == [0, 1, 2, 3, 4]


def _uniform_batch(n: int, *, keyed: bool = True) -> ProducerBatch:
    batch = ProducerBatch("t", 0, 0.0)
    for i in range(n):
        key = b"%04d" % i if keyed else None
        batch.append(key, b"value-%04d" % i, None, 1000 + i // 3, i, 40)
    return batch


def _columns_encoding(batch: ProducerBatch, **kw: object) -> bytes:
    runs, batch.runs = batch.runs, None
    try:
        return batch.encode(CompressionType.NONE, None, **kw)  # type: ignore[arg-type]
    finally:
        batch.release_encoding()
        batch.runs = runs


def _add_runs(batch: ProducerBatch, cuts: list[int]) -> None:
    for lo, hi in pairwise(cuts):
        keys = None if batch.keys is None else batch.keys[lo:hi]
        batch.add_run(batch.values[lo:hi], keys, batch.timestamps[lo:hi], lo)  # type: ignore[arg-type, index]


@pytest.mark.parametrize("keyed", [True, False])
@pytest.mark.parametrize("cuts", [[0, 10], [0, 3, 7], [0, 4]])
def test_a_batch_encodes_from_its_runs_as_from_its_columns(keyed: bool, cuts: list[int]) -> None:
    # Runs covering the first records; the rest (if any) is one more run at
    # encoding time. Same bytes as the columns give, with the producer fields.
    batch = _uniform_batch(10, keyed=keyed)
    expected = _columns_encoding(batch, producer_id=5, producer_epoch=1)
    _add_runs(batch, cuts)
    assert batch.runs is not None and batch.runs[0] == cuts[-1]
    assert batch.encode(CompressionType.NONE, None, producer_id=5, producer_epoch=1) == expected


def test_a_run_must_follow_the_runs_before_it() -> None:
    batch = _uniform_batch(10)
    _add_runs(batch, [0, 4])
    _add_runs(batch, [5, 8])  # a gap: records 4 and 5 would be missing
    assert batch.runs is not None and batch.runs[0] == 4
    _add_runs(batch, [4, 8])
    assert batch.runs is not None and batch.runs[0] == 8 and len(batch.runs[2]) == 2


def test_runs_are_dropped_with_the_records_they_encode_and_after_sending() -> None:
    batch = _uniform_batch(10)
    expected = _columns_encoding(batch)
    _add_runs(batch, [0, 4, 8])
    batch.truncate(8)  # cuts nothing the runs hold
    assert batch.runs is not None and batch.runs[0] == 8
    batch.truncate(6)  # cuts into them: they are gone, the columns encode
    assert batch.runs is None
    (decoded,) = decode_batches(batch.encode(CompressionType.NONE, None))
    assert [r.value for r in decoded.records] == batch.values[:6]
    batch = _uniform_batch(10)
    _add_runs(batch, [0, 10])
    assert batch.encode(CompressionType.NONE, None) == expected
    batch.release_encoding()  # framed into a request: a retry encodes the columns
    assert batch.runs is None
    assert batch.encode(CompressionType.NONE, None) == expected


def test_records_past_the_runs_that_no_run_takes_are_encoded_with_the_rest() -> None:
    # A later record with headers, or of another length: the runs are not
    # used, and the batch is what its columns make.
    for odd in ("headers", "length"):
        batch = _uniform_batch(6)
        _add_runs(batch, [0, 6])
        if odd == "headers":
            batch.append(b"kkkk", b"value-0006", [("h", b"1")], 1003, 6, 50)
        else:
            batch.append(b"kkkk", b"a longer value", None, 1003, 6, 50)
        expected = _columns_encoding(batch)
        assert batch.encode(CompressionType.NONE, None) == expected
        (decoded,) = decode_batches(expected)
        assert len(decoded.records) == 7
    batch = _uniform_batch(6)
    batch.headers = [None] * 6  # a header column: runs are not even made
    _add_runs(batch, [0, 6])
    assert batch.runs is None
