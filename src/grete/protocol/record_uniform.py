"""Record batch v2: the "uniform" encoders, for records whose keys and values all
have one length (what producers usually send).

Their per-record pieces (everything but the key, value and timestamp delta) are
cached per (key length, value length) and offset, so a batch is a few slice
assignments into one list of pieces; see :mod:`grete.protocol.record_encode`,
which picks these paths, and :mod:`grete.protocol.record_format` for the tables.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from operator import add

from grete.protocol import record_format as _fmt
from grete.protocol.record_format import (
    _FIXED,
    _LEN,
    _LENZ,
    _PFX_TS0,
    _PFX_TS0_NOKEY,
    _SIZE,
    _TS_NARROW,
    _TS_WIDE,
    _fits,
)

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
    size = n if prefixes is None else min(max(n, 2 * len(prefixes)), _fmt._O)
    if klen == -2:
        fixed, pfx, extra, tail = _FIXED[4], _PFX_TS0_NOKEY, _SIZE[vlen], _LEN[vlen]
    else:
        fixed, pfx, extra, tail = _FIXED[3], _PFX_TS0, _SIZE[vlen] + _SIZE[klen], _LEN[klen]
    top = fixed[size - 1] + extra
    if top >= _fmt._L and not _fits(top):
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
    if top >= _fmt._L and not _fits(top):
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
    size = n if cached is None else min(max(n, 2 * len(cached[0])), _fmt._O)
    if klen == -2:
        fixed, extra, tail = _FIXED[4], _SIZE[vlen], b"\x01" + _LEN[vlen]
    else:
        fixed, extra, tail = _FIXED[3], _SIZE[vlen] + _SIZE[klen], _LEN[klen]
    top = fixed[size - 1] + extra
    if top >= _fmt._L and not _fits(top):
        size = n
    heads = [z + b"\x00" for z in map(_LENZ.__getitem__, [f + extra for f in fixed[:size]])]
    heads[0] = heads[0][1:]  # no previous record's header count before the first
    tails = [b + tail for b in _LEN[:size]]
    _UNIFORM_TS_CACHE[cache_key] = heads, tails
    return heads, tails


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
    if top >= _fmt._L and not _fits(top):
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
    C-level passes, still cheaper than the column layout.

    ``first``: the offset delta of the first record (a run's, see
    :func:`encode_record_run`); the tables cover ``first + n`` offsets.
    ``zigzags``: the deltas' zigzag varints, when the caller has them; then
    ``deltas`` may be None, with ``narrow`` (when ``wide``) the count of
    records before the first two-byte delta, the deltas rising."""
    end = first + n
    top = _FIXED[4][end - 1] + _SIZE[vlen] + _SIZE[max(klen, -1)] + wide
    if top >= _fmt._L and not _fits(top):
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
    a split point is checked (C-level scans), instead of a pick per record;
    deltas in any other order are picked one by one."""
    k = bisect_left(deltas, _TS_NARROW)  # where the split is, if deltas are in order
    if (k == 0 or max(deltas[:k]) < _TS_NARROW) and (k == n or min(deltas[k:]) >= _TS_NARROW):
        return both[0 : 2 * k : 2] + both[2 * k + 1 : 2 * n : 2]
    picks = map(add, range(0, 2 * n, 2), map(_TS_WIDE.__getitem__, deltas))
    return list(map(both.__getitem__, picks))
