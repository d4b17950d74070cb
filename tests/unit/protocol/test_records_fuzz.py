"""The decoder on hostile input: only ProtocolError escapes, and quickly."""

from __future__ import annotations

import contextlib
import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grete.errors import CorruptRecordError, ProtocolError
from grete.protocol.compression import CompressionType
from grete.protocol.crc32c import crc32c
from grete.protocol.records import decode_batches, encode_batch

from .._effort import effort

TS = 1_700_000_000_000


def sample_batch(codec: CompressionType = CompressionType.NONE) -> bytes:
    return encode_batch(
        [b"value-%d" % i if i % 5 else None for i in range(30)],
        [b"key-%d" % i if i % 2 else None for i in range(30)],
        [[("h", b"x"), ("n", None)] if i % 3 else None for i in range(30)],
        [TS + i for i in range(30)],
        base_timestamp=TS,
        compression=codec,
    )


def refix_crc(data: bytearray) -> bytes:
    """Make the CRC right again so mutations reach the record parser."""
    struct.pack_into(">I", data, 17, crc32c(bytes(data[21:])))
    return bytes(data)


def decode_or_protocol_error(data: bytes, allow_partial_tail: bool = False) -> None:
    with contextlib.suppress(ProtocolError):
        decode_batches(data, allow_partial_tail=allow_partial_tail)


@given(st.binary(max_size=2000))
@settings(max_examples=effort(500, 50))
def test_random_bytes(data: bytes) -> None:
    decode_or_protocol_error(data)
    decode_or_protocol_error(data, allow_partial_tail=True)


@given(st.binary(min_size=61, max_size=400))
@settings(max_examples=effort(500, 50), suppress_health_check=[HealthCheck.too_slow])
def test_random_bodies_behind_a_valid_header(body: bytes) -> None:
    # A plausible header with a correct CRC, so the garbage reaches the record parser.
    data = bytearray(body)
    struct.pack_into(">qiib", data, 0, 0, len(data) - 12, -1, 2)
    struct.pack_into(">h", data, 21, data[22] & 0x07 if data[22] & 0x07 <= 4 else 0)
    decode_or_protocol_error(refix_crc(data))


@pytest.mark.parametrize("codec", list(CompressionType))
def test_truncations(codec: CompressionType) -> None:
    good = sample_batch(codec)
    for cut in range(len(good)):
        with pytest.raises(ProtocolError):
            decode_batches(good[:cut] if cut else b"\x00")
        assert decode_batches(good[:cut], allow_partial_tail=True) == []


@pytest.mark.parametrize("codec", list(CompressionType))
def test_bit_flips_with_and_without_crc_fix(codec: CompressionType) -> None:
    good = sample_batch(codec)
    rnd = random.Random(int(codec))
    for _ in range(effort(3000, 300)):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 3)):
            data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        decode_or_protocol_error(bytes(data))
        if len(data) > 21:
            decode_or_protocol_error(refix_crc(data))


def test_crc_mismatch_is_corrupt_record_error() -> None:
    data = bytearray(sample_batch())
    data[-1] ^= 0x01
    with pytest.raises(CorruptRecordError, match="CRC"):
        decode_batches(bytes(data))


@pytest.mark.parametrize("magic", [0, 1, 3])
def test_other_magic_is_refused(magic: int) -> None:
    data = bytearray(sample_batch())
    data[16] = magic
    with pytest.raises(ProtocolError, match="unsupported magic"):
        decode_batches(bytes(data))


def test_absurd_record_count_fails_fast() -> None:
    data = bytearray(sample_batch())
    struct.pack_into(">i", data, 57, 2**31 - 1)
    start = time.perf_counter()
    with pytest.raises(ProtocolError, match="record count"):
        decode_batches(refix_crc(data))
    assert time.perf_counter() - start < 0.1


def test_negative_record_count() -> None:
    data = bytearray(sample_batch())
    struct.pack_into(">i", data, 57, -5)
    with pytest.raises(ProtocolError):
        decode_batches(refix_crc(data))


def test_absurd_batch_length() -> None:
    data = bytearray(sample_batch())
    struct.pack_into(">i", data, 8, 2**31 - 1)
    with pytest.raises(ProtocolError):
        decode_batches(bytes(data))
    struct.pack_into(">i", data, 8, -1)
    with pytest.raises(ProtocolError):
        decode_batches(bytes(data))


def test_over_long_varint() -> None:
    header = bytearray(encode_batch([b"v"], base_timestamp=TS))
    body = b"\xff" * 20
    data = header[:61] + body
    struct.pack_into(">i", data, 8, len(data) - 12)
    with pytest.raises(ProtocolError, match="varint"):
        decode_batches(refix_crc(data))


def test_compressed_bomb_inside_batch_is_refused() -> None:
    data = encode_batch(
        [b"\x00" * 1_000_000] * 8, base_timestamp=TS, compression=CompressionType.ZSTD
    )
    assert len(data) < 10_000
    with pytest.raises(ProtocolError):
        decode_batches(data, max_decompressed_size=1 << 20)
    assert len(decode_batches(data)[0].records) == 8


def test_large_hostile_input_is_linear() -> None:
    rnd = random.Random(5)
    blob = bytes(rnd.getrandbits(8) for _ in range(200_000))
    copies = effort(2000, 500)
    start = time.perf_counter()
    decode_or_protocol_error(blob)
    decode_or_protocol_error(sample_batch() * copies)
    assert time.perf_counter() - start < 5 * copies / 2000  # 2.5 ms a batch at most
