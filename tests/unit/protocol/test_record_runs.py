"""Runs: a batch's records encoded a part at a time (``encode_record_run``)
and framed together (``frame_record_runs``). Whatever the cut, the batch
must be the bytes ``encode_batch`` makes of the same records, and read back
through kafka-python's decoder too."""

from __future__ import annotations

import random
from itertools import groupby

import pytest
from kafka.record.default_records import DefaultRecordBatch as KpBatch

from grete.protocol import records
from grete.protocol.compression import CompressionType
from grete.protocol.records import (
    decode_batches,
    encode_batch,
    encode_record_run,
    frame_record_runs,
)

BASE = 1_700_000_000_000


def _cut(
    rnd: random.Random,
    values: list[bytes],
    keys: list[bytes | None] | None,
    stamps: list[int],
    longest: int,
    lengths: tuple[int, int] | None = None,
    by_time_runs: bool = False,
) -> tuple[list[bytes], int]:
    """The records as runs of random lengths; (runs, greatest delta).
    ``lengths``: passed on (the caller's word that keys and values have them);
    ``by_time_runs``: the timestamps passed as ``time_runs`` too."""
    runs: list[bytes] = []
    greatest = 0
    i = 0
    while i < len(values):
        j = min(len(values), i + rnd.randrange(1, longest + 1))
        run = encode_record_run(
            values[i:j],
            None if keys is None else keys[i:j],
            stamps[i:j],
            base_timestamp=BASE,
            first=i,
            lengths=lengths,
            time_runs=[(t, len(list(g))) for t, g in groupby(stamps[i:j])]
            if by_time_runs
            else None,
        )
        assert run is not None
        runs.append(run[0])
        greatest = max(greatest, run[1])
        i = j
    return runs, greatest


@pytest.mark.parametrize("keys_kind", ["none", "nulls", "16"])
@pytest.mark.parametrize("vlen", [0, 100, 300])
@pytest.mark.parametrize("n", [1, 64, 700, 3000])
@pytest.mark.parametrize("spread", [1, 64, 256])
@pytest.mark.parametrize("ordered", [True, False])
def test_runs_make_the_bytes_encode_batch_makes(
    keys_kind: str, vlen: int, n: int, spread: int, ordered: bool
) -> None:
    rnd = random.Random(f"{keys_kind}-{vlen}-{n}-{spread}-{ordered}")
    values = [rnd.randbytes(vlen) for _ in range(n)]
    keys: list[bytes | None] | None = {
        "none": None,
        "nulls": [None] * n,
        "16": [rnd.randbytes(16) for _ in range(n)],
    }[keys_kind]
    stamps = [BASE + rnd.randrange(spread) for _ in range(n)]
    if ordered:
        stamps.sort()
    stamps[0] = BASE
    expected = encode_batch(values, keys, None, stamps, base_timestamp=BASE)
    for longest in (1, 37, n):
        runs, greatest = _cut(rnd, values, keys, stamps, longest)
        blob = frame_record_runs(runs, n, base_timestamp=BASE, greatest_delta=greatest)
        assert blob == expected, longest
        if keys_kind == "16":  # the lengths checked by the caller (a placed stage)
            runs, greatest = _cut(rnd, values, keys, stamps, longest, (16, vlen))
            blob = frame_record_runs(runs, n, base_timestamp=BASE, greatest_delta=greatest)
            assert blob == expected, longest
        if ordered:  # the timestamps as runs (a placed stage's, in order)
            runs, greatest = _cut(rnd, values, keys, stamps, longest, by_time_runs=True)
            blob = frame_record_runs(runs, n, base_timestamp=BASE, greatest_delta=greatest)
            assert blob == expected, longest
    theirs = list(KpBatch(bytearray(expected)))
    assert [r.value for r in theirs] == values
    assert [r.timestamp for r in theirs] == stamps
    assert [r.offset for r in theirs] == list(range(n))


def test_framed_runs_carry_the_producer_fields_and_compress() -> None:
    rnd = random.Random(7)
    n = 500
    values = [rnd.randbytes(50) for _ in range(n)]
    keys: list[bytes | None] = [rnd.randbytes(8) for _ in range(n)]
    stamps = [BASE + i // 10 for i in range(n)]
    runs, greatest = _cut(rnd, values, keys, stamps, 90)
    ids = {"producer_id": 42, "producer_epoch": 3, "base_sequence": 1000}
    assert frame_record_runs(
        runs, n, base_timestamp=BASE, greatest_delta=greatest, **ids
    ) == encode_batch(values, keys, None, stamps, base_timestamp=BASE, **ids)
    blob = frame_record_runs(
        runs, n, base_timestamp=BASE, greatest_delta=greatest, compression=CompressionType.GZIP
    )
    (batch,) = decode_batches(blob)
    assert batch.compression is CompressionType.GZIP
    assert [(r.key, r.value, r.timestamp) for r in batch.records] == list(
        zip(keys, values, stamps, strict=True)
    )
    assert batch.max_timestamp == stamps[-1]


@pytest.mark.parametrize(
    ("values", "keys", "stamps", "first"),
    [
        ([b"ab", b"abc"], None, [BASE, BASE], 0),  # values of two lengths
        ([b"ab", None], None, [BASE, BASE], 0),  # a null value
        ([b"ab", b"cd"], [b"k", None], [BASE, BASE], 0),  # a key and no key
        ([b"ab", b"cd"], [b"k", b"kk"], [BASE, BASE], 0),  # keys of two lengths
        ([b"ab", b"cd"], None, [BASE, BASE + 256], 0),  # a delta past one byte
        ([b"ab", b"cd"], None, [BASE, BASE - 1], 0),  # a delta below 0
        ([b"ab", b"cd"], None, [BASE, None], 0),  # not a timestamp
        ([], None, [], 0),  # nothing
        ([b"ab"], None, [BASE], records._M),  # past the offset tables
    ],
)
def test_a_run_refuses_what_the_uniform_path_cannot_take(
    values: list[bytes], keys: list[bytes | None] | None, stamps: list[int], first: int
) -> None:
    # The caller then encodes the batch whole (encode_batch takes anything).
    assert encode_record_run(values, keys, stamps, base_timestamp=BASE, first=first) is None


def test_runs_grow_the_tables_they_need() -> None:
    # A run deep in a big batch, of records longer than any seen: the offset
    # and length tables grow to them, as encode_batch grows them.
    n = 9000
    values = [b"v" * 5000] * n
    stamps = [BASE] * n
    runs, greatest = _cut(random.Random(1), values, None, stamps, 4000)
    blob = frame_record_runs(runs, n, base_timestamp=BASE, greatest_delta=greatest)
    assert blob == encode_batch(values, None, None, stamps, base_timestamp=BASE)


@pytest.mark.parametrize("stamps", [[BASE, BASE + 256], [BASE - 1, BASE]])
def test_a_run_given_time_runs_refuses_deltas_past_a_byte(stamps: list[int]) -> None:
    time_runs = [(stamp, 1) for stamp in stamps]
    run = encode_record_run(
        [b"ab", b"cd"], None, stamps, base_timestamp=BASE, first=0, time_runs=time_runs
    )
    assert run is None
