"""Same-length records whose timestamps differ by under 64 ms (what the
background producer builds) take their own encoding path: it must give the
bytes the record-at-a-time encoder gives, and read back through both our
decoder and kafka-python's."""

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
@pytest.mark.parametrize("spread", [1, 64, 65, 500])
def test_small_delta_path_matches_slow_path(
    klen: int | None, vlen: int, n: int, spread: int
) -> None:
    rnd = random.Random(f"{klen}-{vlen}-{n}-{spread}")
    values = [rnd.randbytes(vlen) for _ in range(n)]
    keys = None if klen is None else [rnd.randbytes(klen) for _ in range(n)]
    stamps = sorted(BASE + rnd.randrange(spread) for _ in range(n))
    stamps[0] = BASE
    deltas = [t - BASE for t in stamps]
    ts_deltas = deltas if any(deltas) else None
    slow = b"".join(records._encode_records_slow(values, keys, None, ts_deltas, n))
    fast = records._encode_columns(values, keys, None, ts_deltas, n)
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
