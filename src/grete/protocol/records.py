"""Record batch v2 (magic 2): a column-oriented encoder and a defensive decoder.

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

Varints are zigzag-encoded. This module is the producer's hot path, so the encoder
avoids per-record Python work: every small varint comes from precomputed tables
(indexed by length, offset delta or timestamp delta), record lengths are summed
column-wise with ``map(operator.add, ...)`` rather than by encoding twice, and the
columns are interleaved into one list by slice assignment before a single
``b"".join``. Records outside the tables' range (huge values, negative timestamp
deltas, giant batches) take a plain per-record loop that is slower but exact.
"""

from __future__ import annotations

import struct
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import add, itemgetter, sub
from typing import NamedTuple, cast

from grete.errors import ConfigurationError, CorruptRecordError, ProtocolError
from grete.protocol.compression import (
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    CompressionType,
    compress,
    decompress,
    validate_level,
)
from grete.protocol.crc32c import crc32c

__all__ = [
    "BATCH_OVERHEAD",
    "Header",
    "Record",
    "RecordBatch",
    "decode_batches",
    "encode_batch",
    "encode_record_run",
    "frame_record_runs",
    "record_size",
]

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


def _header_blob(hs: Sequence[tuple[str, bytes | None]] | None) -> bytes:
    """Header count and headers of one record."""
    if not hs:
        return b"\x00"
    n = len(hs)
    parts = [_LEN[n] if n < _L else _zz(n)]
    append = parts.append
    for key, value in hs:
        kb = key.encode()
        kl = len(kb)
        append(_LEN[kl] if kl < _L else _zz(kl))
        append(kb)
        if value is None:
            append(b"\x01")
        else:
            vl = len(value)
            append(_LEN[vl] if vl < _L else _zz(vl))
            append(value)
    return b"".join(parts)


_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def _header_columns(
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None], n: int
) -> tuple[list[Sequence[bytes]], Sequence[int]] | None:
    """Headers as columns when every record has the same number of them (the usual
    case: each record carries the same header keys), else None.

    Returns the columns (count, then per header position: key with its length,
    value length, value) and each record's total header bytes.
    """
    try:
        shapes = set(map(len, headers))  # type: ignore[arg-type]
    except TypeError:  # some record has None for headers
        return None
    if len(shapes) != 1:
        return None
    h = shapes.pop()
    if h == 0 or h >= 64:
        return None
    columns: list[Sequence[bytes]] = [[_LEN[h]] * n]
    fixed = 1  # bytes every record has alike: the count, fixed header names
    variable: list[Iterable[int]] = []  # per-record byte counts that differ
    # Transposed with C-level maps (itemgetter), per header position, then into
    # names and values: far cheaper than zip(*...) over a thousand iterators.
    for j in range(h):
        position = list(map(itemgetter(j), headers))  # type: ignore[arg-type]
        names = list(map(_FIRST, position))
        values = list(map(_SECOND, position))
        if names.count(names[0]) == n:
            kb = names[0].encode()
            if len(kb) >= _L and not _fits(len(kb)):
                return None
            key_piece = _LEN[len(kb)] + kb
            columns.append([key_piece] * n)
            fixed += len(key_piece)
        else:
            encoded = list(map(str.encode, names))
            klens = list(map(len, encoded))
            ktop = max(klens)
            if ktop >= _L and not _fits(ktop):
                return None
            columns.append(list(map(add, map(_LEN.__getitem__, klens), encoded)))
            variable.append(map(_SIZE.__getitem__, klens))
        vlens, vpieces = _lengths(values)
        vtop = max(vlens)
        if vtop >= _L and not _fits(vtop):
            return None
        columns.append(list(map(_LEN.__getitem__, vlens)))
        columns.append(vpieces)
        variable.append(map(_SIZE.__getitem__, vlens))
    sizes: Iterable[int] = repeat(fixed, n)
    for part in variable:
        sizes = map(add, sizes, part)
    return _merge_constant_runs(columns, n), list(sizes)


def _merge_constant_runs(columns: list[Sequence[bytes]], n: int) -> list[Sequence[bytes]]:
    """Join neighbouring columns that hold the same piece in every record
    (header count, a fixed header name, a fixed value) into one column: fewer
    pieces for the final join, which is where header-heavy batches spend
    their time."""
    merged: list[Sequence[bytes]] = []
    run: list[bytes] = []
    for column in columns:
        first = column[0]
        if column.count(first) == n:
            run.append(first)
            continue
        if run:
            merged.append([b"".join(run)] * n)
            run = []
        merged.append(column)
    if run:
        merged.append([b"".join(run)] * n)
    return merged


