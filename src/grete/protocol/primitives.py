"""Kafka's primitive wire types: a bounds-checked :class:`Reader` and encoders.

Everything a broker sends is untrusted, so every read checks the cursor against
the end of the buffer *before* touching it, and every length prefix is checked
against what is left *before* anything is allocated: a corrupt frame raises
:class:`~grete.errors.ProtocolError`, never ``IndexError``, ``struct.error`` or
``MemoryError``.

Encoders return ``bytes`` so callers can collect parts in a list and join once
(the cheapest way to build a frame in CPython: one copy of every part).

Names follow https://kafka.apache.org/protocol#protocol_types. Note the two
varint flavours: ``VARINT``/``VARLONG`` are zigzag encoded (record fields),
``UNSIGNED_VARINT`` is plain (compact lengths stored as length + 1, tagged
fields).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping

from grete.errors import ProtocolError

__all__ = [
    "EMPTY_TAGGED_FIELDS",
    "ZERO_UUID",
    "Reader",
    "encode_array_length",
    "encode_bool",
    "encode_bytes",
    "encode_compact_array_length",
    "encode_compact_bytes",
    "encode_compact_nullable_bytes",
    "encode_compact_nullable_string",
    "encode_compact_string",
    "encode_float64",
    "encode_int8",
    "encode_int16",
    "encode_int32",
    "encode_int64",
    "encode_nullable_bytes",
    "encode_nullable_string",
    "encode_string",
    "encode_tagged_fields",
    "encode_uint16",
    "encode_uint32",
    "encode_unsigned_varint",
    "encode_uuid",
    "encode_varint",
    "encode_varlong",
]

# Precompiled once: Struct.pack/unpack_from skip the format-string cache lookup.
INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT16 = struct.Struct(">H")
UINT32 = struct.Struct(">I")
FLOAT64 = struct.Struct(">d")

ZERO_UUID = uuid.UUID(int=0)
#: A flexible-version tagged-field section with no fields: a single zero count.
EMPTY_TAGGED_FIELDS = b"\x00"

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

Buffer = bytes | bytearray | memoryview


class Reader:
    """A cursor over a bytes-like object; every ``read_*`` advances it.

    ``buf``, ``pos`` and ``end`` are public so the schema engine can decode
    runs of fixed-width fields with a single ``Struct.unpack_from`` after one
    bounds check (see :meth:`need`).
    """

    __slots__ = ("buf", "end", "pos")

    buf: bytes | memoryview
    pos: int
    end: int

    def __init__(self, data: Buffer, pos: int = 0, end: int | None = None) -> None:
        if isinstance(data, bytes):
            # unpack_from and slicing are fastest on bytes, and slices are bytes.
            self.buf = data
        else:
            view = memoryview(data)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            self.buf = view
        size = len(self.buf)
        if end is None:
            end = size
        if not 0 <= pos <= end <= size:
            raise ProtocolError(f"invalid reader window [{pos}, {end}) over {size} bytes")
        self.pos = pos
        self.end = end

    # -- cursor -----------------------------------------------------------------

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int) -> int:
        """Reserve ``n`` bytes: return the current position and advance past them."""
        pos = self.pos
        if n > self.end - pos:
            raise ProtocolError(
                f"truncated data: need {n} bytes at offset {pos}, only {self.end - pos} left"
            )
        self.pos = pos + n
        return pos

    def skip(self, n: int) -> None:
        self.need(n)

    def read_raw(self, n: int) -> bytes:
        pos = self.need(n)
        return bytes(self.buf[pos : pos + n])

    # -- fixed width ------------------------------------------------------------

    def read_int8(self) -> int:
        return int(INT8.unpack_from(self.buf, self.need(1))[0])

    def read_bool(self) -> bool:
        # Kafka writes 0 or 1; like the Java client, treat any non-zero as true.
        return self.buf[self.need(1)] != 0

    def read_int16(self) -> int:
        return int(INT16.unpack_from(self.buf, self.need(2))[0])

    def read_int32(self) -> int:
        return int(INT32.unpack_from(self.buf, self.need(4))[0])

    def read_int64(self) -> int:
        return int(INT64.unpack_from(self.buf, self.need(8))[0])

    def read_uint16(self) -> int:
        return int(UINT16.unpack_from(self.buf, self.need(2))[0])

    def read_uint32(self) -> int:
        return int(UINT32.unpack_from(self.buf, self.need(4))[0])

    def read_float64(self) -> float:
        return float(FLOAT64.unpack_from(self.buf, self.need(8))[0])

    def read_uuid(self) -> uuid.UUID:
        pos = self.need(16)
        raw = bytes(self.buf[pos : pos + 16])
        # Most UUIDs on the wire are the "no topic id" zero value; share one object.
        if raw == b"\x00" * 16:
            return ZERO_UUID
        return uuid.UUID(bytes=raw)

    # -- varints ----------------------------------------------------------------

    def _read_uvarint(self, max_bytes: int, what: str) -> int:
        buf = self.buf
        pos = self.pos
        end = self.end
        if pos < end:
            first = buf[pos]
            if first < 0x80:  # the overwhelmingly common one-byte case
                self.pos = pos + 1
                return first
        value = 0
        shift = 0
        for _ in range(max_bytes):
            if pos >= end:
                raise ProtocolError(f"truncated {what} at offset {self.pos}")
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7
        raise ProtocolError(f"{what} at offset {self.pos} is longer than {max_bytes} bytes")

    def read_unsigned_varint(self) -> int:
        """An unsigned 32-bit varint (compact lengths, tagged-field tags and sizes)."""
        pos = self.pos
        if pos < self.end:
            first = self.buf[pos]
            if first < 0x80:  # inlined one-byte fast path: compact lengths, tag counts
                self.pos = pos + 1
                return first
        value = self._read_uvarint(5, "unsigned varint")
        if value > 0xFFFFFFFF:
            raise ProtocolError(f"unsigned varint {value} does not fit in 32 bits")
        return value

    def read_varint(self) -> int:
        """A zigzag-encoded signed 32-bit varint."""
        value = self._read_uvarint(5, "varint")
        if value > 0xFFFFFFFF:
            raise ProtocolError(f"varint {value} does not fit in 32 bits")
        return (value >> 1) ^ -(value & 1)

    def read_varlong(self) -> int:
        """A zigzag-encoded signed 64-bit varint."""
        value = self._read_uvarint(10, "varlong")
        if value > 0xFFFFFFFFFFFFFFFF:
            raise ProtocolError(f"varlong {value} does not fit in 64 bits")
        return (value >> 1) ^ -(value & 1)

    # -- lengths ----------------------------------------------------------------

    def _check_length(self, length: int, nullable: bool, what: str, item_size: int = 1) -> int:
        if length < 0:
            if length == -1 and nullable:
                return -1
            raise ProtocolError(
                f"{what} has invalid length {length} at offset {self.pos}"
                + ("" if length != -1 else " (null is not allowed here)")
            )
        if length * item_size > self.end - self.pos:
            raise ProtocolError(
                f"{what} length {length} exceeds the {self.end - self.pos} bytes left "
                f"at offset {self.pos}"
            )
        return length

    def read_array_length(self, nullable: bool = True, item_size: int = 1) -> int:
        """An INT32 array count; -1 means null.

        ``item_size`` is the smallest encoded size of one element: the count is
        rejected before any list is built if the elements cannot possibly fit.
        """
        return self._check_length(self.read_int32(), nullable, "array", max(item_size, 1))

    def read_compact_array_length(self, nullable: bool = True, item_size: int = 1) -> int:
        """An unsigned varint count + 1; 0 (returned as -1) means null."""
        n = self.read_unsigned_varint() - 1
        return self._check_length(n, nullable, "compact array", max(item_size, 1))

    # -- strings ----------------------------------------------------------------

    def _decode_utf8(self, length: int) -> str:
        pos = self.pos
        self.pos = pos + length
        try:
            return str(self.buf[pos : pos + length], "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"invalid UTF-8 in string at offset {pos}: {exc}") from None

    def read_string(self) -> str:
        return self._decode_utf8(self._check_length(self.read_int16(), False, "string"))

    def read_nullable_string(self) -> str | None:
        n = self._check_length(self.read_int16(), True, "nullable string")
        return None if n < 0 else self._decode_utf8(n)

    def read_compact_string(self) -> str:
        n = self.read_unsigned_varint() - 1
        return self._decode_utf8(self._check_length(n, False, "compact string"))

    def read_compact_nullable_string(self) -> str | None:
        n = self._check_length(self.read_unsigned_varint() - 1, True, "compact nullable string")
        return None if n < 0 else self._decode_utf8(n)

    # -- bytes ------------------------------------------------------------------

    def _take(self, length: int) -> bytes:
        pos = self.pos
        self.pos = pos + length
        return bytes(self.buf[pos : pos + length])

    def read_bytes(self) -> bytes:
        return self._take(self._check_length(self.read_int32(), False, "bytes"))

    def read_nullable_bytes(self) -> bytes | None:
        n = self._check_length(self.read_int32(), True, "nullable bytes")
        return None if n < 0 else self._take(n)

    def read_compact_bytes(self) -> bytes:
        n = self.read_unsigned_varint() - 1
        return self._take(self._check_length(n, False, "compact bytes"))

    def read_compact_nullable_bytes(self) -> bytes | None:
        n = self._check_length(self.read_unsigned_varint() - 1, True, "compact nullable bytes")
        return None if n < 0 else self._take(n)

    # -- tagged fields ----------------------------------------------------------

    def read_tagged_field_header(self, previous_tag: int) -> tuple[int, int]:
        """One tagged field's ``(tag, size)``; the payload follows, ``size`` bytes long.

        Tags must be strictly increasing within a section (KIP-482).
        """
        tag = self.read_unsigned_varint()
        if tag <= previous_tag:
            raise ProtocolError(
                f"tagged field {tag} at offset {self.pos} is not after tag {previous_tag}"
            )
        size = self._check_length(self.read_unsigned_varint(), False, "tagged field")
        return tag, size

    def read_tagged_fields(self) -> dict[int, bytes]:
        """A whole tagged-field section as raw payloads keyed by tag."""
        count = self._check_length(self.read_unsigned_varint(), False, "tagged fields", 2)
        fields: dict[int, bytes] = {}
        tag = -1
        for _ in range(count):
            tag, size = self.read_tagged_field_header(tag)
            fields[tag] = self._take(size)
        return fields

    def skip_tagged_fields(self) -> None:
        """Consume a tagged-field section, ignoring its content."""
        count = self._check_length(self.read_unsigned_varint(), False, "tagged fields", 2)
        tag = -1
        for _ in range(count):
            tag, size = self.read_tagged_field_header(tag)
            self.pos += size


# -- encoders ---------------------------------------------------------------------


def encode_int8(value: int) -> bytes:
    return INT8.pack(value)


def encode_bool(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def encode_int16(value: int) -> bytes:
    return INT16.pack(value)


def encode_int32(value: int) -> bytes:
    return INT32.pack(value)


def encode_int64(value: int) -> bytes:
    return INT64.pack(value)


def encode_uint16(value: int) -> bytes:
    return UINT16.pack(value)


def encode_uint32(value: int) -> bytes:
    return UINT32.pack(value)


def encode_float64(value: float) -> bytes:
    return FLOAT64.pack(value)


def encode_uuid(value: uuid.UUID) -> bytes:
    return value.bytes


def _encode_uvarint_uncached(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Compact lengths and tag counts are almost always small: hand out shared bytes for
# the one-byte varints, and build two-byte ones directly (a table of those would
# hold ~170 KiB of small bytes objects for a few hundred nanoseconds per request).
_UVARINT_CACHE_SIZE = 0x80
_UVARINT_CACHE = tuple(_encode_uvarint_uncached(i) for i in range(_UVARINT_CACHE_SIZE))


def _encode_uvarint(value: int) -> bytes:
    """Unsigned varint of a non-negative ``value`` (cached, or built)."""
    if value < _UVARINT_CACHE_SIZE:
        return _UVARINT_CACHE[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    return _encode_uvarint_uncached(value)


def encode_unsigned_varint(value: int) -> bytes:
    if 0 <= value < _UVARINT_CACHE_SIZE:
        return _UVARINT_CACHE[value]
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"unsigned varint out of range: {value}")
    return _encode_uvarint(value)


def encode_varint(value: int) -> bytes:
    """Zigzag-encode a signed 32-bit integer."""
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"varint out of range: {value}")
    return _encode_uvarint((value << 1) ^ (value >> 31))


def encode_varlong(value: int) -> bytes:
    """Zigzag-encode a signed 64-bit integer."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"varlong out of range: {value}")
    return _encode_uvarint((value << 1) ^ (value >> 63))


