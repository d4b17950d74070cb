"""A batch of records bound for one partition, and its builder.

Records are kept column-wise (values, keys, headers, timestamps) because the
record-batch encoder is fastest that way. A batch keeps its records and its
(producer id, epoch, base sequence) across retries: a retry sends the same
records with the same sequence, which is what lets the broker drop duplicates.
The encoding is cached per identity until the request carrying it is framed.
A front end may encode records ahead as *runs* (``add_run``) in its own
thread; ``encode`` then only frames them, and a retry encodes the columns.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from grete.producer.message import Headers
from grete.protocol.compression import CompressionType
from grete.protocol.records import encode_batch, encode_record_run, frame_record_runs

#: Where a record of a batch that was split or placed lives now: index in
#: the old batch -> (new batch, index there). See :meth:`ProducerBatch.relocate`.
Forward = Callable[[int], "tuple[ProducerBatch, int]"]


class ProducerBatch:
    """Records for one partition plus the bookkeeping of their delivery.

    ``handles`` holds one opaque object per record for a front end that needs
    one (the sync producer's result indexes); None for one that keeps none
    (the background producer's futures point at their batch instead, so a
    future its caller drops is freed at once). ``watchers`` are the front
    end's objects to visit when the batch is done (futures with callbacks).
    """

    __slots__ = (
        "_encoded",
        "_encoded_for",
        "attempts",
        "base_sequence",
        "base_timestamp",
        "created",
        "forward",
        "handles",
        "headers",
        "keys",
        "last_error",
        "maybe_written",
        "order",
        "outcome",
        "owner",
        "partition",
        "retry_at",
        "runs",
        "size",
        "timestamps",
        "topic",
        "values",
        "waits",
        "watchers",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        created: float,
        owner: Any = None,
        handles: bool = True,
    ) -> None:
        self.topic = topic
        # The front end's state its futures need (the background producer's
        # sender: the condition result() waits on, and relocate()'s hook);
        # None for the sync one.
        self.owner = owner
        self.partition = partition
        self.values: list[bytes | None] = []
        self.keys: list[bytes | None] | None = None
        self.headers: list[Headers | None] | None = None
        # None: every record at base_timestamp (the common case, no column).
        self.timestamps: list[int] | None = []
        self.handles: list[Any] | range | array[int] | None = [] if handles else None
        self.base_timestamp = 0
        self.size = 0
        self.created = created
        self.attempts = 0
        self.waits = 0  # waits for a leader (not attempts), for their backoff
        self.retry_at = 0.0
        # None until the batch is first drained under idempotence.
        self.base_sequence: int | None = None
        # True once a send's outcome was unknown (connection lost, timeout):
        # the broker may hold these records even if the batch later fails.
        self.maybe_written = False
        # What the last attempt (or wait for a leader) ran into, for the
        # error of a batch whose delivery timeout then runs out.
        self.last_error: Any = None
        # Set once, when the batch is done: (base_offset, append_time, error).
        self.outcome: tuple[int, int, Any] | None = None
        # A front end's objects to visit when the batch is done (None: none).
        self.watchers: list[Any] | None = None
        # Set when the records moved to other batches (split, or a stage placed).
        self.forward: Forward | None = None
        # Place in the partition's send order, set by the engine. A tuple so
        # that the halves of a split batch sort between their neighbours:
        # (5,) < (5, 0) < (5, 1) < (6,).
        self.order: tuple[int, ...] = ()
        self._encoded: bytes | None = None
        self._encoded_for: tuple[int, int, int, int, int | None, bool] | None = None
        # Its first records encoded already, as runs (see add_run): (how many,
        # their greatest timestamp delta, the runs). One attribute, replaced
        # whole, so an interrupt never leaves a count that disagrees with
        # the runs. None: none yet.
        self.runs: tuple[int, int, list[bytes]] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        where = f"{self.topic}/{self.partition}"
        return f"<ProducerBatch {where} n={len(self.values)} seq={self.base_sequence}>"

    def append(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp: int,
        handle: Any,
        size: int,
    ) -> None:
        """Add one record; columns for keys and headers appear only when a
        record needs them, so the common unkeyed case stays lean."""
        n = len(self.values)
        if n == 0:
            self.base_timestamp = timestamp
        try:
            if key is not None and self.keys is None:
                self.keys = [None] * n
            if self.keys is not None:
                self.keys.append(key)
            if headers and self.headers is None:
                self.headers = [None] * n
            if self.headers is not None:
                self.headers.append(headers)
            self.values.append(value)
            self.timestamps.append(timestamp)  # type: ignore[union-attr]
            if self.handles is not None:
                self.handles.append(handle)  # type: ignore[union-attr]
            self.size += size  # no call after the last append: nothing interrupts in between
        except BaseException:
            self.truncate(n)  # a KeyboardInterrupt between two columns
            raise

    def truncate(self, n: int) -> None:
        """Cut every column back to ``n`` records: undoes a record half
        appended (its columns are appended one by one) when an exception, a
        KeyboardInterrupt, lands in between. ``size`` is added last, after
        every column, so it never counts a record undone here."""
        for column in (self.values, self.timestamps, self.keys, self.headers, self.handles):
            if column is not None and type(column) is not range:  # a range is never appended to
                del column[n:]
        if self.runs is not None and self.runs[0] > n:
            self.runs = None  # they encode records that are gone

    def add_run(
        self,
        values: list[bytes],
        keys: list[bytes | None] | None,
        timestamps: list[int],
        first: int,
        lengths: tuple[int, int] | None = None,
        time_runs: list[tuple[int, int]] | None = None,
    ) -> None:
        """Encode records ``first ..`` (their columns given: the records just
        appended) as a run, when the runs so far end at ``first``
        (``records.encode_record_run``, ``lengths`` and ``time_runs`` passed on): the sender
        then only frames them. Records that do not fit a run are left for
        :meth:`encode`."""
        runs = self.runs
        if (0 if runs is None else runs[0]) != first or self.headers is not None:
            return
        run = encode_record_run(
            values,
            keys,
            timestamps,
            base_timestamp=self.base_timestamp,
            first=first,
            lengths=lengths,
            time_runs=time_runs,
        )
        if run is None:
            return
        piece, greatest = run
        if runs is None:
            self.runs = (first + len(values), greatest, [piece])
        else:
            self.runs = (first + len(values), max(greatest, runs[1]), [*runs[2], piece])

    def fill(
        self,
        values: list[bytes],
        handles: range | array[int],
        timestamp: int,
        size: int,
        keys: list[bytes] | None = None,
    ) -> None:
        """Make this batch hold ``values`` (and ``keys``) at once (the sync fast paths)."""
        self.values = values  # type: ignore[assignment]  # read-only from here on
        self.keys = keys  # type: ignore[assignment]
        self.handles = handles
        self.timestamps = None
        self.base_timestamp = timestamp
        self.size = size

    def encode(
        self,
        compression: CompressionType,
        level: int | None,
        producer_id: int = -1,
        producer_epoch: int = -1,
        transactional: bool = False,
    ) -> bytes:
        seq = -1 if self.base_sequence is None else self.base_sequence
        identity = (producer_id, producer_epoch, seq, int(compression), level, transactional)
        if self._encoded is None or self._encoded_for != identity:
            encoded = self._encode_runs(
                compression, level, producer_id, producer_epoch, seq, transactional
            )
            self._encoded = (
                encoded
                if encoded is not None
                else encode_batch(
                    self.values,
                    self.keys,
                    self.headers,
                    self.timestamps,
                    base_timestamp=self.base_timestamp,
                    compression=compression,
                    compression_level=level,
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    base_sequence=seq,
                    is_transactional=transactional,
                )
            )
            self._encoded_for = identity
        return self._encoded

    def _encode_runs(
        self,
        compression: CompressionType,
        level: int | None,
        producer_id: int,
        producer_epoch: int,
        seq: int,
        transactional: bool = False,
    ) -> bytes | None:
        """The batch framed from its runs and the rest as one more run; None
        when it has none, or the rest does not fit one."""
        runs = self.runs
        if runs is None or self.headers is not None or self.timestamps is None:
            return None
        count, greatest, pieces = runs
        n = len(self.values)
        if count > n:  # records cut without truncate(): never trust the runs
            return None
        if count < n:
            keys = self.keys
            rest = encode_record_run(
                self.values[count:],  # type: ignore[arg-type]
                None if keys is None else keys[count:],
                self.timestamps[count:],
                base_timestamp=self.base_timestamp,
                first=count,
            )
            if rest is None:
                return None
            pieces = [*pieces, rest[0]]
            greatest = max(greatest, rest[1])
        return frame_record_runs(
            pieces,
            n,
            base_timestamp=self.base_timestamp,
            greatest_delta=greatest,
            compression=compression,
            compression_level=level,
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            base_sequence=seq,
            is_transactional=transactional,
        )

    def release_encoding(self) -> None:
        """Drop the encoded bytes (once framed into a request, or done): a
        retry encodes the same records again (from the columns: the runs go
        too, else every batch in flight kept two copies of its records)."""
        self._encoded = None
        self._encoded_for = None
        self.runs = None

    def split(self) -> tuple[ProducerBatch, ProducerBatch]:
        """Two halves, in order, for a batch the broker found too large."""
        n = len(self.values)
        half = n // 2
        parts: list[ProducerBatch] = []
        for lo, hi in ((0, half), (half, n)):
            b = ProducerBatch(self.topic, self.partition, self.created, self.owner)
            b.values = self.values[lo:hi]
            b.keys = None if self.keys is None else self.keys[lo:hi]
            b.headers = None if self.headers is None else self.headers[lo:hi]
            b.timestamps = None if self.timestamps is None else self.timestamps[lo:hi]
            b.handles = None if self.handles is None else self.handles[lo:hi]
            b.base_timestamp = self.base_timestamp if b.timestamps is None else b.timestamps[0]
            # The halves' sizes add up to the whole: producers release exactly
            # what they counted against their buffer bound.
            b.size = self.size * hi // max(1, n) - sum(x.size for x in parts)
            b.attempts = self.attempts
            b.maybe_written = self.maybe_written
            b.last_error = self.last_error
            b.order = (*self.order, len(parts))
            parts.append(b)
        first, second = parts
        self.relocate(_SplitForward(half, first, second))
        return first, second

    def relocate(self, forward: Forward) -> None:
        """This batch's records now live where ``forward`` says: set it, and
        move the watchers, through the owner's ``relocated(batch, forward)``
        when it has one (the background producer's, which does it under the
        lock its futures' readers take)."""
        hook = getattr(self.owner, "relocated", None)
        if hook is not None:
            hook(self, forward)
        else:
            move_watchers(self, forward)


class Stage(ProducerBatch):
    """Keyed records whose partitions are not chosen yet: a front end's
    inline path appends to its columns (values, keys, timestamps; no
    headers), and ``Accumulator.place_stage`` places them all at once, then
    relocates the stage (its ``forward`` says where each record went).
    ``partition`` is -1 while it is a stage."""

    __slots__ = ("reserved_last",)

    def __init__(self, topic: str, created: float, owner: Any = None, handles: bool = True) -> None:
        super().__init__(topic, -1, created, owner, handles)
        self.keys = []
        # The index its last record may take: one less than the queue slots
        # its front end reserved for its records (-1: none reserved).
        self.reserved_last = -1


class Unassigned(ProducerBatch):
    """Records for a topic whose partitions are not known yet (its metadata
    is being fetched): any record, kept in produce order with the partition
    each asked for (``wanted``: None for the partitioner's choice). Placed
    record by record once the partitions are known, then relocated as a
    stage is; failed whole if the topic does not appear in time."""

    __slots__ = ("wanted",)

    def __init__(self, topic: str, created: float, owner: Any = None) -> None:
        super().__init__(topic, -1, created, owner, handles=False)
        self.wanted: list[int | None] = []


def move_watchers(batch: ProducerBatch, forward: Forward) -> None:
    """Set ``batch.forward`` and hand each watcher (an object with ``_batch``
    and ``_index``) to the batch its record moved to, re-pointed there."""
    batch.forward = forward
    watchers, batch.watchers = batch.watchers, None
    if not watchers:
        return
    at = 0
    try:
        for at, w in enumerate(watchers):  # noqa: B007 (read if cut short)
            _move_watcher(w, forward)
    except BaseException:
        # Cut short (a KeyboardInterrupt in the thread placing a stage): the
        # rest move all the same, else their callbacks and delivery reports
        # were lost. The one being moved may be half moved.
        w = watchers[at]
        if w._batch is batch:
            _move_watcher(w, forward)
        elif not any(x is w for x in w._batch.watchers or ()):
            add_watcher(w._batch, w)
        for w in watchers[at + 1 :]:
            _move_watcher(w, forward)
        raise


def _move_watcher(w: Any, forward: Forward) -> None:
    """Re-point one watcher of a relocated batch where its record went."""
    new, index = forward(w._index)
    # Batch and index together: no thread switch falls between two stores
    # (CPython switches at calls and backward jumps only).
    w._batch, w._index = new, index
    add_watcher(new, w)


def add_watcher(batch: ProducerBatch, w: Any) -> None:
    """List ``w`` among the watchers ``batch`` visits when done. The list is
    created on first use, so two threads listing the first watchers of one
    batch at once would lose one: the background producer lists only under
    the locks its ``_watch`` comment names."""
    if batch.watchers is None:
        batch.watchers = [w]
    else:
        batch.watchers.append(w)


class _SplitForward:
    """:data:`Forward` of a split batch: the first ``half`` records went to
    ``first``, the rest to ``second``, in order."""

    __slots__ = ("_first", "_half", "_second")

    def __init__(self, half: int, first: ProducerBatch, second: ProducerBatch) -> None:
        self._half, self._first, self._second = half, first, second

    def __call__(self, index: int) -> tuple[ProducerBatch, int]:
        if index < self._half:
            return self._first, index
        return self._second, index - self._half
