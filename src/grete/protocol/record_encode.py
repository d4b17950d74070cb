"""Record batch v2: the column-oriented encoder (:func:`encode_batch`).

This module is the producer's hot path, so the encoder avoids per-record Python
work: every small varint comes from the precomputed tables of
:mod:`grete.protocol.record_format`, record lengths are summed column-wise with
``map(operator.add, ...)`` rather than by encoding twice, and the columns are
interleaved into one list by slice assignment before a single ``b"".join``.
Same-length records take the paths of :mod:`grete.protocol.record_uniform`.
Records outside the tables' range (huge values, negative timestamp deltas, giant
batches) take a plain per-record loop that is slower but exact.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import add, itemgetter, sub
from typing import cast

from grete.errors import ConfigurationError
from grete.protocol import record_format as _fmt
from grete.protocol.compression import CompressionType, compress, validate_level
from grete.protocol.crc32c import crc32c
from grete.protocol.record_format import (
    _ATTR_TRANSACTIONAL,
    _FIXED,
    _HEAD,
    _LEN,
    _LENZ,
    _M,
    _MAGIC,
    _PFX_NOKEY,
    _PFX_TS0,
    _PFX_TS0_NOKEY,
    _SIZE,
    _TAIL,
    _TS_NARROW,
    _TS_WIDE,
    _TSA,
    _TSA_SIZE,
    BATCH_OVERHEAD,
    _fits,
    _grow,
    _zz,
)
from grete.protocol.record_uniform import _encode_uniform, _encode_uniform_ts

__all__ = ["encode_batch", "record_size"]


def _header_blob(hs: Sequence[tuple[str, bytes | None]] | None) -> bytes:
    """Header count and headers of one record."""
    if not hs:
        return b"\x00"
    n = len(hs)
    parts = [_LEN[n] if n < _fmt._L else _zz(n)]
    append = parts.append
    for key, value in hs:
        kb = key.encode()
        kl = len(kb)
        append(_LEN[kl] if kl < _fmt._L else _zz(kl))
        append(kb)
        if value is None:
            append(b"\x01")
        else:
            vl = len(value)
            append(_LEN[vl] if vl < _fmt._L else _zz(vl))
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
            if len(kb) >= _fmt._L and not _fits(len(kb)):
                return None
            key_piece = _LEN[len(kb)] + kb
            columns.append([key_piece] * n)
            fixed += len(key_piece)
        else:
            encoded = list(map(str.encode, names))
            klens = list(map(len, encoded))
            ktop = max(klens)
            if ktop >= _fmt._L and not _fits(ktop):
                return None
            columns.append(list(map(add, map(_LEN.__getitem__, klens), encoded)))
            variable.append(map(_SIZE.__getitem__, klens))
        vlens, vpieces = _lengths(values)
        vtop = max(vlens)
        if vtop >= _fmt._L and not _fits(vtop):
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
    # The first key looked at first: a count compares every key with None (rich
    # comparison, not identity), the dearest of a keyed batch's checks, and a
    # first key that is not None already rules an all-None column out.
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


def _byte_deltas(timestamps: Sequence[int], base: int, n: int) -> bytes | None:
    """The timestamps' deltas from ``base``, one byte each, if all are 0..255 ms
    (a batch of records appended as they came); else None.

    ``bytes()`` checks the range in C, and what the encoder then asks of the
    deltas (all zero? the greatest?) are C-level scans of the bytes, where
    ``min()`` and ``max()`` over the timestamps would compare ints one by one
    and a list of deltas would hold an int object a record."""
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
    if top >= _fmt._L or n > _fmt._O:
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
    if rtop >= _fmt._L and not _fits(rtop):
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