def encode_array_length(length: int | None) -> bytes:
    """INT32 count, -1 for a null array."""
    return INT32.pack(-1 if length is None else length)


def encode_compact_array_length(length: int | None) -> bytes:
    """Unsigned varint count + 1, 0 for a null array."""
    return encode_unsigned_varint(0 if length is None else length + 1)


def encode_string(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0x7FFF:
        raise ValueError(f"string of {len(data)} UTF-8 bytes is too long for INT16 length")
    return INT16.pack(len(data)) + data


def encode_nullable_string(value: str | None) -> bytes:
    return b"\xff\xff" if value is None else encode_string(value)


def encode_compact_string(value: str) -> bytes:
    data = value.encode()
    return encode_unsigned_varint(len(data) + 1) + data


def encode_compact_nullable_string(value: str | None) -> bytes:
    return b"\x00" if value is None else encode_compact_string(value)


def encode_bytes(value: Buffer) -> bytes:
    return INT32.pack(len(value)) + value


def encode_nullable_bytes(value: Buffer | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else encode_bytes(value)


def encode_compact_bytes(value: Buffer) -> bytes:
    return encode_unsigned_varint(len(value) + 1) + value


def encode_compact_nullable_bytes(value: Buffer | None) -> bytes:
    return b"\x00" if value is None else encode_compact_bytes(value)


def encode_tagged_fields(fields: Mapping[int, Buffer]) -> bytes:
    """A tagged-field section from raw payloads; tags are written in ascending order."""
    if not fields:
        return EMPTY_TAGGED_FIELDS
    parts = [encode_unsigned_varint(len(fields))]
    for tag in sorted(fields):
        payload = fields[tag]
        parts.append(encode_unsigned_varint(tag))
        parts.append(encode_unsigned_varint(len(payload)))
        parts.append(bytes(payload))
    return b"".join(parts)
