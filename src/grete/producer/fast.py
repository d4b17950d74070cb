"""The hand-tuned per-message paths of ``produce()``: quarantined here.

:class:`FastLane` is a :class:`~grete.producer.lane.TopicLane` whose
``produce()`` handles the two common cases inline, and hands everything else
to the general path (``TopicLane._produce``), which checks it all:

* **unkeyed**: a ``bytes`` value, no key, headers, timestamp or partition,
  into the sticky partition's open batch when it has room;
* **keyed**: a ``bytes`` value and a ``bytes`` key with a Java-compatible
  partitioner, into the accumulator's :class:`~grete.producer.batch.Stage`,
  whose records are placed in their partitions all at once
  (``Accumulator.place_stage``, every ``STAGE_MAX`` records and when the
  stage has lingered). Hashing keys in bulk costs less per record and keeps
  the GIL in this thread (see DESIGN.md, "Invariants").

The contract these paths keep (``tests/unit/producer/test_background_fast_path.py``
holds them against the general path):

1. **Same result as the general path.** They build exactly the columns
   ``Accumulator.append`` / ``ProducerBatch.append`` build (keys and headers
   columns appear only when a record needs them, padded with None), count
   the same bytes (``record_size``) against the same bounds, close a batch
   at the same record, and point the future at the same (batch, index).
   Any case they are not sure of goes to the general path, never half done.
2. **The lock protocol.** The core's lock is an RLock, taken by
   ``acquire()`` *inside* the ``try`` and released in the ``finally``,
   whose ``RuntimeError`` (an RLock released by a thread that does not own
   it) is swallowed: a KeyboardInterrupt lands only at a call, a function
   entry or a backward jump, so either before ``acquire()`` took the lock
   (the release then fails, harmlessly) or inside the ``try``. Taking it
   before the ``try`` leaked it when an interrupt landed in between, and
   the sender froze. (``with`` would be as safe, and costs more per message.)
3. **Regions without calls.** A record's columns are appended under a
   ``try`` that truncates them back (``ProducerBatch.truncate``) if an
   interrupt lands between two appends; after the last append, the counts
   are stored by call-free statements, which nothing can interrupt. Counts
   left too high by an interrupt elsewhere are settled by the sender
   (``ProducerCore._settle_counts``).
4. **Reserve, never under-count.** A new stage reserves queue slots for its
   records at once (up to ``STAGE_MAX`` and the bound) instead of counting
   one per message; the core returns the unused ones when the stage is
   placed or taken (``ProducerCore.stage_gone``). A stage past its
   reservation is never appended to (the general path places it first).
5. **Order.** Staged keyed records and records held for a topic's
   partitions (``Accumulator.unassigned``) were produced before anything
   that comes after them: the unkeyed path refuses while a stage is open,
   the keyed path opens no stage while records are held.
6. **Watchers.** A future with a callback (or every future, with delivery
   reports) is listed in its batch's watchers under the core's lock, with
   both callback slots set (see ``futures.watch``).

Costs here are mostly object allocations and C calls, not bytecodes; a
change is measured with ``benchmarks/bench_instructions.py``, which counts
the instructions of each path per message.
"""

from __future__ import annotations

import time
from typing import Any

from grete.producer.accumulator import RECORD_OVERHEAD
from grete.producer.futures import Callback, DeliveryFuture, watch
from grete.producer.lane import TopicLane

# The clocks, as module globals (benchmarks/bench_instructions.py swaps the
# first for a counted one). Milliseconds as time_ns() // 1e6: cheaper than
# int(time() * 1000).
_time_ns = time.time_ns
_monotonic = time.monotonic

#: produce() places the stage once it holds this many keyed records.
STAGE_MAX = 1024


