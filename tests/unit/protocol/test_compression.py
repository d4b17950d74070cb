"""Codecs: round trips at every level range, Java-compatible framing, hostile input."""

from __future__ import annotations

import contextlib
import gzip
import os
import random
import struct

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grete.errors import ConfigurationError, ProtocolError, UnsupportedCodecError
from grete.protocol import compression
from grete.protocol.compression import CompressionType, compress, decompress

from .._effort import effort

ALL = list(CompressionType)
WORDS = [b"alpha", b"beta", b"gamma", b"delta", b"kafka", b"grete", b"record", b"batch"]


def text(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    return b" ".join(rnd.choice(WORDS) for _ in range(n))


PAYLOADS = [b"", b"x", text(10), text(50_000), os.urandom(70_000), b"\x00" * 200_000]


@pytest.mark.parametrize("codec", ALL)
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: f"{len(p)}B")
def test_round_trip_default_level(codec: CompressionType, payload: bytes) -> None:
    assert decompress(codec, compress(codec, payload)) == payload


@pytest.mark.parametrize(
    ("codec", "levels"),
    [
        (CompressionType.GZIP, range(1, 10)),
        (CompressionType.LZ4, range(1, 18)),
        (CompressionType.ZSTD, [-131072, -1000, -5, -1, 0, 1, 3, 9, 19, 22]),
    ],
)
def test_round_trip_every_level(codec: CompressionType, levels: range | list[int]) -> None:
    payload = text(5000, seed=1)
    for level in levels:
        assert decompress(codec, compress(codec, payload, level)) == payload


@pytest.mark.parametrize("codec", ALL)
@pytest.mark.parametrize("wrap", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_every_codec_takes_any_buffer(codec: CompressionType, wrap: type) -> None:
    # The record encoder hands codecs bytearrays and views, not only bytes.
    payload = text(20_000, seed=2)
    for data in (payload, payload[:0], payload[:70_000]):
        assert decompress(codec, compress(codec, wrap(data))) == data


@given(st.sampled_from(ALL), st.binary(max_size=5000))
@settings(max_examples=effort(60, 15))
def test_round_trip_arbitrary(codec: CompressionType, payload: bytes) -> None:
    assert decompress(codec, compress(codec, payload)) == payload


@pytest.mark.parametrize(
    ("codec", "level"),
    [
        (CompressionType.GZIP, 0),
        (CompressionType.GZIP, 10),
        (CompressionType.LZ4, 0),
        (CompressionType.LZ4, 18),
        (CompressionType.ZSTD, 23),
        (CompressionType.ZSTD, -131073),
        (CompressionType.SNAPPY, 1),
        (CompressionType.NONE, 1),
    ],
)
def test_bad_level_is_configuration_error(codec: CompressionType, level: int) -> None:
    with pytest.raises(ConfigurationError):
        compress(codec, b"data", level)


def test_unknown_codec_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        compress(7, b"data")


def test_gzip_is_a_gzip_member_readable_by_stdlib() -> None:
    payload = text(1000)
    assert gzip.decompress(compress(CompressionType.GZIP, payload)) == payload
    # ...and what stdlib (like Java's GZIPOutputStream) writes reads back, even as
    # several concatenated members.
    two = gzip.compress(payload[:100]) + gzip.compress(payload[100:])
    assert decompress(CompressionType.GZIP, two) == payload


def test_snappy_uses_xerial_framing_in_32k_blocks() -> None:
    payload = text(30_000)
    out = compress(CompressionType.SNAPPY, payload)
    assert out[:16] == b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    pos, blocks = 16, []
    while pos < len(out):
        (size,) = struct.unpack_from(">i", out, pos)
        blocks.append(bytes(cramjam.snappy.decompress_raw(out[pos + 4 : pos + 4 + size])))
        pos += 4 + size
    assert b"".join(blocks) == payload
    assert all(len(b) == 32 * 1024 for b in blocks[:-1])


def test_snappy_reads_xerial_written_independently() -> None:
    # Build the stream the way snappy-java does: header, then length-prefixed raw blocks.
    payload = text(20_000, seed=3)
    chunks = [payload[i : i + 10_000] for i in range(0, len(payload), 10_000)]
    stream = b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1)
    for chunk in chunks:
        raw = bytes(cramjam.snappy.compress_raw(chunk))
        stream += struct.pack(">i", len(raw)) + raw
    assert decompress(CompressionType.SNAPPY, stream) == payload


def test_snappy_reads_raw_block() -> None:
    payload = text(3000)
    raw = bytes(cramjam.snappy.compress_raw(payload))
    assert decompress(CompressionType.SNAPPY, raw) == payload


def test_lz4_frame_has_independent_blocks() -> None:
    out = compress(CompressionType.LZ4, os.urandom(200_000))
    assert out[:4] == b"\x04\x22\x4d\x18"
    flg, bd = out[4], out[5]
    assert flg >> 6 == 1 and flg & 0x20, "version 01, block independence set"
    assert (bd >> 4) & 7 == 4, "64 KiB maximum blocks, as the Java client writes"


