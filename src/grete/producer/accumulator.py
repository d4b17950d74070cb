"""Open batches per partition, filled record by record and handed to the engine
when full or when they have lingered long enough.

Both front ends batch through this class: the synchronous producer appends a
whole ``produce()`` call and drains everything at once; the background
producer appends from user threads and its sender drains what is ready.
It does no I/O and reads no clock: callers pass ``now``.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from grete.producer.batch import ProducerBatch
from grete.producer.message import Headers

# Bytes a record adds around its key and value (length, attributes,
# timestamp and offset deltas, key/value lengths, header count): an upper
# bound for records under 16 KiB, used to bound batch and request sizes.
RECORD_OVERHEAD = 21


def record_size(key: bytes | None, value: bytes | None, headers: Headers | None) -> int:
    size = RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    if headers:
        size += sum(len(h) + len(v or b"") + 10 for h, v in headers)
    return size


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
        # partition -> the batch its records go into now. Public for a front
        # end's fast path, which may append to an open batch directly (under
        # its lock) and then must call close() when the batch is full.
        self.open_batches: dict[int, ProducerBatch] = {}
        self._ready: list[ProducerBatch] = []
        # The batch the last append() went into (its record is the last one):
        # lets a front end point its delivery handle at the batch.
        self.last: ProducerBatch | None = None

    def __len__(self) -> int:
        return len(self.open_batches) + len(self._ready)

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
            batch = ProducerBatch(self.topic, partition, now, self.owner)
            if self.int_handles:
                batch.handles = array("q")
            self.open_batches[partition] = batch
        batch.append(key, value, headers, timestamp, handle, size)
        self.last = batch
        if len(batch.values) >= self.max_records:
            self.close(partition, batch)
            closed = True
        return closed

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
        Full batches are never held."""
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
        return min(created) + self.linger_s if created else None

    def take_all(self) -> list[ProducerBatch]:
        """Everything, ready or not (to fail it on close)."""
        return self.drain(0.0, force=True)