class FastLane(TopicLane):
    """A :class:`~grete.producer.lane.TopicLane` with the inline paths."""

    def produce(
        self,
        value: Any,
        partition_key: Any = None,
        timestamp: int | None = None,
        headers: Any = None,
        partition: int | None = None,
        callback: Callback | None = None,
    ) -> DeliveryFuture:
        """Queue one message; returns its :class:`DeliveryFuture` at once (or
        blocks while the queue is full, per ``block_on_queue_full``). The
        two inline paths are the module docstring's; everything else goes
        through :meth:`_produce`."""
        if (
            type(value) is not bytes
            or timestamp is not None
            or headers is not None
            or partition is not None
        ):
            return self._produce(value, partition_key, timestamp, headers, partition, callback)
        # Two inline paths, each with only the checks its case needs. The
        # lock is taken as contract 2 says: acquire() inside the try.
        if partition_key is not None:
            # Keyed: into the stage. Only this path appends to it (the
            # general path places it first), so its key column is a list
            # and it has no headers.
            if type(partition_key) is not bytes or not self._plain_keyed:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            size = len(value) + len(partition_key) + RECORD_OVERHEAD
            if size > self._max_record:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            ts = _time_ns() // 1_000_000
            core = self._core
            lock = core.lock
            try:
                lock.acquire()
                stage = self._acc.stage
                if stage is None and self._topic.partitions and self._acc.unassigned is None:
                    # (A stage open already can be placed: the key placer
                    # keeps the last partition count it saw.)
                    room = self._max_queued_messages - core.queued_messages
                    if room > 0:
                        # Queue slots for its records reserved at once, not
                        # counted one a message (an int made and freed each):
                        # it is placed once they are taken, and those its
                        # records leave are returned then (ProducerCore.stage_gone).
                        stage = self._acc.new_stage(_monotonic())
                        room = min(room, STAGE_MAX)
                        core.queued_messages += room
                        stage.reserved_last = room - 1
                if (
                    stage is None  # no partitions known, or no room: see the full path
                    or (queued_bytes := core.queued_bytes + size)
                    > self._max_buffer_bytes  # (computed once: see the unkeyed path)
                    or core.refusal is not None  # (closed too: see close())
                    # Past its reservation: a stage that could not be placed.
                    or (index := len(values := stage.values)) > stage.reserved_last
                ):
                    future = None  # not the simple case: the full path decides
                else:
                    try:
                        values.append(value)
                        stage.timestamps.append(ts)  # type: ignore[union-attr]
                        stage.keys.append(partition_key)  # type: ignore[union-attr]
                        # No calls from here to the end of the try (see the unkeyed path).
                        # (No stage.size: only a stage failed whole needs it,
                        # and Accumulator.take_all counts it then.)
                        core.queued_bytes = queued_bytes
                    except BaseException:
                        stage.truncate(index)  # see the unkeyed path
                        raise
                    future = DeliveryFuture()
                    future._batch = stage
                    future._index = index
                    if callback is not None or self._watch_all:
                        future._callback = callback  # see the unkeyed path
                        future._callbacks = None
                        watch(stage, future)
                    # The stage full: placed. Its index 0 when that made a
                    # batch ready (for the wake-up below; the future has it).
                    if index >= stage.reserved_last and self._acc.place_stage():
                        index = 0
            finally:
                try:  # noqa: SIM105
                    lock.release()
                except RuntimeError:
                    pass
            if future is None:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            # A new stage must be placed within linger_ms, and the sender may sleep
            # longer; a ready batch goes now.
            if not index:
                core.network.wakeup()
            return future
        # Unkeyed: into the sticky partition's open batch.
        size = len(value) + RECORD_OVERHEAD
        if size > self._max_record or not self._plain:
            return self._produce(value, partition_key, timestamp, headers, partition, callback)
        ts = _time_ns() // 1_000_000
        core = self._core
        acc = self._acc
        full = False
        lock = core.lock
        try:
            lock.acquire()
            pid = self._sticky[0]
            batch = acc.open_batches.get(pid)  # type: ignore[arg-type]
            # The two new sizes computed once, each checked here and
            # stored below (each sum makes a new int).
            if (
                batch is None
                or (batch_size := batch.size + size) > acc.max_bytes
                or acc.stage is not None  # staged keyed records go first
                or core.queued_messages >= self._max_queued_messages
                or (queued_bytes := core.queued_bytes + size) > self._max_buffer_bytes
                or core.refusal is not None  # (closed too: see close())
            ):
                future = None  # not the simple case: the full path decides
            else:
                values = batch.values
                index = len(values)
                try:
                    values.append(value)
                    batch.timestamps.append(ts)  # type: ignore[union-attr]
                    if batch.keys is not None:
                        batch.keys.append(None)
                    if batch.headers is not None:
                        batch.headers.append(None)
                    # No calls from here to the end of the try: nothing
                    # can interrupt between these, nor after them within it.
                    batch.size = batch_size
                    core.queued_messages += 1
                    core.queued_bytes = queued_bytes
                except BaseException:
                    # A KeyboardInterrupt between two column appends:
                    # undone, else every later record is misaligned.
                    batch.truncate(index)
                    raise
                future = DeliveryFuture()
                future._batch = batch
                future._index = index
                if callback is not None or self._watch_all:
                    future._callback = callback  # both, on every watcher:
                    future._callbacks = None  # see batch_done
                    watch(batch, future)  # under the lock: see futures.watch
                if index >= self._last_index:  # the batch is full
                    acc.close(pid, batch)  # type: ignore[arg-type]
                    full = True
        finally:
            # Not contextlib.suppress: its __enter__ is Python, interruptible.
            try:  # noqa: SIM105
                lock.release()
            except RuntimeError:  # acquire() was interrupted: not ours
                pass
        if future is None:
            return self._produce(value, partition_key, timestamp, headers, partition, callback)
        if full:
            core.network.wakeup()  # a full batch goes now
        return future
