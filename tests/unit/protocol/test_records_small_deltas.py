"""Same-length records whose timestamps differ by under 64 ms (what the
background producer builds), or by under 8192 ms (a batch spanning longer),
take their own encoding paths: they must give the bytes the record-at-a-time
encoder gives, and read back through both our decoder and kafka-python's."""

from __future__ import annotations

import random

import pytest
from kafka.record.default_records import DefaultRecordBatch as KpBatch

from grete.protocol import records
from grete.protocol.records import decode_batches, encode_batch

BASE = 1_700_000_000_000


@pytest.mark.parametrize("klen", [None, 0, 16, 300])
@pytest.mark.parametrize("vlen", [0, 127, 128, 2000])
@pytest.mark.parametrize("n", [1, 2, 127, 128, 1500])
@pytest.mark.parametrize("spread", [1, 64, 65, 500, 8192, 8193, 20_000])
@pytest.mark.parametrize("ordered", [True, False])
def test_small_delta_path_matches_slow_path(
    klen: int | None, vlen: int, n: int, spread: int, ordered: bool
) -> None:
    rnd = random.Random(f"{klen}-{vlen}-{n}-{spread}-{ordered}")
    values = [rnd.randbytes(vlen) for _ in range(n)]
    keys = None if klen is None else [rnd.randbytes(klen) for _ in range(n)]
    stamps = [BASE + rnd.randrange(spread) for _ in range(n)]
    if ordered:
        stamps.sort()
    stamps[0] = BASE  # the base: no delta below 0
    deltas = [t - BASE for t in stamps]
    ts_deltas = deltas if any(deltas) else None
    slow = b"".join(records._encode_records_slow(values, keys, None, ts_deltas, n))
    fast = records._encode_columns(values, keys, None, ts_deltas, n)
    if max(deltas) >= records._M:
        assert fast is None  # past the tables: the record-at-a-time encoder's
    else:
        assert fast is not None
        assert b"".join(fast) == slow

    blob = encode_batch(values, keys, None, stamps, base_timestamp=BASE)
    (batch,) = decode_batches(blob)
    assert [r.value for r in batch.records] == values
    assert [r.key for r in batch.records] == (keys or [None] * n)
    assert [r.timestamp for r in batch.records] == stamps
    theirs = list(KpBatch(bytearray(blob)))
    assert [r.timestamp for r in theirs] == stamps
    assert [r.value for r in theirs] == values


def test_small_delta_pieces_grow_with_the_batch() -> None:
    values = [b"x" * 10] * 3000
    for n in (10, 100, 3000):
        stamps = [BASE + i % 7 for i in range(n)]
        (batch,) = decode_batches(encode_batch(values[:n], None, None, stamps, base_timestamp=BASE))
        assert [r.timestamp for r in batch.records] == stamps
        assert [r.offset for r in batch.records] == list(range(n))


@pytest.mark.parametrize(("spread", "path"), [(64, "narrow"), (500, "wide"), (8192, "wide")])
def test_deltas_pick_their_uniform_path(
    monkeypatch: pytest.MonkeyPatch, spread: int, path: str
) -> None:
    called: list[str] = []
    real = records._encode_uniform_ts

    def spy(*args: object) -> object:
        called.append("wide" if args[-1] else "narrow")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(records, "_encode_uniform_ts", spy)
    n = 500
    stamps = [BASE + i * (spread - 1) // (n - 1) for i in range(n)]
    keys = [b"k%04d" % i for i in range(n)]
    blob = encode_batch([b"v" * 50] * n, keys, None, stamps, base_timestamp=BASE)
    assert called == [path]
    (batch,) = decode_batches(blob)
    assert [r.timestamp for r in batch.records] == stamps


@pytest.mark.parametrize(
    "deltas",
    [
        [0, 1, 63, 64, 65, 8191],  # in order: split after the one-byte deltas
        [64, 64, 100],  # every delta wide
        [0, 0, 63],  # none wide
        [0, 64, 63, 64],  # out of order across the split
        [0, 70, 1, 2],  # bisect finds a split the rest contradicts
        [65, 0, 64],
        [5],
    ],
)
def test_wide_heads_split_or_pick(deltas: list[int]) -> None:
    n = len(deltas)
    both = [b"n%d" % (i // 2) if i % 2 == 0 else b"w%d" % (i // 2) for i in range(2 * n + 4)]
    expected = [(b"w%d" if d >= 64 else b"n%d") % i for i, d in enumerate(deltas)]
    assert records._wide_heads(both, deltas, n) == expected


@pytest.mark.parametrize(
    "offsets",
    [
        [0, 0, 0],  # every record at the base: no delta column
        [0, 3, 3, 200],  # in order, one byte each
        [0, 255, 7, 1],  # the greatest in the middle
        [0, 256, 1],  # past a byte: the general path
        [0, -1, 5],  # before the base: the general path
        [10, 10],  # none at the base
    ],
)
def test_batch_max_timestamp_whatever_the_deltas(offsets: list[int]) -> None:
    stamps = [BASE + d for d in offsets]
    blob = encode_batch([b"v"] * len(stamps), None, None, stamps, base_timestamp=BASE)
    (batch,) = decode_batches(blob)
    assert batch.max_timestamp == max(BASE, *stamps)
    assert [r.timestamp for r in batch.records] == stamps
    assert [r.timestamp for r in KpBatch(bytearray(blob))] == stamps