def _xxh32_short(data: bytes, seed: int = 0) -> int:
    """XXH32 of under 16 bytes (the LZ4 frame descriptor), from the xxHash spec."""
    mask, p1, p2, p3, p4, p5 = 0xFFFFFFFF, 2654435761, 2246822519, 3266489917, 668265263, 374761393

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    h, i = (seed + p5 + len(data)) & mask, 0
    while i + 4 <= len(data):
        h = rotl((h + int.from_bytes(data[i : i + 4], "little") * p3) & mask, 17) * p4 & mask
        i += 4
    for byte in data[i:]:
        h = rotl((h + byte * p5) & mask, 11) * p1 & mask
    h ^= h >> 15
    h = h * p2 & mask
    h ^= h >> 13
    h = h * p3 & mask
    return h ^ (h >> 16)


def test_xxh32_of_the_test_matches_cramjams_frame_header() -> None:
    # cramjam's frame compressor (block checksums on) is the reference for the helper.
    framed = cramjam.lz4.Compressor(content_checksum=False, block_linked=False)
    framed.compress(b"x")
    header = bytes(framed.finish())[:7]
    assert header[6] == (_xxh32_short(header[4:6]) >> 8) & 0xFF


def _lz4_blocks(frame: bytes) -> list[tuple[int, bool]]:
    """(size, compressed) of each block of a frame with no checksums."""
    blocks, at = [], 7
    while True:
        (size,) = struct.unpack_from("<I", frame, at)
        at += 4
        if size == 0:
            assert at == len(frame), "nothing after the end mark"
            return blocks
        blocks.append((size & 0x7FFFFFFF, not size & 0x80000000))
        at += size & 0x7FFFFFFF


@pytest.mark.parametrize(
    "payload",
    [b"x", text(3000), os.urandom(70_000), bytes(64 << 10), bytes((64 << 10) + 1), text(40_000)],
    ids=["1 B", "text", "random 70 KB", "64 KiB", "64 KiB + 1", "text 40k"],
)
def test_lz4_default_level_writes_its_own_frame(payload: bytes) -> None:
    out = compress(CompressionType.LZ4, payload)
    assert out[:7] == b"\x04\x22\x4d\x18\x60\x40" + bytes([(_xxh32_short(b"\x60\x40") >> 8) & 0xFF])
    assert bytes(cramjam.lz4.decompress(out)) == payload  # LZ4's own frame reader
    assert decompress(CompressionType.LZ4, out) == payload
    blocks = _lz4_blocks(out)
    assert len(blocks) == -(-len(payload) // (64 << 10))  # 64 KiB blocks
    assert all(size <= 64 << 10 for size, _ in blocks)


def test_lz4_block_that_does_not_shrink_is_stored_as_is() -> None:
    payload = os.urandom(70_000)
    out = compress(CompressionType.LZ4, payload)
    assert _lz4_blocks(out) == [(64 << 10, False), (70_000 - (64 << 10), False)]
    assert out[11 : 11 + 100] == payload[:100]
    assert bytes(cramjam.lz4.decompress(out)) == payload


@pytest.mark.parametrize("codec", [c for c in ALL if c is not CompressionType.NONE])
def test_garbage_is_protocol_error(codec: CompressionType) -> None:
    rnd = random.Random(codec)
    good = compress(codec, text(2000))
    for _ in range(200):
        choice = rnd.random()
        if choice < 0.3:
            bad = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 64)))
        elif choice < 0.6:
            bad = good[: rnd.randint(0, len(good) - 1)]
        else:
            mutated = bytearray(good)
            for _ in range(rnd.randint(1, 4)):
                mutated[rnd.randrange(len(mutated))] ^= 1 << rnd.randrange(8)
            bad = bytes(mutated)
        with contextlib.suppress(ProtocolError):
            decompress(codec, bad)


@pytest.mark.parametrize("codec", [c for c in ALL if c is not CompressionType.NONE])
def test_decompression_bomb_is_refused(codec: CompressionType) -> None:
    bomb = compress(codec, b"\x00" * (4 << 20))
    assert len(bomb) < 300_000
    with pytest.raises(ProtocolError, match="over"):
        decompress(codec, bomb, max_output_size=1 << 20)
    assert len(decompress(codec, bomb, max_output_size=4 << 20)) == 4 << 20


def test_zstd_rle_bomb_bounded_before_decompressing() -> None:
    # One RLE block may claim ~2 MiB from a single byte: the bound must see it.
    frame = struct.pack("<I", 0xFD2FB528) + bytes([0x00, 0x58])  # no FCS, window byte
    header = 1 | (1 << 1) | ((2_000_000) << 3)  # last block, RLE, size
    frame += header.to_bytes(3, "little") + b"A"
    with pytest.raises(ProtocolError):
        decompress(CompressionType.ZSTD, frame * 50, max_output_size=1 << 20)


@pytest.mark.parametrize(
    "codec", [CompressionType.SNAPPY, CompressionType.LZ4, CompressionType.ZSTD]
)
def test_missing_cramjam_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, codec: CompressionType
) -> None:
    monkeypatch.setattr(compression, "_cramjam", None)
    with pytest.raises(UnsupportedCodecError, match=r"pip install grete\[codecs\]"):
        compress(codec, b"data")
    with pytest.raises(UnsupportedCodecError, match=r"grete\[codecs\]"):
        decompress(codec, b"data")
    # gzip and none need nothing beyond the standard library.
    assert decompress(CompressionType.GZIP, compress(CompressionType.GZIP, b"ok")) == b"ok"