def record_size(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
    *,
    offset_delta: int = 0,
    timestamp_delta: int = 0,
) -> int:
    """Encoded size of one record in a batch, its length prefix included.

    The offset and timestamp deltas change the size by a few bytes: pass the
    largest expected (e.g. the batch's record limit) for an upper bound.
    """
    body = 1 + len(_zz(timestamp_delta)) + len(_zz(offset_delta))
    body += 1 if key is None else len(key) + len(_zz(len(key)))
    body += 1 if value is None else len(value) + len(_zz(len(value)))
    body += len(_header_blob(headers))
    return body + len(_zz(body))


# --- encoder ------------------------------------------------------------------------


def encode_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] | None = None,
    timestamps: Sequence[int] | None = None,
    *,
    base_timestamp: int,
    base_offset: int = 0,
    compression: CompressionType = CompressionType.NONE,
    compression_level: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encode one record batch v2 holding ``values`` (with CreateTime timestamps).

    ``keys``, ``headers`` and ``timestamps`` are optional columns of the same length
    as ``values``; ``timestamps`` are absolute milliseconds (None: every record at
    ``base_timestamp``). Raises :class:`ConfigurationError` for inconsistent
    arguments and :class:`UnsupportedCodecError` for a codec whose library is missing.
    """
    n = len(values)
    if n == 0:
        raise ConfigurationError("a record batch needs at least one record")
    for name, column in (("keys", keys), ("headers", headers), ("timestamps", timestamps)):
        if column is not None and len(column) != n:
            raise ConfigurationError(f"{name} has {len(column)} entries for {n} values")
    compression = CompressionType(compression)
    validate_level(compression, compression_level)

    deltas: Sequence[int] | None = None
    max_timestamp = base_timestamp
    span = (0, 0)
    if timestamps is not None:
        small = _byte_deltas(timestamps, base_timestamp, n)
        if small is not None:
            if small.count(0) != n:
                deltas = small
                span = (0, _greatest(small))
                max_timestamp = base_timestamp + span[1]
        else:
            low, high = min(timestamps), max(timestamps)
            if low != base_timestamp or high != base_timestamp:
                deltas = list(map(sub, timestamps, repeat(base_timestamp, n)))
                max_timestamp = high
                span = (low - base_timestamp, high - base_timestamp)
    # The first key looked at first: a count compares every key with None
    # (rich comparison, not identity), a third of the cost of a keyed batch's checks.
    if keys is not None and keys[0] is None and keys.count(None) == n:
        keys = None
    if headers is not None and not any(headers):
        headers = None

    try:
        parts = _encode_columns(values, keys, headers, deltas, n, span)
        if parts is None:
            parts = _encode_records_slow(values, keys, headers, deltas, n)
        blob = b"".join(parts)
    except TypeError as exc:
        raise TypeError(
            f"record keys, values and header values must be bytes or None ({exc})"
        ) from None

    return _frame(
        (blob,),
        n,
        base_timestamp,
        max_timestamp,
        compression,
        compression_level,
        producer_id,
        producer_epoch,
        base_sequence,
        is_transactional,
        partition_leader_epoch,
        base_offset,
    )


def _frame(
    pieces: Sequence[bytes],
    n: int,
    base_timestamp: int,
    max_timestamp: int,
    compression: CompressionType,
    compression_level: int | None,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    is_transactional: bool = False,
    partition_leader_epoch: int = -1,
    base_offset: int = 0,
) -> bytes:
    """The batch around its ``n`` records' section, ``pieces`` joined
    (compressed here). Uncompressed, the pieces are joined once, into the
    batch, their checksum taken piece by piece: a batch framed from runs
    (a few pieces, each many records) is copied once, not twice."""
    if compression is not CompressionType.NONE:
        blob = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces = (compress(compression, blob, compression_level),)
    attributes = compression | (_ATTR_TRANSACTIONAL if is_transactional else 0)
    try:
        tail = _TAIL.pack(
            attributes,
            n - 1,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            n,
        )
        crc = crc32c(tail)
        size = 0
        for piece in pieces:
            crc = crc32c(piece, crc)
            size += len(piece)
        head = _HEAD.pack(
            base_offset, size + BATCH_OVERHEAD - 12, partition_leader_epoch, _MAGIC, crc
        )
    except struct.error as exc:
        raise ConfigurationError(f"batch header field out of range: {exc}") from None
    return b"".join((head, tail, *pieces))


# --- runs: a batch's records encoded a part at a time ---------------------------------


def encode_record_run(
    values: Sequence[bytes],
    keys: Sequence[bytes | None] | None,
    timestamps: Sequence[int],
    *,
    base_timestamp: int,
    first: int,
    lengths: tuple[int, int] | None = None,
    time_runs: Sequence[tuple[int, int]] | None = None,
) -> tuple[bytes, int] | None:
    """Records ``first .. first + n - 1`` of a batch (``n = len(values)``,
    ``base_timestamp`` the batch's), encoded as one *run*, with their greatest
    timestamp delta; None unless they fit the uniform paths: bytes values of
    one length, keys all None or bytes of one length, no headers, timestamps
    0..255 ms after ``base_timestamp``. The caller then encodes the batch
    whole (:func:`encode_batch`), which takes any record.

    A front end encodes runs while the records are fresh in its thread's
    cache, instead of the sender thread encoding the batch from another core
    (measured ~1.6x slower there). A record's bytes depend only on its own
    fields, its offset delta and its timestamp delta, so a run stays valid
    as later records are added, whatever they hold.

    A run holds its records shifted by one byte: it starts with the previous
    record's header count (nothing before a batch's first record) and leaves
    out its last record's, as the column layout does. Runs joined in order
    and followed by one zero byte are the records section: see
    :func:`frame_record_runs`.

    ``lengths``: ``(key length, value length)`` when the caller has checked
    that every key and every value is ``bytes`` of that length (a placed
    stage: see ``Accumulator.place_stage``); the checks here are then skipped.
    ``time_runs``: ``timestamps`` as ``(value, count)`` runs, values rising
    (``grouping.time_runs``); the deltas are then a few repeats, not a
    subtraction per record.
    """
    n = len(values)
    end = first + n
    if n == 0 or end > _M:
        return None
    zigzags: list[bytes] | None = None
    narrow: int | None = None
    small: bytes | None = None
    if time_runs is None:
        small = _byte_deltas(timestamps, base_timestamp, n)
        if small is None:
            return None
        dmax = _greatest(small)
    else:
        deltas = [(value - base_timestamp, count) for value, count in time_runs]
        dmax = deltas[-1][0]
        if deltas[0][0] < 0 or dmax > 255:
            return None
        # No delta per record: the zigzags below are repeats, and the wide
        # heads (rising deltas) need only how many records come before the
        # first two-byte delta.
        if dmax >= _TS_NARROW:
            narrow = sum([count for delta, count in deltas if delta < _TS_NARROW])
    if lengths is not None:
        klen, vlen = lengths
    else:
        try:
            vlen = len(values[0])
            if list(map(len, values)).count(vlen) != n:
                return None
            klen = -2
            if keys is not None and not (keys[0] is None and keys.count(None) == n):
                klen = len(keys[0])  # type: ignore[arg-type]
                if list(map(len, keys)).count(klen) != n:  # type: ignore[arg-type]
                    return None
        except TypeError:  # a None among values or keys: not uniform
            return None
    top = max(vlen, klen, dmax, end)
    if top >= _L or end > _O:
        if top >= _M:
            return None
        _grow(top, end)
    if time_runs is not None:
        zigzags = []
        for delta, count in deltas:
            zigzags += repeat(_LEN[delta], count)
    parts = _encode_uniform_ts(
        values,
        None if klen == -2 else keys,  # type: ignore[arg-type]
        klen,
        vlen,
        small,
        n,
        dmax >= _TS_NARROW,
        first,
        zigzags,
        narrow,
    )
    if parts is None:
        return None
    parts.pop()  # the last record's header count: the next run's first byte
    return b"".join(parts), dmax


def frame_record_runs(
    runs: Sequence[bytes],
    n: int,
    *,
    base_timestamp: int,
    greatest_delta: int,
    compression: CompressionType = CompressionType.NONE,
    compression_level: int | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    """A record batch from its ``n`` records encoded as runs
    (:func:`encode_record_run`, in order from the first record, together
    covering all ``n``; ``greatest_delta`` the greatest of their deltas):
    the same bytes :func:`encode_batch` makes of those records."""
    validate_level(compression, compression_level)
    return _frame(
        (*runs, b"\x00"),
        n,
        base_timestamp,
        base_timestamp + greatest_delta,
        compression,
        compression_level,
        producer_id,
        producer_epoch,
        base_sequence,
    )


def _byte_deltas(timestamps: Sequence[int], base: int, n: int) -> bytes | None:
    """The timestamps' deltas from ``base``, one byte each, if all are 0..255 ms
    (a batch of records appended as they came); else None.

    ``bytes()`` checks the range in C, and what the encoder then asks of the
    deltas (all zero? the greatest?) are C-level scans of the bytes: ``min()``
    and ``max()`` over the timestamps compared ints one by one, and the delta
    list held an int a record (together ~80 ns a record against ~30)."""
    try:
        return bytes(map(sub, timestamps, repeat(base, n)))
    except (ValueError, TypeError):  # out of 0..255, or not ints: the general path
        return None


# _UP_TO[i]: the bytes 0..i, to delete with bytes.translate.
_UP_TO = [bytes(range(i + 1)) for i in range(256)]


def _greatest(deltas: bytes) -> int:
    """``max(deltas)`` by C-level scans: deltas in order end with the greatest,
    so deleting the bytes up to the last one leaves nothing (else the few
    greater ones)."""
    last = deltas[-1]
    above = deltas.translate(None, _UP_TO[last])
    return max(above) if above else last


def _lengths(column: Sequence[bytes | None]) -> tuple[list[int], Sequence[bytes]]:
    """Lengths (-1 for None) and the pieces to write (b"" for None) of a column."""
    try:
        present = cast("Sequence[bytes]", column)
        return list(map(len, present)), present
    except TypeError:
        lens = [-1 if x is None else len(x) for x in column]
        return lens, [b"" if x is None else x for x in column]


def _encode_columns(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] | None,
    deltas: Sequence[int] | None,
    n: int,
    span: tuple[int, int] | None = None,
) -> list[bytes] | None:
    """The records as pieces to join, built column by column; None if out of
    table range. ``span``: a lower bound of ``deltas`` (their least, or 0 when
    they are known not negative) and their greatest, if known."""
    if n > _M:
        return None
    top = n
    dmax = 0
    if deltas is not None:
        dmin, dmax = (min(deltas), max(deltas)) if span is None else span
        if dmin < 0:
            return None
        top = max(top, dmax)
    # Same-length columns (the usual case) need no max() pass: their first
    # length is their greatest.
    vlens, vpieces = _lengths(values)
    uniform_values = vlens.count(vlens[0]) == n
    top = max(top, vlens[0] if uniform_values else max(vlens))
    klens: list[int] = []
    kpieces: Sequence[bytes] = ()
    uniform_keys = True
    if keys is not None:
        klens, kpieces = _lengths(keys)
        uniform_keys = klens.count(klens[0]) == n
        top = max(top, klens[0] if uniform_keys else max(klens))
    if top >= _L or n > _O:
        if top >= _M:
            return None
        _grow(top, n)

    if headers is None and uniform_values:
        klen = -2 if keys is None else klens[0]
        if deltas is None and uniform_keys:
            return _encode_uniform(vpieces, kpieces if keys else None, klen, vlens[0], n)
        if deltas is not None and uniform_keys and dmax < len(_TS_WIDE):
            wide = dmax >= _TS_NARROW
            kp = kpieces if keys else None
            return _encode_uniform_ts(vpieces, kp, klen, vlens[0], deltas, n, wide)

    # Fixed one-byte fields not covered by a column: attributes and a zero timestamp
    # delta (unless the timestamp column holds them), a null key length (unless there
    # is a key column), and a zero header count (unless there is a header column).
    fixed = (
        (2 if deltas is None else 0) + (1 if keys is None else 0) + (1 if headers is None else 0)
    )
    total = map(add, _FIXED[fixed][:n], map(_SIZE.__getitem__, vlens))
    if keys is not None:
        total = map(add, total, map(_SIZE.__getitem__, klens))
    if deltas is not None:
        total = map(add, total, map(_TSA_SIZE.__getitem__, deltas))
    hcolumns: list[Sequence[bytes]] = []
    if headers is not None:
        shaped = _header_columns(headers, n)
        if shaped is None:
            hblobs = list(map(_header_blob, headers))
            total = map(add, total, map(len, hblobs))
            hcolumns = [hblobs]
        else:
            hcolumns, hsizes = shaped
            total = map(add, total, hsizes)
    rec_lens = list(total)
    rtop = max(rec_lens)
    if rtop >= _L and not _fits(rtop):
        return None

    columns: list[Sequence[bytes]] = []
    if headers is None:
        columns.append(list(map(_LENZ.__getitem__, rec_lens)))
    else:
        columns.append(list(map(_LEN.__getitem__, rec_lens)))
    if deltas is None:
        columns.append((_PFX_TS0_NOKEY if keys is None else _PFX_TS0)[:n])
    else:
        columns.append(list(map(_TSA.__getitem__, deltas)))
        columns.append((_PFX_NOKEY if keys is None else _LEN)[:n])
    if keys is not None:
        columns.append(list(map(_LEN.__getitem__, klens)))
        columns.append(kpieces)
    columns.append(list(map(_LEN.__getitem__, vlens)))
    columns.append(vpieces)
    columns.extend(hcolumns)

    k = len(columns)
    stop = k * n
    parts: list[bytes] = [b""] * (stop + 1)
    for j, column in enumerate(columns):
        parts[j:stop:k] = column
    if headers is None:
        # The first record has no previous header count; the last one needs its own.
        parts[0] = _LEN[rec_lens[0]]
        parts[stop] = b"\x00"
    return parts


# (key length or -2 for no keys, value length) -> per-offset record prefixes.
_UNIFORM_CACHE: dict[tuple[int, int], list[bytes]] = {}
_UNIFORM_CACHE_MAX = 64


def _uniform_prefixes(klen: int, vlen: int, n: int) -> list[bytes]:
    """Everything before the key (or, without keys, before the value) of records
    0..n-1 whose keys and values all have the same lengths.

    Producers usually send same-sized records, so caching these per length pair
    halves the pieces the join has to walk compared to the column layout.
    """
    cache_key = (klen, vlen)
    prefixes = _UNIFORM_CACHE.get(cache_key)
    if prefixes is not None and len(prefixes) >= n:
        return prefixes
    if len(_UNIFORM_CACHE) >= _UNIFORM_CACHE_MAX:
        _UNIFORM_CACHE.clear()
    # Grow geometrically so a slowly rising record count does not rebuild every time,
    # but never past the offsets whose record length still fits the tables.
    size = n if prefixes is None else min(max(n, 2 * len(prefixes)), _O)
    if klen == -2:
        fixed, pfx, extra, tail = _FIXED[4], _PFX_TS0_NOKEY, _SIZE[vlen], _LEN[vlen]
    else:
        fixed, pfx, extra, tail = _FIXED[3], _PFX_TS0, _SIZE[vlen] + _SIZE[klen], _LEN[klen]
    top = fixed[size - 1] + extra
    if top >= _L and not _fits(top):
        size = n
    rec_lens = [f + extra for f in fixed[:size]]
    prefixes = [
        a + b + tail for a, b in zip(map(_LENZ.__getitem__, rec_lens), pfx[:size], strict=True)
    ]
    # The first record has no previous record's header count before its length.
    prefixes[0] = prefixes[0][1:]
    _UNIFORM_CACHE[cache_key] = prefixes
    return prefixes


def _encode_uniform(
    values: Sequence[bytes],
    keys: Sequence[bytes] | None,
    klen: int,
    vlen: int,
    n: int,
) -> list[bytes] | None:
    # The caller made the tables cover klen, vlen and n offsets.
    top = _FIXED[4][n - 1] + _SIZE[vlen] + _SIZE[max(klen, -1)]
    if top >= _L and not _fits(top):
        return None
    prefixes = _uniform_prefixes(klen, vlen, n)
    if keys is None:
        stop = 2 * n
        parts: list[bytes] = [b""] * (stop + 1)
        parts[0:stop:2] = prefixes[:n]
        parts[1:stop:2] = values
    else:
        stop = 4 * n
        parts = [b""] * (stop + 1)
        parts[0:stop:4] = prefixes[:n]
        parts[1:stop:4] = keys
        parts[2:stop:4] = [_LEN[vlen]] * n
        parts[3:stop:4] = values
    parts[stop] = b"\x00"
    return parts


# Timestamp deltas below this have one-byte zigzag varints, the size of the zero
# delta's, so records with such deltas have the lengths of the uniform case.
_TS_NARROW = 64
_UNIFORM_TS_CACHE: dict[tuple[int, int], tuple[list[bytes], list[bytes]]] = {}


def _uniform_ts_pieces(klen: int, vlen: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """The uniform prefixes of :func:`_uniform_prefixes` cut around the
    timestamp delta: (length + attributes) and (offset delta + key or value
    length), per offset. The delta byte goes between them."""
    cache_key = (klen, vlen)
    cached = _UNIFORM_TS_CACHE.get(cache_key)
    if cached is not None and len(cached[0]) >= n:
        return cached
    if len(_UNIFORM_TS_CACHE) >= _UNIFORM_CACHE_MAX:
        _UNIFORM_TS_CACHE.clear()
    size = n if cached is None else min(max(n, 2 * len(cached[0])), _O)
    if klen == -2:
        fixed, extra, tail = _FIXED[4], _SIZE[vlen], b"\x01" + _LEN[vlen]
    else:
        fixed, extra, tail = _FIXED[3], _SIZE[vlen] + _SIZE[klen], _LEN[klen]
    top = fixed[size - 1] + extra
    if top >= _L and not _fits(top):
        size = n
    heads = [z + b"\x00" for z in map(_LENZ.__getitem__, [f + extra for f in fixed[:size]])]
    heads[0] = heads[0][1:]  # no previous record's header count before the first
    tails = [b + tail for b in _LEN[:size]]
    _UNIFORM_TS_CACHE[cache_key] = heads, tails
    return heads, tails


# 1 for the timestamp deltas whose zigzag varint takes two bytes (64..8191 ms),
# 0 for those of one byte; its length bounds the wide uniform path.
_TS_WIDE: list[int] = [0] * _TS_NARROW + [1] * (8192 - _TS_NARROW)
_UNIFORM_TS2_CACHE: dict[tuple[int, int], list[bytes]] = {}


def _uniform_ts2_heads(klen: int, vlen: int, n: int) -> list[bytes] | None:
    """The heads of :func:`_uniform_ts_pieces` for each offset ``i``, at ``2*i``
    for a one-byte timestamp delta and at ``2*i + 1`` for a two-byte one (the
    record one byte longer). None when the longer lengths are past the tables."""
    cached = _UNIFORM_TS2_CACHE.get((klen, vlen))
    if cached is not None and len(cached) >= 2 * n:
        return cached
    if len(_UNIFORM_TS2_CACHE) >= _UNIFORM_CACHE_MAX:
        _UNIFORM_TS2_CACHE.clear()
    short, _ = _uniform_ts_pieces(klen, vlen, n)
    size = len(short)
    fixed = _FIXED[4] if klen == -2 else _FIXED[3]
    # One byte more than the short heads' records: the wider delta.
    extra = _SIZE[vlen] + (0 if klen == -2 else _SIZE[klen]) + 1
    top = fixed[size - 1] + extra
    if top >= _L and not _fits(top):
        return None
    wide = [z + b"\x00" for z in map(_LENZ.__getitem__, [f + extra for f in fixed[:size]])]
    wide[0] = wide[0][1:]  # no previous record's header count before the first
    heads: list[bytes] = [b""] * (2 * size)
    heads[0::2] = short
    heads[1::2] = wide
    _UNIFORM_TS2_CACHE[(klen, vlen)] = heads
    return heads


def _encode_uniform_ts(
    values: Sequence[bytes],
    keys: Sequence[bytes] | None,
    klen: int,
    vlen: int,
    deltas: Sequence[int] | None,
    n: int,
    wide: bool = False,
    first: int = 0,
    zigzags: list[bytes] | None = None,
    narrow: int | None = None,
) -> list[bytes] | None:
    """:func:`_encode_uniform` for records whose timestamps differ by less than
    64 ms (what a producer appending as messages come gives): one more piece
    per record, instead of the column layout's per-record length arithmetic.

    ``wide``: up to 8191 ms apart, a batch spanning longer (a partition's share
    of a busy producer, a batch held open while its partition has requests in
    flight); each record's head is picked by the width of its delta, in
    C-level passes. The column layout cost about 1.7 times as much.

    ``first``: the offset delta of the first record (a run's, see
    :func:`encode_record_run`); the tables cover ``first + n`` offsets.
    ``zigzags``: the deltas' zigzag varints, when the caller has them; then
    ``deltas`` may be None, with ``narrow`` (when ``wide``) the count of
    records before the first two-byte delta, the deltas rising."""
    end = first + n
    top = _FIXED[4][end - 1] + _SIZE[vlen] + _SIZE[max(klen, -1)] + wide
    if top >= _L and not _fits(top):
        return None
    heads, tails = _uniform_ts_pieces(klen, vlen, end)
    if wide:
        both = _uniform_ts2_heads(klen, vlen, end)
        if both is None:
            return None
        if narrow is not None:
            split = 2 * (first + narrow)
            head_column = both[2 * first : split : 2] + both[split + 1 : 2 * end : 2]
        else:
            assert deltas is not None
            head_column = _wide_heads(both[2 * first : 2 * end] if first else both, deltas, n)
    else:
        head_column = heads[first:end]
    k = 4 if keys is None else 6
    stop = k * n
    parts: list[bytes] = [b""] * (stop + 1)
    parts[0:stop:k] = head_column
    if zigzags is None:
        assert deltas is not None
        zigzags = list(map(_LEN.__getitem__, deltas))
    parts[1:stop:k] = zigzags  # the deltas' zigzag varints
    parts[2:stop:k] = tails[first:end]
    if keys is None:
        parts[3:stop:k] = values
    else:
        parts[3:stop:k] = keys
        parts[4:stop:k] = [_LEN[vlen]] * n
        parts[5:stop:k] = values
    parts[stop] = b"\x00"
    return parts


def _wide_heads(both: list[bytes], deltas: Sequence[int], n: int) -> list[bytes]:
    """Each record's head from :func:`_uniform_ts2_heads` (``both``), picked by
    the width of its timestamp delta. Records appended as they come have
    non-decreasing deltas, so the one-byte ones come first: two slices, once
    a split point is checked (~23 ns a record), instead of a pick per record
    (~90 ns); deltas in any other order are picked one by one."""
    k = bisect_left(deltas, _TS_NARROW)  # where the split is, if deltas are in order
    if (k == 0 or max(deltas[:k]) < _TS_NARROW) and (k == n or min(deltas[k:]) >= _TS_NARROW):
        return both[0 : 2 * k : 2] + both[2 * k + 1 : 2 * n : 2]
    picks = map(add, range(0, 2 * n, 2), map(_TS_WIDE.__getitem__, deltas))
    return list(map(both.__getitem__, picks))


def _encode_records_slow(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None,
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None] | None,
    deltas: Sequence[int] | None,
    n: int,
) -> list[bytes]:
    """Record-at-a-time encoding for whatever the tables do not cover."""
    parts: list[bytes] = []
    for i in range(n):
        body = [b"\x00", _zz(deltas[i]) if deltas is not None else b"\x00", _zz(i)]
        key = keys[i] if keys is not None else None
        if key is None:
            body.append(b"\x01")
        else:
            body.append(_zz(len(key)))
            body.append(key)
        value = values[i]
        if value is None:
            body.append(b"\x01")
        else:
            body.append(_zz(len(value)))
            body.append(value)
        body.append(_header_blob(headers[i] if headers is not None else None))
        record = b"".join(body)
        parts.append(_zz(len(record)))
        parts.append(record)
    return parts


# --- decoder ------------------------------------------------------------------------


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


@dataclass
class RecordBatch:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: list[Record] = field(default_factory=list)

    @property
    def compression(self) -> CompressionType:
        return CompressionType(self.attributes & _ATTR_COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> int:
        """0 for CreateTime, 1 for LogAppendTime."""
        return 1 if self.attributes & _ATTR_LOG_APPEND_TIME else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _ATTR_TRANSACTIONAL)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _ATTR_CONTROL)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & _ATTR_DELETE_HORIZON)

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


def _read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Zigzag varlong at ``pos``; ProtocolError when truncated or over 10 bytes."""
    shift = 0
    result = 0
    limit = min(end, pos + 10)
    while pos < limit:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
    if pos >= end:
        raise ProtocolError("truncated varint in record")
    raise ProtocolError("varint longer than 10 bytes in record")


