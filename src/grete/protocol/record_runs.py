"""Record batch v2: a batch's records encoded a part at a time, as *runs*
(:func:`encode_record_run`), and a batch framed from its runs
(:func:`frame_record_runs`): the same bytes :func:`encode_batch` makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

from grete.protocol import record_format as _fmt
from grete.protocol.compression import CompressionType, validate_level
from grete.protocol.record_encode import _byte_deltas, _frame, _greatest
from grete.protocol.record_format import _LEN, _M, _TS_NARROW, _grow
from grete.protocol.record_uniform import _encode_uniform_ts

__all__ = ["encode_record_run", "frame_record_runs"]


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
    cache, instead of the sender thread encoding the batch from another core,
    where they are not. A record's bytes depend only on its own
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
    if top >= _fmt._L or end > _fmt._O:
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
    is_transactional: bool = False,
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
        is_transactional,
    )
