"""Record-batch compression codecs, byte-compatible with the Java client.

gzip comes from the standard library; snappy, lz4 and zstd come from ``cramjam``
(extra ``grete[codecs]``), imported lazily enough that the core works without it.

Decompression treats its input as untrusted: garbage raises :class:`ProtocolError`,
and the decompressed size is bounded *before* any large allocation (from the
framing's own block headers) so a small "decompression bomb" cannot exhaust memory.
"""

from __future__ import annotations

import enum
import struct
import zlib
from types import ModuleType
from typing import Any, Literal

from grete.errors import ConfigurationError, ProtocolError, UnsupportedCodecError

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "LEVEL_RANGES",
    "CompressionType",
    "compress",
    "decompress",
    "validate_level",
]

# cramjam (~2 MiB of resident memory) is imported by the first batch that needs it,
# so that uncompressed and gzip users never load it. False: not tried yet; None:
# the optional extra is not installed.
_cramjam: ModuleType | Literal[False] | None = False


class CompressionType(enum.IntEnum):
    """The codec ids stored in bits 0-2 of a record batch's attributes."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


#: Inclusive level ranges accepted per codec (KIP-390); snappy and none take no level.
LEVEL_RANGES: dict[CompressionType, tuple[int, int]] = {
    CompressionType.GZIP: (1, 9),
    CompressionType.LZ4: (1, 17),
    CompressionType.ZSTD: (-131072, 22),
}

#: The level used when none is given, as the Java client defaults them.
DEFAULT_LEVELS: dict[CompressionType, int] = {
    CompressionType.GZIP: 6,
    CompressionType.LZ4: 9,
    CompressionType.ZSTD: 3,
}

#: Default cap on one decompressed blob; a batch is bounded by the broker's
#: message.max.bytes (1 MiB by default), so 64 MiB leaves ample headroom.
DEFAULT_MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024

# snappy-java's SnappyOutputStream ("xerial") stream header: magic, version, compat version.
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
# SnappyOutputStream's default block size; the Java client uses the default.
_XERIAL_BLOCK = 32 * 1024

_LZ4_MAGIC = 0x184D2204
_ZSTD_MAGIC = 0xFD2FB528
_LZ4_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}
_ZSTD_BLOCK_MAX = 128 << 10
# The frame _lz4_frame writes: magic; FLG 0x60 (version 1, independent blocks, no
# block or content checksum, no content size); BD 0x40 (blocks of at most 64 KiB,
# the Java client's size); the header checksum, (xxh32(FLG BD) >> 8) & 0xff.
_LZ4_HEADER = b"\x04\x22\x4d\x18\x60\x40\x82"
_LZ4_FRAME_BLOCK = 64 << 10
_LZ4_BLOCK_SIZE = struct.Struct("<I")


def _require_cramjam(codec: CompressionType) -> ModuleType:
    global _cramjam
    if _cramjam is False:
        try:
            import cramjam
        except ImportError:
            _cramjam = None
        else:
            _cramjam = cramjam
    if _cramjam is None:
        raise UnsupportedCodecError(
            f"{codec.name.lower()} compression needs the cramjam library: pip install grete[codecs]"
        )
    return _cramjam


def _coerce_type(codec: CompressionType | int) -> CompressionType:
    try:
        return CompressionType(codec)
    except ValueError:
        raise ConfigurationError(f"unknown compression type {codec!r}") from None


def validate_level(codec: CompressionType | int, level: int | None) -> int | None:
    """Return the effective level for ``codec`` (its default when ``level`` is None).

    Raises :class:`ConfigurationError` for a level outside the codec's range, or
    for any level given to a codec that has none (none, snappy).
    """
    codec = _coerce_type(codec)
    if level is None:
        return DEFAULT_LEVELS.get(codec)
    if isinstance(level, bool) or not isinstance(level, int):
        raise ConfigurationError(f"compression level must be an int, not {level!r}")
    bounds = LEVEL_RANGES.get(codec)
    if bounds is None:
        raise ConfigurationError(f"{codec.name.lower()} compression takes no level")
    low, high = bounds
    if not low <= level <= high:
        raise ConfigurationError(
            f"{codec.name.lower()} compression level must be in [{low}, {high}], not {level}"
        )
    return level


def compress(
    codec: CompressionType | int, data: bytes | bytearray | memoryview, level: int | None = None
) -> bytes:
    """Compress ``data`` as the Java client would for a record batch."""
    codec = _coerce_type(codec)
    effective = validate_level(codec, level)
    if codec is CompressionType.NONE:
        return bytes(data)
    if codec is CompressionType.GZIP:
        assert effective is not None
        # wbits=31: a gzip member (header + trailer), as java.util.zip.GZIPOutputStream writes.
        co = zlib.compressobj(effective, zlib.DEFLATED, 31)
        return co.compress(data) + co.flush()
    cj = _require_cramjam(codec)
    if codec is CompressionType.SNAPPY:
        return _xerial_compress(cj, data)
    if codec is CompressionType.LZ4:
        # Independent blocks: Kafka's Java reader decompresses each block on its own,
        # so linked blocks (cramjam's default) could not be read back by brokers.
        # Like the Java client, the default level (9) means LZ4's fast compressor, not
        # high-compression level 9, which is ~40x slower; other levels select LZ4-HC.
        if effective == DEFAULT_LEVELS[CompressionType.LZ4]:
            return _lz4_frame(cj, data)
        comp = cj.lz4.Compressor(level=effective, content_checksum=False, block_linked=False)
        comp.compress(bytes(data))
        return bytes(comp.finish())
    return bytes(cj.zstd.compress(bytes(data), level=effective))


def _lz4_frame(cj: Any, data: bytes | bytearray | memoryview) -> bytes:
    """An LZ4 frame of independent 64 KiB blocks, no checksums, written here
    around cramjam's block compressor: the frame compressor holds the GIL
    while it works, the block compressor lets it go (a background producer's
    sender compresses beside the producing thread), and it is faster.
    A block that does not shrink is stored as is (the size's high bit set)."""
    compress_block = cj.lz4.compress_block
    view = memoryview(data)
    parts: list[bytes | memoryview] = [_LZ4_HEADER]
    size = _LZ4_BLOCK_SIZE.pack
    for at in range(0, len(view), _LZ4_FRAME_BLOCK):
        chunk = view[at : at + _LZ4_FRAME_BLOCK]
        block = compress_block(chunk, store_size=False)
        if len(block) < len(chunk):
            parts += (size(len(block)), block)
        else:
            parts += (size(len(chunk) | 0x80000000), chunk)
    parts.append(b"\x00\x00\x00\x00")  # end mark
    return b"".join(parts)


def _xerial_compress(cj: Any, data: bytes | bytearray | memoryview) -> bytes:
    view = memoryview(data)
    parts = [_XERIAL_HEADER]
    pack = struct.Struct(">i").pack
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cj.snappy.compress_raw(bytes(view[start : start + _XERIAL_BLOCK])))
        parts.append(pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def decompress(
    codec: CompressionType | int,
    data: bytes | bytearray | memoryview,
    max_output_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> bytes:
    """Decompress a record batch's records blob.

    Raises :class:`ProtocolError` for input the codec cannot read or whose output
    would exceed ``max_output_size`` bytes, and :class:`UnsupportedCodecError` when
    the codec's library is missing.
    """
    codec = _coerce_type(codec)
    if codec is CompressionType.NONE:
        out = bytes(data)
    elif codec is CompressionType.GZIP:
        out = _gzip_decompress(data, max_output_size)
    else:
        cj = _require_cramjam(codec)
        buf = bytes(data)
        try:
            if codec is CompressionType.SNAPPY:
                out = _snappy_decompress(cj, buf, max_output_size)
            else:
                if codec is CompressionType.LZ4:
                    bound = _lz4_output_bound(buf)
                    func = cj.lz4.decompress
                else:
                    bound = _zstd_output_bound(buf)
                    func = cj.zstd.decompress
                if bound > max_output_size:
                    raise ProtocolError(
                        f"{codec.name.lower()} data may decompress to {bound} bytes, "
                        f"over the {max_output_size}-byte limit"
                    )
                out = bytes(func(buf))
        except (cj.DecompressionError, ValueError, struct.error) as exc:
            raise ProtocolError(f"invalid {codec.name.lower()} data: {exc}") from None
    if len(out) > max_output_size:
        raise ProtocolError(
            f"decompressed data is {len(out)} bytes, over the {max_output_size}-byte limit"
        )
    return out


def _gzip_decompress(data: bytes | bytearray | memoryview, limit: int) -> bytes:
    # zlib's max_length gives an exact bound; the loop also accepts concatenated gzip
    # members, which java.util.zip.GZIPInputStream reads as one stream.
    parts: list[bytes] = []
    total = 0
    pending = bytes(data)
    try:
        while True:
            d = zlib.decompressobj(47)  # 32 + 15: gzip or zlib header, auto-detected
            chunk = d.decompress(pending, limit - total + 1)
            total += len(chunk)
            parts.append(chunk)
            if total > limit:
                raise ProtocolError(f"gzip data decompresses to over {limit} bytes")
            if not d.eof:
                if d.unconsumed_tail:
                    raise ProtocolError(f"gzip data decompresses to over {limit} bytes")
                raise ProtocolError("truncated gzip data")
            pending = d.unused_data
            if not pending:
                break
    except zlib.error as exc:
        raise ProtocolError(f"invalid gzip data: {exc}") from None
    return b"".join(parts)


def _snappy_decompress(cj: Any, buf: bytes, limit: int) -> bytes:
    if not buf.startswith(_XERIAL_MAGIC):
        # A bare snappy block, as some non-Java clients write; its preamble declares
        # the output length, so check it before decompressing.
        if int(cj.snappy.decompress_raw_len(buf)) > limit:
            raise ProtocolError(f"snappy data decompresses to over {limit} bytes")
        return bytes(cj.snappy.decompress_raw(buf))
    if len(buf) < len(_XERIAL_HEADER):
        raise ProtocolError("truncated xerial snappy header")
    pos = len(_XERIAL_HEADER)
    end = len(buf)
    blocks: list[bytes] = []
    total = 0
    while pos < end:
        if end - pos < 4:
            raise ProtocolError("truncated xerial snappy block length")
        (size,) = struct.unpack_from(">i", buf, pos)
        pos += 4
        if size < 0 or size > end - pos:
            raise ProtocolError(f"xerial snappy block of {size} bytes overruns the data")
        block = buf[pos : pos + size]
        pos += size
        total += int(cj.snappy.decompress_raw_len(block))
        if total > limit:
            raise ProtocolError(f"snappy data decompresses to over {limit} bytes")
        blocks.append(bytes(cj.snappy.decompress_raw(block)))
    return b"".join(blocks)


def _lz4_output_bound(buf: bytes) -> int:
    """Upper bound of the decompressed size of LZ4 frames, from block headers alone."""
    pos = 0
    end = len(buf)
    bound = 0
    if end == 0:
        raise ProtocolError("empty lz4 data")
    while pos < end:
        if end - pos < 7:
            raise ProtocolError("truncated lz4 frame header")
        (magic,) = struct.unpack_from("<I", buf, pos)
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            if end - pos < 8:
                raise ProtocolError("truncated lz4 skippable frame")
            (size,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8 + size
            continue
        if magic != _LZ4_MAGIC:
            raise ProtocolError(f"bad lz4 magic {magic:#x}")
        flg = buf[pos + 4]
        bd = buf[pos + 5]
        if flg >> 6 != 1:
            raise ProtocolError("unsupported lz4 frame version")
        block_max = _LZ4_BLOCK_MAX.get((bd >> 4) & 7)
        if block_max is None:
            raise ProtocolError("bad lz4 block maximum size")
        block_checksum = 4 if flg & 0x10 else 0
        pos += 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
        while True:
            if end - pos < 4:
                raise ProtocolError("truncated lz4 block")
            (word,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if word == 0:
                break
            size = word & 0x7FFFFFFF
            if size > block_max:
                raise ProtocolError("lz4 block larger than its frame allows")
            bound += size if word & 0x80000000 else block_max
            pos += size + block_checksum
        pos += 4 if flg & 0x04 else 0
        if pos > end:
            raise ProtocolError("truncated lz4 frame")
    return bound


def _zstd_output_bound(buf: bytes) -> int:
    """Upper bound of the decompressed size of zstd frames, from block headers alone."""
    pos = 0
    end = len(buf)
    bound = 0
    if end == 0:
        raise ProtocolError("empty zstd data")
    while pos < end:
        if end - pos < 5:
            raise ProtocolError("truncated zstd frame header")
        (magic,) = struct.unpack_from("<I", buf, pos)
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            if end - pos < 8:
                raise ProtocolError("truncated zstd skippable frame")
            (size,) = struct.unpack_from("<I", buf, pos + 4)
            pos += 8 + size
            continue
        if magic != _ZSTD_MAGIC:
            raise ProtocolError(f"bad zstd magic {magic:#x}")
        fhd = buf[pos + 4]
        single_segment = fhd & 0x20
        fcs_size = (0 if not single_segment else 1, 2, 4, 8)[fhd >> 6]
        pos += 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
        while True:
            if end - pos < 3:
                raise ProtocolError("truncated zstd block")
            header = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            pos += 3
            block_type = (header >> 1) & 3
            size = header >> 3
            if block_type == 0:  # raw
                bound += size
                pos += size
            elif block_type == 1:  # RLE: one byte repeated `size` times
                bound += size
                pos += 1
            elif block_type == 2:
                bound += _ZSTD_BLOCK_MAX
                pos += size
            else:
                raise ProtocolError("reserved zstd block type")
            if header & 1:
                break
        pos += 4 if fhd & 0x04 else 0
        if pos > end:
            raise ProtocolError("truncated zstd frame")
    return bound
