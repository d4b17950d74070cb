"""Open batches per partition, filled record by record and handed to the engine
when full or when they have lingered long enough.

Both front ends batch through this class: the synchronous producer appends a
whole ``produce()`` call and drains everything at once; the background
producer appends from user threads and its sender drains what is ready.
It does no I/O and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from itertools import accumulate, repeat
from operator import add
from typing import Any

from grete.producer.batch import ProducerBatch, Stage, Unassigned
from grete.producer.grouping import grouped, partition_time_runs, time_runs
from grete.producer.message import Headers

# Bytes a record adds around its key and value (length, attributes,
# timestamp and offset deltas, key/value lengths, header count): an upper
# bound for records under 16 KiB, used to bound batch and request sizes.
RECORD_OVERHEAD = 21


_OVERHEADS = repeat(RECORD_OVERHEAD)


def keyed_record_sizes(keys: list[bytes], values: list[bytes]) -> Iterator[int]:
    """:func:`record_size` of each ``(key, value)`` of ``bytes`` with no headers,
    in C-level passes."""
    return map(add, map(add, map(len, keys), map(len, values)), _OVERHEADS)


#: Keyed records to partition ids, for :meth:`Accumulator.place_stage`: given
#: the keys and the length each has (None: not all one length), each key's
#: partition id, packed as ``grouping.packed_ids`` packs them, and the
#: partition count.
KeyPlacer = Callable[[list[bytes], "int | None"], "tuple[bytes | array[int], int]"]


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    size = RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    if headers:
        size += sum(len(h) + len(v or b"") + 10 for h, v in headers)
    return size


def staged_size(keys: list[bytes], values: list[bytes]) -> int:
    """:func:`record_size` summed over staged records (each keyed, none
    with headers), in two C-level passes: no size per record."""
    return sum(map(len, keys)) + sum(map(len, values)) + RECORD_OVERHEAD * len(values)


def cut_batches(
    sizes: list[int], max_records: int, max_bytes: int
) -> Iterator[tuple[int, int, int]]:
    """Cut consecutive records of one partition (``sizes``: each one's
    :func:`record_size`) into batches by the same bounds as
    :meth:`Accumulator.append`: ``(start, end, bytes)`` each. A cut over
    ``max_bytes`` is a single record too large to send. (The synchronous
    producer's bulk paths build their batches this way.)"""
    n, start = len(sizes), 0
    while start < n:
        end = min(n, start + max_records)
        total = sum(sizes[start:end])
        while total > max_bytes and end > start + 1:
            # Rare: large records. Shrink to what fits in one batch.
            end = start + max(1, (end - start) // 2)
            total = sum(sizes[start:end])
        yield start, end, total
        start = end


def _common(lengths: list[int]) -> int | None:
    """The length every item has (``lengths``: one each), or None when they
    differ or there are none. One C-level count."""
    return lengths[0] if lengths and lengths.count(lengths[0]) == len(lengths) else None


class Accumulator:
    """See the module docstring. Not thread-safe: callers hold their own lock."""

    def __init__(
        self,
        topic: str,
        *,
        max_records: int,
        max_bytes: int,
        linger_s: float = 0.0,
        on_new_batch: Callable[[int], None] | None = None,
        owner: Any = None,
        int_handles: bool = False,
        handles: bool = True,
        key_placer: KeyPlacer | None = None,
        stage_gone: Callable[[Stage], None] | None = None,
    ) -> None:
        self.topic = topic
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        # Told the partition whose batch just closed (the sticky partitioner moves on).
        self._on_new_batch = on_new_batch
        self.owner = owner  # stamped on every batch (see ProducerBatch.owner)
        # Handles that are message indexes (the sync producer's) go in an int64
        # array: 8 bytes each instead of a pointer plus a 28-byte int object.
        self.int_handles = int_handles
        # False: batches keep no handle column (see ProducerBatch.handles).
        self.handles = handles
        # partition -> the batch its records go into now. Public for a front
        # end's fast path, which may append to an open batch directly (under
        # its lock) and then must call close() when the batch is full.
        self.open_batches: dict[int, ProducerBatch] = {}
        self._ready: list[ProducerBatch] = []
        # The batch the last append() went into (its record is the last one):
        # lets a front end point its delivery handle at the batch.
        self.last: ProducerBatch | None = None
        # Keyed records whose partitions are not chosen yet: a front end's fast
        # path appends to it directly (under its lock), and place_stage() places
        # them all at once. None when empty.
        self.stage: Stage | None = None
        self._key_placer = key_placer
        # Records that wait for the topic's partitions to be known (its
        # metadata being fetched); None when there are none.
        self.unassigned: Unassigned | None = None
        # Told of a stage, its records still listed, when it stops being the
        # stage: placed, or taken whole by take_all() (a front end's
        # reservations for it returned: see Stage.reserved_last).
        self.stage_gone = stage_gone

    def __len__(self) -> int:
        return (
            len(self.open_batches)
            + len(self._ready)
            + (self.stage is not None)
            + (self.unassigned is not None)
        )

    def add_unassigned(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp: int,
        size: int,
        wanted: int | None,
        now: float,
    ) -> tuple[Unassigned, int]:
        """Hold one record until the topic's partitions are known (see
        :meth:`place_unassigned`): the batch holding it and its index there."""
        batch = self.unassigned
        if batch is None:
            batch = Unassigned(self.topic, now, self.owner)
            # Listed only once it holds the record (see append).
            batch.append(key, value, headers, timestamp, None, size)
            batch.wanted.append(wanted)
            self.unassigned = batch
            return batch, 0
        index = len(batch.values)
        batch.append(key, value, headers, timestamp, None, size)
        try:
            batch.wanted.append(wanted)
        except BaseException:
            batch.truncate(index)
            batch.size -= size
            raise
        return batch, index

    def place_unassigned(
        self, choose: Callable[[bytes | None, int | None], int | None], now: float
    ) -> tuple[bool, ProducerBatch | None]:
        """The topic's partitions are known now: move the held records, in
        produce order, into their partitions' batches (``choose(key,
        wanted)`` gives each one's partition, or None when the partition it
        asked for does not exist) and relocate the held batch. Returns
        whether a batch became ready, and a batch of the records whose
        partition does not exist (for the caller to fail), or None."""
        held = self.unassigned
        if held is None:
            return False, None
        if self.stage is not None:  # (never both: the front end places the stage first)
            self.place_stage()
        keys = held.keys
        headers = held.headers
        timestamps: list[int] = held.timestamps  # type: ignore[assignment]
        # Partitions chosen first, while nothing has moved: a partitioner that
        # raises leaves the records held, for take_all() to fail them.
        pids = [choose(None if keys is None else keys[i], w) for i, w in enumerate(held.wanted)]
        rejected: ProducerBatch | None = None
        targets: list[tuple[ProducerBatch, int]] = []
        closed = False
        self.unassigned = None
        for i, pid in enumerate(pids):
            key = None if keys is None else keys[i]
            value = held.values[i]
            hdrs = None if headers is None else headers[i]
            size = record_size(key, value, hdrs)
            if pid is None:
                if rejected is None:
                    rejected = ProducerBatch(self.topic, -1, held.created, self.owner, False)
                rejected.append(key, value, hdrs, timestamps[i], None, size)
                targets.append((rejected, len(rejected.values) - 1))
                continue
            closed = self.append(pid, key, value, hdrs, timestamps[i], None, size, now) or closed
            last = self.last
            assert last is not None
            targets.append((last, len(last.values) - 1))
        held.relocate(_ListForward(targets))
        # Rebound, never emptied in place (see place_stage).
        held.values, held.keys, held.headers, held.timestamps = [], None, None, None
        return closed, rejected

    def new_stage(self, now: float) -> Stage:
        """Open the stage (see :class:`~grete.producer.batch.Stage`), whose
        records linger from ``now`` as an open batch's do. Needs the
        ``key_placer`` given at construction."""
        assert self._key_placer is not None and self.stage is None
        stage = self.stage = Stage(self.topic, now, self.owner, self.handles)
        return stage

    def place_stage(self) -> bool:
        """Move the staged records into their partitions' batches, in order,
        closing the batches they fill; True when a batch became ready.
        The stage is then relocated (``ProducerBatch.relocate``): whatever
        points at its records follows them.

        Each record must be within ``max_bytes`` (the front end checked)."""
        stage = self.stage
        if stage is None:
            return False
        assert self._key_placer is not None
        keys: list[bytes] = stage.keys  # type: ignore[assignment]
        timestamps: list[int] = stage.timestamps  # type: ignore[assignment]
        values: list[bytes] = stage.values  # type: ignore[assignment]  # bytes, as keys
        handles = stage.handles
        # Everything that could fail comes first, while the stage is untouched:
        # a stage that cannot be placed stays whole, for take_all() to fail it.
        # Keys and values of one length each (keys of one format, fixed-size
        # payloads), checked once here: for the hashes, the sizes and the run
        # encoder, none of which then looks again.
        klen = _common(list(map(len, keys)))
        vlen = _common(list(map(len, values)))
        lengths = None if klen is None or vlen is None else (klen, vlen)
        ids, count = self._key_placer(keys, klen)
        truns = time_runs(timestamps) if type(ids) is bytes else None
        groups: list[tuple[int, list[Any], list[tuple[int, int]] | None]] = []
        for pid, take in grouped(ids, count):
            # Each partition's columns: keys, values, timestamps, maybe handles;
            # the timestamps repeats of the stage's time runs when it has them.
            mine = None
            if truns is None:
                group = [take(keys), take(values), take(timestamps)]
            else:
                mine, column = partition_time_runs(truns, ids, pid)  # type: ignore[arg-type]
                group = [take(keys), take(values), column]
            if handles is not None:
                group.append(take(handles))
            groups.append((pid, group, mine))
        # Then the records move, batch by batch. An exception on the way (a
        # KeyboardInterrupt in the thread calling produce(), between any two
        # calls) before the stage points at where they went puts everything
        # back: else the records not yet moved were dropped with the stage,
        # and their futures never resolved.
        open_batches = self.open_batches
        before = [
            (pid, batch, len(batch.values), batch.size)
            for pid, _, _ in groups
            if (batch := open_batches.get(pid)) is not None
        ]
        ready = len(self._ready)
        closed = False
        segments: dict[int, tuple[list[int], list[tuple[ProducerBatch, int]]]] = {}
        try:
            self.stage = None  # in the try: Python 3.10 may interrupt any line
            for pid, group, mine in groups:
                runs = segments.setdefault(pid, ([], []))
                closed = self._extend(stage, pid, group, runs, mine, lengths) or closed
            stage.relocate(StageForward(ids, segments))
            if self.stage_gone is not None:
                self.stage_gone(stage)
        except BaseException:
            if stage.forward is None:  # relocated: the records are placed
                self._unplace(stage, groups, before, ready)
            raise
        # Only rebound, never emptied in place: a reader that took a column
        # before the forward was set still reads it whole (see DeliveryFuture).
        stage.values, stage.keys, stage.timestamps = [], None, None
        return closed

    def _unplace(
        self,
        stage: Stage,
        groups: list[tuple[int, list[Any], Any]],
        before: list[tuple[int, ProducerBatch, int, int]],
        ready: int,
    ) -> None:
        """Undo a placement cut short (see place_stage): the batches open
        before it cut back to their records and size, the ones it opened
        dropped, and the stage, untouched, the stage again."""
        for _, batch, n, size in before:
            batch.truncate(n)
            batch.size = size
        del self._ready[ready:]  # only this placement closed batches since
        for pid, _, _ in groups:
            self.open_batches.pop(pid, None)
        for pid, batch, _, _ in before:
            self.open_batches[pid] = batch
        self.stage = stage

    def _extend(
        self,
        stage: ProducerBatch,
        pid: int,
        columns: list[Any],
        segments: tuple[list[int], list[tuple[ProducerBatch, int]]],
        truns: list[tuple[int, int]] | None = None,
        lengths: tuple[int, int] | None = None,
    ) -> bool:
        """Append one partition's staged records (``columns``: keys, values,
        timestamps and maybe handles) to its open batch, opening and closing
        batches by ``max_records`` and ``max_bytes`` as append() does; notes
        in ``segments`` where each run of records went. ``truns``: their
        timestamps as ``(value, count)`` runs, for the run encoder;
        ``lengths``: the length of every key and every value, when the
        caller found them all one."""
        keys, values, timestamps = columns[0], columns[1], columns[2]
        handles = columns[3] if len(columns) > 3 else None
        n = len(values)
        # The usual case first: the whole group fits the partition's open (or a
        # new) batch and leaves it open. Its size without a size per record,
        # their running total and a bisect.
        if lengths is not None:
            total = n * (lengths[0] + lengths[1] + RECORD_OVERHEAD)
        else:
            klens = list(map(len, keys))
            vlens = list(map(len, values))
            total = sum(klens) + sum(vlens) + RECORD_OVERHEAD * n
            klen, vlen = _common(klens), _common(vlens)
            if klen is not None and vlen is not None:
                lengths = (klen, vlen)  # one each in this partition
        batch = self.open_batches.get(pid)
        had = 0 if batch is None else len(batch.values)
        if (
            had + n < self.max_records
            and (0 if batch is None else batch.size) + total <= self.max_bytes
            and (batch is None or batch.keys is not None)
        ):
            if batch is None:
                batch = self.open_batches[pid] = self._open(pid, stage.created)
                batch.keys = []
            if not had:
                batch.base_timestamp = timestamps[0]
            # Encoded here, where the records are still in this thread's
            # cache, before they join the batch: an interrupt in between
            # leaves a run that ends before them, which is never used.
            batch.add_run(values, keys, timestamps, had, lengths, truns)
            batch.values += values
            batch.keys += keys
            batch.timestamps += timestamps
            if batch.headers is not None:
                batch.headers += [None] * n
            if handles is not None and batch.handles is not None:
                batch.handles += handles
            batch.size += total
            segments[0].append(0)
            segments[1].append((batch, had))
            return False
        ends = list(accumulate(keyed_record_sizes(keys, values)))
        ends.insert(0, 0)  # ends[i]: bytes of the first i records
        closed = False
        start = 0
        while start < n:
            batch = self.open_batches.get(pid)
            if batch is None:
                batch = self.open_batches[pid] = self._open(pid, stage.created)
                batch.keys = []
            elif batch.keys is None:
                batch.keys = [None] * len(batch.values)
            had = len(batch.values)
            fits = bisect_right(ends, ends[start] + self.max_bytes - batch.size, start) - 1
            end = min(n, start + self.max_records - had, fits)
            if end == start and not had:
                end = start + 1  # an empty batch takes any record the front end let in
            if end > start:
                if not had:
                    batch.base_timestamp = timestamps[start]
                batch.add_run(
                    values[start:end], keys[start:end], timestamps[start:end], had, lengths
                )
                batch.values += values[start:end]
                batch.keys += keys[start:end]
                batch.timestamps += timestamps[start:end]
                if batch.headers is not None:
                    batch.headers += [None] * (end - start)
                if handles is not None and batch.handles is not None:
                    batch.handles += handles[start:end]
                batch.size += ends[end] - ends[start]
                segments[0].append(start)
                segments[1].append((batch, had))
            if end < n or len(batch.values) >= self.max_records:
                self.close(pid, batch)
                closed = True
            start = end
        return closed

    def append(
        self,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp: int,
        handle: Any,
        size: int,
        now: float,
    ) -> bool:
        """Add one record; True when a batch became ready to send."""
        batch = self.open_batches.get(partition)
        closed = False
        if batch is not None and batch.size + size > self.max_bytes:
            self.close(partition, batch)
            closed = True
            batch = None
        if batch is None:
            batch = self._open(partition, now)
            if self.int_handles:
                batch.handles = array("q")
            # Opened only once it holds the record: an exception in between
            # (a KeyboardInterrupt) must not leave an empty batch open.
            batch.append(key, value, headers, timestamp, handle, size)
            self.open_batches[partition] = batch
        else:
            batch.append(key, value, headers, timestamp, handle, size)
        self.last = batch
        if len(batch.values) >= self.max_records:
            self.close(partition, batch)
            closed = True
        return closed

    def _open(self, partition: int, now: float) -> ProducerBatch:
        """A new batch for ``partition`` (not listed as open yet)."""
        return ProducerBatch(self.topic, partition, now, self.owner, self.handles)

    def close(self, partition: int, batch: ProducerBatch) -> None:
        """``batch``, open for ``partition``, is full: ready to send."""
        del self.open_batches[partition]
        self._ready.append(batch)
        if self._on_new_batch is not None:
            self._on_new_batch(partition)

    def drain(
        self,
        now: float,
        force: bool = False,
        hold: Callable[[ProducerBatch], bool] | None = None,
    ) -> list[ProducerBatch]:
        """Batches to send now: full ones, those open for ``linger_s``, or all
        when ``force`` (flush, close, or the end of a synchronous call).

        ``hold(batch)`` True keeps a lingered batch open and filling: its
        partition could not send it yet anyway (see ``ProduceEngine.backlogged``).
        Full batches are never held. The stage is placed first when it has
        lingered too (or ``force``)."""
        stage = self.stage
        if stage is not None and (force or now - stage.created >= self.linger_s):
            self.place_stage()
        ready, self._ready = self._ready, []
        for partition, batch in list(self.open_batches.items()):
            if force or (
                now - batch.created >= self.linger_s and (hold is None or not hold(batch))
            ):
                self.close(partition, batch)
        ready.extend(self._ready)
        self._ready = []
        return ready

    def next_deadline(self, hold: Callable[[ProducerBatch], bool] | None = None) -> float | None:
        """When the oldest open batch not held (see :meth:`drain`) has lingered
        enough; None when there is none."""
        if self._ready:
            return 0.0
        created = [b.created for b in self.open_batches.values() if hold is None or not hold(b)]
        if self.stage is not None:
            created.append(self.stage.created)
        return min(created) + self.linger_s if created else None

    def take_all(self) -> list[ProducerBatch]:
        """Everything, ready or not (to fail it on close). A stage that cannot
        be placed (its placer raised) comes whole, as a batch of its own."""
        held, self.unassigned = self.unassigned, None
        if held is not None:
            return [*self.take_all(), held]
        try:
            return self.drain(0.0, force=True)
        except Exception:
            stage, self.stage = self.stage, None
            rest = self.drain(0.0, force=True)
            if stage is None:
                return rest
            # Its size, which the front end's inline path does not keep per
            # record (only this needs it).
            stage.size = staged_size(stage.keys or [], stage.values)  # type: ignore[arg-type]
            if self.stage_gone is not None:
                self.stage_gone(stage)
            return [*rest, stage]


class _ListForward:
    """:data:`~grete.producer.batch.Forward` of records placed one by one:
    record ``i`` went to ``targets[i]``."""

    __slots__ = ("_targets",)

    def __init__(self, targets: list[tuple[ProducerBatch, int]]) -> None:
        self._targets = targets

    def __call__(self, index: int) -> tuple[ProducerBatch, int]:
        return self._targets[index]


class StageForward:
    """Where a placed stage's records went (a ``ProducerBatch.forward``):
    record ``i`` went to partition ``ids[i]``, as the ``rank``-th of the
    stage's records for it; ``segments[pid]`` lists, for each batch those
    records were appended to, the first rank it took and the index it
    took it at. Costs the stage's front end nothing per record: the
    lookup (a C-level count over the ids) is paid by the reader."""

    __slots__ = ("_ids", "_segments")

    def __init__(
        self,
        ids: bytes | array[int],
        segments: dict[int, tuple[list[int], list[tuple[ProducerBatch, int]]]],
    ) -> None:
        self._ids, self._segments = ids, segments

    def __call__(self, index: int) -> tuple[ProducerBatch, int]:
        ids = self._ids
        pid = ids[index]
        rank = ids.count(pid, 0, index) if type(ids) is bytes else ids[:index].count(pid)
        starts, targets = self._segments[pid]
        k = bisect_right(starts, rank) - 1
        batch, first = targets[k]
        return batch, first + rank - starts[k]


class RecordAccumulator:
    """Every topic's :class:`Accumulator`, for a producer that sends to many:
    records keyed by (topic, partition), one set of batch bounds for all.
    The sender drains them together. Not thread-safe: callers hold their lock."""

    def __init__(
        self,
        *,
        max_records: int,
        max_bytes: int,
        linger_s: float,
        owner: Any = None,
    ) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self.owner = owner
        self.by_topic: dict[str, Accumulator] = {}

    def add_topic(
        self,
        topic: str,
        *,
        on_new_batch: Callable[[int], None] | None = None,
        key_placer: KeyPlacer | None = None,
        stage_gone: Callable[[Stage], None] | None = None,
    ) -> Accumulator:
        """The accumulator of a topic not seen before (its batches keep no
        handle column: futures point at batches, not the other way)."""
        acc = self.by_topic[topic] = Accumulator(
            topic,
            max_records=self.max_records,
            max_bytes=self.max_bytes,
            linger_s=self.linger_s,
            on_new_batch=on_new_batch,
            owner=self.owner,
            handles=False,
            key_placer=key_placer,
            stage_gone=stage_gone,
        )
        return acc

    def __len__(self) -> int:
        return sum(map(len, self.by_topic.values()))

    def drain(
        self,
        now: float,
        force: bool = False,
        hold: Callable[[ProducerBatch], bool] | None = None,
    ) -> list[ProducerBatch]:
        """Every topic's :meth:`Accumulator.drain`."""
        ready: list[ProducerBatch] = []
        for acc in self.by_topic.values():
            if len(acc):
                ready += acc.drain(now, force, hold)
        return ready

    def next_deadline(self, hold: Callable[[ProducerBatch], bool] | None = None) -> float | None:
        """The soonest :meth:`Accumulator.next_deadline` of any topic."""
        deadlines = [
            d
            for acc in self.by_topic.values()
            if len(acc) and (d := acc.next_deadline(hold)) is not None
        ]
        return min(deadlines) if deadlines else None

    def take_all(self) -> list[ProducerBatch]:
        """Every topic's :meth:`Accumulator.take_all`."""
        out: list[ProducerBatch] = []
        for acc in self.by_topic.values():
            out += acc.take_all()
        return out

    def unassigned(self) -> list[Accumulator]:
        """The topics holding records that wait for their partitions."""
        return [acc for acc in self.by_topic.values() if acc.unassigned is not None]
