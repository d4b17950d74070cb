"""Record batch v2: round trips, byte-level interoperability with other clients."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Sequence

import pytest
from aiokafka.record.default_records import DefaultRecordBatch as AioBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch as KpBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KpBuilder

from grete.errors import ConfigurationError
from grete.protocol import records
from grete.protocol.compression import CompressionType
from grete.protocol.records import (
    BATCH_OVERHEAD,
    Record,
    decode_batches,
    encode_batch,
    record_size,
)

from .._effort import effort

TS = 1_700_000_000_000
Headers = list[tuple[str, bytes | None]]

maybe_bytes = st.one_of(st.none(), st.binary(max_size=300))
header_lists = st.lists(
    st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=40))), max_size=4
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, object]:
    n = draw(st.integers(1, 40))
    values = draw(st.lists(maybe_bytes, min_size=n, max_size=n))
    keys = draw(st.one_of(st.none(), st.lists(maybe_bytes, min_size=n, max_size=n)))
    headers = draw(
        st.one_of(st.none(), st.lists(st.one_of(st.none(), header_lists), min_size=n, max_size=n))
    )
    base = draw(st.integers(0, 2**62))
    timestamps = draw(
        st.one_of(
            st.none(),
            st.lists(st.integers(base - 2**40, base + 2**40), min_size=n, max_size=n),
            st.lists(st.integers(base, base + 5000), min_size=n, max_size=n),
        )
    )
    return {
        "values": values,
        "keys": keys,
        "headers": headers,
        "timestamps": timestamps,
        "base_timestamp": base,
        "base_offset": draw(st.integers(0, 2**62)),
        "compression": draw(st.sampled_from(list(CompressionType))),
        "producer_id": draw(st.integers(-1, 2**63 - 1)),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**31 - 1)),
        "is_transactional": draw(st.booleans()),
        "partition_leader_epoch": draw(st.integers(-1, 2**31 - 1)),
    }


def expected_records(args: dict[str, object]) -> list[Record]:
    values: Sequence[bytes | None] = args["values"]  # type: ignore[assignment]
    n = len(values)
    keys = args["keys"] or [None] * n  # type: ignore[operator]
    headers = args["headers"] or [None] * n  # type: ignore[operator]
    timestamps = args["timestamps"] or [args["base_timestamp"]] * n  # type: ignore[operator]
    base_offset: int = args["base_offset"]  # type: ignore[assignment]
    return [
        Record(base_offset + i, timestamps[i], keys[i], values[i], list(headers[i] or []))
        for i in range(n)
    ]


@given(batches())
@settings(max_examples=effort(300, 30), deadline=None)
def test_round_trip_every_field(args: dict[str, object]) -> None:
    data = encode_batch(**args)  # type: ignore[arg-type]
    [batch] = decode_batches(data)
    n = len(args["values"])  # type: ignore[arg-type]
    assert batch.records == expected_records(args)
    assert batch.base_offset == args["base_offset"]
    assert batch.batch_length == len(data) - 12
    assert batch.magic == 2
    assert batch.compression == args["compression"]
    assert batch.timestamp_type == 0
    assert batch.is_transactional == args["is_transactional"]
    assert not batch.is_control
    assert batch.last_offset_delta == n - 1
    assert batch.base_timestamp == args["base_timestamp"]
    assert batch.max_timestamp == max(r.timestamp for r in batch.records)
    assert batch.producer_id == args["producer_id"]
    assert batch.producer_epoch == args["producer_epoch"]
    assert batch.base_sequence == args["base_sequence"]
    assert batch.partition_leader_epoch == args["partition_leader_epoch"]
    assert batch.next_offset == args["base_offset"] + n  # type: ignore[operator]


@given(batches())
@settings(max_examples=effort(100, 15), deadline=None)
def test_record_size_is_exact(args: dict[str, object]) -> None:
    args["compression"] = CompressionType.NONE
    data = encode_batch(**args)  # type: ignore[arg-type]
    expected = BATCH_OVERHEAD
    for i, rec in enumerate(expected_records(args)):
        expected += record_size(
            rec.key,
            rec.value,
            rec.headers,
            offset_delta=i,
            timestamp_delta=rec.timestamp - args["base_timestamp"],  # type: ignore[operator]
        )
    assert expected == len(data)


def test_fast_and_slow_paths_agree() -> None:
    # Values past the table range force the record-at-a-time path for the whole batch.
    n = 50
    values: list[bytes | None] = [bytes([i]) * (i * 7) for i in range(n)]
    values[3] = None
    keys = [b"k" * (i % 5) if i % 4 else None for i in range(n)]
    headers: list[Headers | None] = [[("h", b"v" * i)] if i % 3 else None for i in range(n)]
    ts = [TS + i for i in range(n)]
    fast = encode_batch(values, keys, headers, ts, base_timestamp=TS)
    slow_parts = records._encode_records_slow(values, keys, headers, [t - TS for t in ts], n)
    fast_parts = records._encode_columns(values, keys, headers, [t - TS for t in ts], n)
    assert fast_parts is not None
    assert b"".join(fast_parts) == b"".join(slow_parts)
    assert fast.endswith(b"".join(slow_parts))


@pytest.mark.parametrize(
    "values",
    [
        [b"x" * 100] * 1000,  # uniform: cached prefixes
        [b"x" * 20_000] * 3,  # past the tables
        [b"x" * (i % 300) for i in range(2000)],  # columns
        [b"y"] * 20_000,  # more records than the tables cover
    ],
    ids=["uniform", "huge-values", "varied", "many-records"],
)
@pytest.mark.parametrize("keyed", [False, True])
def test_paths_decode_identically_in_aiokafka(values: list[bytes], keyed: bool) -> None:
    keys = [b"key-%04d" % (i % 10) for i in range(len(values))] if keyed else None
    data = encode_batch(values, keys, base_timestamp=TS, base_offset=7)
    batch = AioBatch(bytearray(data))
    assert batch.validate_crc()
    got = list(batch)
    assert [r.value for r in got] == values
    assert [r.key for r in got] == (keys or [None] * len(values))
    assert [r.offset for r in got] == list(range(7, 7 + len(values)))


def aio_build(
    entries: list[tuple[bytes | None, bytes | None, Headers, int]], codec: int, **kw: int
) -> bytes:
    builder = AioBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=kw.get("is_transactional", 0),
        producer_id=kw.get("producer_id", -1),
        producer_epoch=kw.get("producer_epoch", -1),
        base_sequence=kw.get("base_sequence", -1),
        batch_size=10**8,
    )
    for i, (key, value, headers, ts) in enumerate(entries):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(builder.build())


def kp_build(entries: list[tuple[bytes | None, bytes | None, Headers, int]], codec: int) -> bytes:
    builder = KpBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=10**8,
    )
    for i, (key, value, headers, ts) in enumerate(entries):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(builder.build())


ENTRIES: list[tuple[bytes | None, bytes | None, Headers, int]] = [
    (None, b"plain value", [], TS),
    (b"key-1", b"keyed value", [], TS + 5),
    (b"key-2", None, [], TS + 3),  # tombstone
    (b"", b"", [("trace", b"abc"), ("empty", b""), ("null", None)], TS + 100),
    (None, bytes(range(256)) * 10, [("\u00e9t\u00e9", b"\xff")], TS - 7),
]


@pytest.mark.parametrize("codec", list(CompressionType))
def test_decodes_aiokafka_batch_exactly(codec: CompressionType) -> None:
    data = aio_build(ENTRIES, int(codec), producer_id=42, producer_epoch=3, base_sequence=9)
    [batch] = decode_batches(data)
    assert batch.compression == codec
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (42, 3, 9)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in batch.records] == [
        (k, v, h, t) for k, v, h, t in ENTRIES
    ]
    assert [r.offset for r in batch.records] == list(range(len(ENTRIES)))


@pytest.mark.parametrize(
    "codec", [CompressionType.NONE, CompressionType.GZIP, CompressionType.LZ4, CompressionType.ZSTD]
)
def test_decodes_kafka_python_batch_exactly(codec: CompressionType) -> None:
    data = kp_build(ENTRIES, int(codec))
    [batch] = decode_batches(data)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in batch.records] == [
        (k, v, h, t) for k, v, h, t in ENTRIES
    ]


def grete_encode(codec: CompressionType) -> bytes:
    keys = [k for k, _, _, _ in ENTRIES]
    values = [v for _, v, _, _ in ENTRIES]
    headers = [h for _, _, h, _ in ENTRIES]
    timestamps = [t for _, _, _, t in ENTRIES]
    return encode_batch(values, keys, headers, timestamps, base_timestamp=TS - 7, compression=codec)


def test_uncompressed_bytes_identical_to_other_clients() -> None:
    # With identical inputs the encoding is fully determined, so the bytes must match.
    entries = [(k, v, h, TS) for k, v, h, _ in ENTRIES]
    keys = [k for k, _, _, _ in entries]
    values = [v for _, v, _, _ in entries]
    headers = [h for _, _, h, _ in entries]
    ours = encode_batch(values, keys, headers, base_timestamp=TS)
    assert ours == aio_build(entries, 0)
    # kafka-python writes partitionLeaderEpoch 0 where Java and aiokafka write -1.
    kp_like = encode_batch(values, keys, headers, base_timestamp=TS, partition_leader_epoch=0)
    assert kp_like == kp_build(entries, 0)


@pytest.mark.parametrize("codec", list(CompressionType))
def test_aiokafka_reads_grete_batches(codec: CompressionType) -> None:
    batch = AioBatch(bytearray(grete_encode(codec)))
    assert batch.validate_crc()
    assert batch.compression_type == codec
    got = [(r.key, r.value, list(r.headers), r.timestamp) for r in batch]
    assert got == [(k, v, h, t) for k, v, h, t in ENTRIES]


@pytest.mark.parametrize(
    "codec", [CompressionType.NONE, CompressionType.GZIP, CompressionType.LZ4, CompressionType.ZSTD]
)
def test_kafka_python_reads_grete_batches(codec: CompressionType) -> None:
    batch = KpBatch(bytearray(grete_encode(codec)))
    assert batch.validate_crc()
    got = [(r.key, r.value, list(r.headers), r.timestamp) for r in batch]
    assert got == [(k, v, h, t) for k, v, h, t in ENTRIES]


def test_several_batches_and_partial_tail() -> None:
    one = encode_batch([b"a", b"b"], base_timestamp=TS, base_offset=0)
    two = encode_batch([b"c"], base_timestamp=TS, base_offset=2)
    got = decode_batches(one + two)
    assert [[r.value for r in b.records] for b in got] == [[b"a", b"b"], [b"c"]]
    for cut in (1, 11, 12, 17, 30, len(two) - 1):
        data = one + two[:cut]
        assert len(decode_batches(data, allow_partial_tail=True)) == 1
        with pytest.raises(records.ProtocolError):
            decode_batches(data)
    assert decode_batches(b"") == []
    assert decode_batches(memoryview(one + two))[1].records[0].value == b"c"


def test_log_append_time_batches_use_max_timestamp() -> None:
    data = bytearray(encode_batch([b"a", b"b"], None, None, [TS, TS + 9], base_timestamp=TS))
    attributes = struct.unpack_from(">h", data, 21)[0] | 0x08
    struct.pack_into(">h", data, 21, attributes)
    from grete.protocol.crc32c import crc32c

    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    [batch] = decode_batches(data)
    assert batch.timestamp_type == 1
    assert [r.timestamp for r in batch.records] == [TS + 9, TS + 9]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"values": []},
        {"values": [b"a"], "keys": [b"k", b"k"]},
        {"values": [b"a"], "headers": []},
        {"values": [b"a"], "timestamps": [1, 2]},
        {"values": [b"a"], "compression": CompressionType.SNAPPY, "compression_level": 3},
        {"values": [b"a"], "producer_epoch": 2**15},
    ],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        encode_batch(base_timestamp=TS, **kwargs)  # type: ignore[arg-type]


def test_non_bytes_value_is_type_error() -> None:
    with pytest.raises(TypeError, match="bytes"):
        encode_batch(["text"], base_timestamp=TS)  # type: ignore[list-item]


def test_batch_overhead_constant() -> None:
    assert len(encode_batch([None], base_timestamp=TS)) == BATCH_OVERHEAD + record_size(None, None)


def test_core_runs_without_optional_extras() -> None:
    code = (
        "import sys\n"
        "sys.modules['crc32c'] = None; sys.modules['cramjam'] = None\n"
        "from grete.protocol.records import encode_batch, decode_batches\n"
        "from grete.protocol.compression import CompressionType as C\n"
        "from grete.protocol import crc32c\n"
        "assert not crc32c.HAVE_C_CRC32C\n"
        "for c in (C.NONE, C.GZIP):\n"
        "    data = encode_batch([b'v'] * 10, [b'k'] * 10, base_timestamp=1, compression=c)\n"
        "    assert [r.value for r in decode_batches(data)[0].records] == [b'v'] * 10\n"
        "try:\n"
        "    encode_batch([b'v'], base_timestamp=1, compression=C.ZSTD)\n"
        "except Exception as e:\n"
        "    assert type(e).__name__ == 'UnsupportedCodecError' and 'grete[codecs]' in str(e)\n"
        "else:\n"
        "    raise AssertionError('zstd without cramjam')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("same_names", [True, False])
def test_header_columns_match_slow_path(same_names: bool) -> None:
    n = 60
    headers: list[Headers | None] = [
        [
            ("trace" if same_names else f"trace-{i}", b"t" * (i % 9)),
            ("\u00fcber" if same_names else "\u00fc" * (i % 3), None if i % 4 else b""),
        ]
        for i in range(n)
    ]
    values: list[bytes | None] = [b"v" * i for i in range(n)]
    keys: list[bytes | None] = [b"k%d" % i for i in range(n)]
    assert records._header_columns(headers, n) is not None
    fast = records._encode_columns(values, keys, headers, None, n)
    slow = records._encode_records_slow(values, keys, headers, None, n)
    assert fast is not None
    assert b"".join(fast) == b"".join(slow)
    [batch] = decode_batches(encode_batch(values, keys, headers, base_timestamp=TS))
    assert [r.headers for r in batch.records] == headers


def test_tables_grow_on_demand_and_stay_exact() -> None:
    # A fresh interpreter, so the tables start at their import-time size.
    code = (
        "import threading\n"
        "from grete.protocol import records as r\n"
        "assert r._L == r._O == r._MIN_TABLE, (r._L, r._O)\n"
        "def check(n, size, keyed, ts):\n"
        "    values = [bytes(size + i % 3) for i in range(n)]\n"
        "    keys = [b'k%d' % i for i in range(n)] if keyed else None\n"
        "    deltas = [i * 7 for i in range(n)] if ts else None\n"
        "    fast = r._encode_columns(values, keys, None, deltas, n)\n"
        "    slow = r._encode_records_slow(values, keys, None, deltas, n)\n"
        "    assert fast is not None and b''.join(fast) == b''.join(slow), (n, size)\n"
        "cases = [(n, size, keyed, ts) for n in (1, 300, 2000) for size in (10, 200, 5000)\n"
        "         for keyed in (False, True) for ts in (False, True)]\n"
        # A failed check in a worker thread only prints its traceback: collected
        # and re-raised, so the child exits non-zero.
        "errors = []\n"
        "def worker(*c):\n"
        "    try:\n"
        "        check(*c)\n"
        "    except BaseException as exc:\n"
        "        errors.append((c, exc))\n"
        "threads = [threading.Thread(target=worker, args=c) for c in cases]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "assert not errors, errors\n"
        "for c in cases: check(*c)\n"
        "assert r._O == 2048 and r._L == 16384, (r._O, r._L)\n"
        "for i in range(r._L):\n"
        "    assert r._LEN[i] == r._zz(i) and r._SIZE[i] == i + len(r._LEN[i])\n"
        "    assert r._LENZ[i] == b'\\0' + r._LEN[i] and r._TSA_SIZE[i] == len(r._LENZ[i])\n"
        "for i in range(r._O):\n"
        "    assert r._PFX_TS0_NOKEY[i] == b'\\0\\0' + r._LEN[i] + b'\\1'\n"
        "    assert [f[i] for f in r._FIXED] == [c + len(r._LEN[i]) for c in range(5)]\n"
        "assert r._LEN[-1] == b'\\1' and r._SIZE[-1] == 1 and len(r._LEN) == r._L + 1\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