def decode_batches(
    data: bytes | bytearray | memoryview,
    *,
    allow_partial_tail: bool = False,
    max_decompressed_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> list[RecordBatch]:
    """Decode the record batches of ``data`` (a produce or fetch records field).

    The input is untrusted: anything malformed raises :class:`ProtocolError` (a bad
    CRC raises its subclass :class:`CorruptRecordError`) in time linear in its size.
    Fetch responses may cut the last batch short; with ``allow_partial_tail`` such
    an incomplete trailing batch is silently dropped, otherwise it is an error.
    Legacy message sets (magic 0 and 1) are not supported.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    view = memoryview(buf)
    end = len(buf)
    pos = 0
    batches: list[RecordBatch] = []
    while pos < end:
        if end - pos < 17:
            if allow_partial_tail:
                break
            raise ProtocolError(f"truncated record batch header at byte {pos}")
        base_offset, batch_length, leader_epoch, magic = struct.unpack_from(">qiib", buf, pos)
        if magic != _MAGIC:
            raise ProtocolError(f"unsupported magic {magic} at byte {pos} (only v2 batches)")
        if batch_length < _MIN_BATCH_LENGTH:
            raise ProtocolError(f"record batch length {batch_length} is too small")
        batch_end = pos + 12 + batch_length
        if batch_end > end:
            if allow_partial_tail:
                break
            raise ProtocolError(
                f"record batch at byte {pos} needs {batch_length + 12} bytes, "
                f"only {end - pos} remain"
            )
        (crc,) = struct.unpack_from(">I", buf, pos + 17)
        actual = crc32c(view[pos + _CRC_START : batch_end])
        if actual != crc:
            raise CorruptRecordError(
                f"record batch at offset {base_offset} has CRC {actual:#010x}, "
                f"header says {crc:#010x}"
            )
        (
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            count,
        ) = _TAIL.unpack_from(buf, pos + _CRC_START)
        batch = RecordBatch(
            base_offset,
            batch_length,
            leader_epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
        )
        codec = attributes & _ATTR_COMPRESSION_MASK
        if codec > CompressionType.ZSTD:
            raise ProtocolError(f"unknown compression type {codec} in record batch")
        start = pos + BATCH_OVERHEAD
        if codec:
            rbuf = decompress(CompressionType(codec), view[start:batch_end], max_decompressed_size)
            rstart, rend = 0, len(rbuf)
        else:
            rbuf, rstart, rend = buf, start, batch_end
        if count < 0 or count > (rend - rstart) // _MIN_RECORD:
            raise ProtocolError(f"record count {count} cannot fit in {rend - rstart} bytes")
        fixed_ts = max_timestamp if attributes & _ATTR_LOG_APPEND_TIME else None
        batch.records = _decode_records(
            rbuf, rstart, rend, count, base_offset, base_timestamp, fixed_ts
        )
        batches.append(batch)
        pos = batch_end
    return batches


def _decode_records(
    buf: bytes,
    pos: int,
    end: int,
    count: int,
    base_offset: int,
    base_timestamp: int,
    fixed_timestamp: int | None,
) -> list[Record]:
    records: list[Record] = []
    append = records.append
    rv = _read_varint
    for _ in range(count):
        length, pos = rv(buf, pos, end)
        rec_end = pos + length
        if length < 6 or rec_end > end:
            raise ProtocolError(f"record length {length} is impossible here")
        pos += 1  # record attributes: unused by the protocol
        ts_delta, pos = rv(buf, pos, rec_end)
        off_delta, pos = rv(buf, pos, rec_end)
        klen, pos = rv(buf, pos, rec_end)
        key: bytes | None = None
        if klen >= 0:
            if klen > rec_end - pos:
                raise ProtocolError(f"record key length {klen} overruns the record")
            key = buf[pos : pos + klen]
            pos += klen
        elif klen != -1:
            raise ProtocolError(f"negative record key length {klen}")
        vlen, pos = rv(buf, pos, rec_end)
        value: bytes | None = None
        if vlen >= 0:
            if vlen > rec_end - pos:
                raise ProtocolError(f"record value length {vlen} overruns the record")
            value = buf[pos : pos + vlen]
            pos += vlen
        elif vlen != -1:
            raise ProtocolError(f"negative record value length {vlen}")
        hcount, pos = rv(buf, pos, rec_end)
        hdrs: list[tuple[str, bytes | None]] = []
        if hcount:
            # Each header takes at least two bytes (empty key, null value).
            if hcount < 0 or hcount > (rec_end - pos) // 2:
                raise ProtocolError(f"record header count {hcount} is impossible here")
            for _ in range(hcount):
                hklen, pos = rv(buf, pos, rec_end)
                if hklen < 0 or hklen > rec_end - pos:
                    raise ProtocolError(f"record header key length {hklen} is invalid")
                try:
                    hkey = buf[pos : pos + hklen].decode()
                except UnicodeDecodeError:
                    raise ProtocolError("record header key is not UTF-8") from None
                pos += hklen
                hvlen, pos = rv(buf, pos, rec_end)
                hval: bytes | None = None
                if hvlen >= 0:
                    if hvlen > rec_end - pos:
                        raise ProtocolError(f"record header value length {hvlen} overruns")
                    hval = buf[pos : pos + hvlen]
                    pos += hvlen
                elif hvlen != -1:
                    raise ProtocolError(f"negative record header value length {hvlen}")
                hdrs.append((hkey, hval))
        if pos != rec_end:
            raise ProtocolError(f"record length {length} does not match its fields")
        append(
            Record(
                base_offset + off_delta,
                base_timestamp + ts_delta if fixed_timestamp is None else fixed_timestamp,
                key,
                value,
                hdrs,
            )
        )
    if pos != end:
        raise ProtocolError(f"{end - pos} bytes left over after the batch's {count} records")
    return records
