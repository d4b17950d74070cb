"""Record batch v2 (magic 2): the format's constants, and the varint tables the
encoders share.

Layout (all integers big-endian)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (2)
    crc uint32 (CRC-32C of everything after it) | attributes int16
    lastOffsetDelta int32 | baseTimestamp int64 | maxTimestamp int64
    producerId int64 | producerEpoch int16 | baseSequence int32 | recordCount int32
    records... (one compressed blob when the codec is not NONE)

    record: length varint | attributes int8 | timestampDelta varlong
            offsetDelta varint | keyLength varint (-1 = null) | key
            valueLength varint (-1 = null) | value | headerCount varint
            headers: keyLength varint | key (UTF-8) | valueLength varint | value

Varints are zigzag-encoded. Every small varint the encoders write comes from the
tables here (indexed by length, offset delta or timestamp delta), grown on demand
by :func:`_grow`. ``_L`` and ``_O``, the tables' bounds, are rebound as they
grow: other modules read them as ``record_format._L`` and ``record_format._O``,
never through a ``from`` import, which would copy the value at import time.
"""

from __future__ import annotations

import struct
import threading

__all__ = ["BATCH_OVERHEAD", "Header"]

Header = tuple[str, "bytes | None"]

#: Bytes of a batch's header (everything before the first record).
BATCH_OVERHEAD = 61

_MAGIC = 2
_ATTR_COMPRESSION_MASK = 0x07
_ATTR_LOG_APPEND_TIME = 0x08
_ATTR_TRANSACTIONAL = 0x10
_ATTR_CONTROL = 0x20
_ATTR_DELETE_HORIZON = 0x40

# baseOffset, batchLength, partitionLeaderEpoch, magic, crc
_HEAD = struct.Struct(">qiibI")
# attributes, lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch,
# baseSequence, recordCount: the part covered by the CRC.
_TAIL = struct.Struct(">hiqqqhii")
_CRC_START = _HEAD.size  # 21
# The smallest record: 1-byte length + attributes, timestamp delta, offset delta,
# key length, value length and header count of one byte each.
_MIN_RECORD = 7
# Records in a batch cannot exceed what the 32-bit length could describe anyway,
# and no decoded length may exceed this many bytes.
_MIN_BATCH_LENGTH = BATCH_OVERHEAD - 12


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zz(n: int) -> bytes:
    """Zigzag varlong of a signed 64-bit ``n``."""
    return _uvarint((n << 1) ^ (n >> 63))


# --- tables -------------------------------------------------------------------------

# Lengths, offset deltas, timestamp deltas and record lengths below _M use tables.
# Full tables (16 Ki entries: values up to ~16 KiB, batches up to 16 Ki records)
# would hold some 8 MiB of small bytes objects, so they start small and _grow()
# extends them in place, in powers of two, to the largest value met so far: the
# encoder only ever pays memory for the record sizes and batch sizes it sees.
_M = 1 << 14
_MIN_TABLE = 256
# Length tables (_LEN, _SIZE, _LENZ/_TSA, _TSA_SIZE) cover indexes below _L; offset
# tables (_PFX_*, _FIXED) cover offsets below _O. _O <= _L, so _LEN doubles as the
# plain offset-delta table. Both only grow, and only once every table covers them.
_L = 0
_O = 0
_GROW_LOCK = threading.Lock()

# _LEN[n] is the zigzag varint of n; _LEN[-1] (the extra last slot) is that of -1,
# the null length, so a length list using -1 for None indexes the tables directly.
_LEN: list[bytes] = [b"\x01"]
# _SIZE[n]: bytes taken by a length-prefixed field of n bytes (prefix + data).
_SIZE: list[int] = [1]
# A record's length preceded by the previous record's empty header count (0), so
# records without headers need no separate piece for it. The same bytes serve as
# the attributes (always 0 on records) followed by the timestamp delta: _TSA.
_LENZ: list[bytes] = []
_TSA = _LENZ
_TSA_SIZE: list[int] = []
# Per offset delta: [attributes, timestamp delta 0,] offset delta [, null key length].
_PFX_TS0_NOKEY: list[bytes] = []
_PFX_TS0: list[bytes] = []
_PFX_NOKEY: list[bytes] = []
# _FIXED[c][i]: c fixed one-byte fields plus the size of offset delta i.
_FIXED: list[list[int]] = [[] for _ in range(5)]


def _grow(top: int, n: int = 0) -> None:
    """Extend the length tables to index ``top`` and the offset tables to ``n``
    offsets (callers keep ``top < _M`` and ``n <= _M``).

    Lists are extended in place (the encoder binds them as globals) under a lock,
    and _L/_O move only after every table of theirs has its new entries, so
    threads encoding meanwhile read complete entries.
    """
    global _L, _O
    with _GROW_LOCK:
        offsets = _O
        if n > offsets:
            offsets = min(_M, max(_MIN_TABLE, 1 << (n - 1).bit_length()))
        length = max(_L, offsets)
        if top >= length:
            length = min(_M, 1 << top.bit_length())
        if length > _L:
            # The varint formula inlined for up to three bytes (2 * _M < 2**21): the
            # generic encoder is several times slower.
            lens = [
                bytes((z,))
                if z < 0x80
                else bytes((z & 0x7F | 0x80, z >> 7))
                if z < 0x4000
                else bytes((z & 0x7F | 0x80, (z >> 7) & 0x7F | 0x80, z >> 14))
                for z in range(2 * _L, 2 * length, 2)
            ]
            # Before the last slot, which stays the null length's.
            _LEN[_L:_L] = lens
            _SIZE[_L:_L] = [i + len(b) for i, b in enumerate(lens, _L)]
            _LENZ.extend([b"\x00" + b for b in lens])
            _TSA_SIZE.extend([1 + len(b) for b in lens])
            _L = length
        if offsets > _O:
            pfx = _LEN[_O:offsets]
            _PFX_TS0_NOKEY.extend([b"\x00\x00" + b + b"\x01" for b in pfx])
            _PFX_TS0.extend([b"\x00\x00" + b for b in pfx])
            _PFX_NOKEY.extend([b + b"\x01" for b in pfx])
            for c, fixed in enumerate(_FIXED):
                fixed.extend([c + len(b) for b in pfx])
            _O = offsets


def _fits(top: int) -> bool:
    """Whether ``top`` is in the length tables' range, growing them to it if need be."""
    if top >= _M:
        return False
    if top >= _L:
        _grow(top)
    return True


_grow(_MIN_TABLE - 1, _MIN_TABLE)


# Timestamp deltas below this have one-byte zigzag varints, the size of the zero
# delta's, so records with such deltas have the lengths of the uniform case.
_TS_NARROW = 64

# 1 for the timestamp deltas whose zigzag varint takes two bytes (64..8191 ms),
# 0 for those of one byte; its length bounds the wide uniform path.
_TS_WIDE: list[int] = [0] * _TS_NARROW + [1] * (8192 - _TS_NARROW)
