"""The background producer: ``produce()`` returns at once, a sender thread
batches (``linger_ms``), sends, retries, and reports every delivery.

It is the same engine, accumulator and driver as the synchronous producer;
only the threading around them lives here.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
import weakref
from array import array
from collections.abc import Callable
from typing import Any, TypeVar

from grete.cluster import Cluster, Partition, Topic
from grete.errors import ConfigurationError, KafkaError, KafkaTimeoutError, MessageSizeTooLarge
from grete.partitioners import DefaultPartitioner, StickyPartitioner, java_key_hash
from grete.producer.accumulator import RECORD_OVERHEAD, Accumulator, KeyPlacer, record_size
from grete.producer.batch import Forward, ProducerBatch, add_watcher, move_watchers
from grete.producer.driver import Driver
from grete.producer.engine import ProduceEngine
from grete.producer.errors import (
    InvalidMessageError,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.producer.grouping import java_ids
from grete.producer.message import DeliveryResult, Headers, to_bytes, to_headers
from grete.producer.metrics import Metrics
from grete.producer.reports import ReportQueue
from grete.protocol.compression import CompressionType, validate_level
from grete.protocol.records import BATCH_OVERHEAD

log = logging.getLogger("grete.producer")
metrics_log = logging.getLogger("grete.producer.metrics")


Callback = Callable[["DeliveryFuture"], None]

_time_ns = time.time_ns  # ms timestamps as time_ns() // 1e6: 3x cheaper than int(time() * 1000)
_monotonic = time.monotonic

T = TypeVar("T")

# Senders of this process: a child after fork() has their state but not their
# threads, so they are marked unusable there (checked once per produce()).
_live_senders: weakref.WeakSet[_Sender] = weakref.WeakSet()


def _mark_forked() -> None:
    for sender in list(_live_senders):
        sender.refusal = _FORKED
        # Fresh locks: one the parent's sender thread held at the fork stays
        # held here for ever (that thread is not in this process), and every
        # call that takes it, produce() included, would hang instead of
        # raising. Safe: this runs before the child has other threads.
        sender.lock = threading.RLock()
        sender.space = threading.Condition(sender.lock)
        sender.done_lock = threading.Lock()
        sender.done_cond = threading.Condition(sender.done_lock)


def _refuse_if_forked(sender: _Sender) -> None:
    """Raise in a forked child, for calls that would wait for the parent's
    sender thread (it does not run here: they would wait for ever)."""
    if sender.refusal is _FORKED:
        raise ProducerClosedError(_FORKED)


_FORKED = "this producer was started in another process (fork); create a new one here"


os.register_at_fork(after_in_child=_mark_forked)


class DeliveryFuture:
    """The outcome of one ``produce()``: ``result(timeout)`` gives the
    :class:`~grete.DeliveryResult` or raises the failure. Lighter than
    ``concurrent.futures.Future`` (one per message adds up), with the same
    reading methods: ``done()``, ``result()``, ``exception()``, ``add_done_callback()``.

    It is only a pointer to its record (batch, index): the message, the
    outcome and the condition to wait on all live in the batch, so making
    one costs two stores, and completing a batch costs nothing per message
    unless someone asked for a callback. Batches do not point back (only
    at futures with callbacks, their ``watchers``): a future its caller
    drops is freed at once, never left for the cyclic GC. When records
    move (a stage placed, a batch split) the old batch's ``forward`` says
    where; a future follows it when read. ``key``/``value`` read the record back.
    """

    # _callback (produce()'s) and _callbacks (add_done_callback()'s) are set
    # only on a future that becomes a watcher, and then both (None when not
    # given): the hot path never pays for them, and the sender reads them
    # without getattr (see _Sender.batch_done).
    __slots__ = ("_batch", "_callback", "_callbacks", "_index")
    # No __init__ (nor __new__): DeliveryFuture() is then the cheapest way to
    # make one (~25 ns less than object.__new__(DeliveryFuture)); produce()
    # sets _batch and _index right after.

    _batch: ProducerBatch
    _index: int
    _callback: Callback | None
    _callbacks: list[Callback] | None

    def _where(self) -> tuple[ProducerBatch, int]:
        """The batch that holds our record now, and its index there."""
        batch, index = self._batch, self._index
        while (forward := batch.forward) is not None:
            batch, index = forward(index)
        return batch, index

    def _record(self) -> tuple[bytes | None, bytes | None, Headers | None]:
        """Our record's value, key and headers."""
        while True:
            batch, i = self._where()
            values, keys, headers = batch.values, batch.keys, batch.headers
            # A stage's columns are dropped (rebound) only after its forward is
            # set: columns read before that are whole, and if the forward is
            # set now we follow it.
            if batch.forward is None:
                return (
                    values[i],
                    None if keys is None else keys[i],
                    None if headers is None else headers[i],
                )

    @property
    def key(self) -> bytes | None:
        return self._record()[1]

    @property
    def value(self) -> bytes | None:
        return self._record()[0]

    def __repr__(self) -> str:
        outcome = self._where()[0].outcome
        if outcome is None:
            return "<DeliveryFuture pending>"
        return f"<DeliveryFuture {outcome[2] or self.result()}>"

    def done(self) -> bool:
        return self._where()[0].outcome is not None

    def _wait(
        self, timeout: float | None
    ) -> tuple[ProducerBatch, int, tuple[int, int, KafkaError | None]]:
        """Our record's final batch and index, and the batch's outcome."""
        batch, index = self._where()
        outcome = batch.outcome
        if outcome is not None:
            return batch, index, outcome
        owner = batch.owner
        _refuse_if_forked(owner)
        cond = owner.done_cond
        deadline = None if timeout is None else time.monotonic() + timeout
        with owner.done_lock:  # see _Sender.done_lock
            while True:
                batch, index = self._where()  # followed again: it may have moved
                if (outcome := batch.outcome) is not None:
                    return batch, index, outcome
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise KafkaTimeoutError("delivery not reported within the timeout")
                cond.wait(left)

    def result(self, timeout: float | None = None) -> DeliveryResult:
        # A batch with an outcome never moves again: its columns are final.
        batch, i, (base, append_time, error) = self._wait(timeout)
        if error is not None:
            raise error
        if append_time < 0:
            append_time = batch.base_timestamp if batch.timestamps is None else batch.timestamps[i]
        return DeliveryResult(batch.partition, base + i if base >= 0 else -1, append_time)

    def exception(self, timeout: float | None = None) -> KafkaError | None:
        return self._wait(timeout)[2][2]

    @property
    def maybe_written(self) -> bool:
        """For a failure: True when the message may still be in the log."""
        return self._where()[0].maybe_written

    def add_done_callback(self, fn: Callback) -> None:
        if not self.done():
            sender = self._batch.owner
            _refuse_if_forked(sender)
            # Under done_cond: the sender sets outcomes, takes a batch's
            # watchers and moves them (relocated) under it, so fn is either
            # seen there or called here. Under the sender's lock first: see _watch.
            with sender.lock, sender.done_lock:
                batch, index = self._where()
                if batch.outcome is None:
                    watched = (
                        sender.reports is not None
                        or getattr(self, "_callback", None) is not None
                        or getattr(self, "_callbacks", None) is not None
                    )
                    callbacks = getattr(self, "_callbacks", None)
                    if callbacks is None:
                        self._callbacks = [fn]
                    else:
                        callbacks.append(fn)
                    if not watched:
                        # A watcher points at its batch itself (see move_watchers),
                        # and has both callback slots set (see batch_done).
                        self._callback = None
                        self._batch, self._index = batch, index
                        _watch(batch, self)
                    return
        fn(self)


# List a future among those its batch visits when done. Two threads listing
# into one batch at once could lose one (add_watcher creates the list), so:
# produce() lists only into an open batch or the stage, under the sender's
# lock; add_done_callback() takes that lock and then done_cond's; the sender
# takes a finished batch's watchers, and moves a split batch's, under
# done_cond (those batches are not open: produce() never lists into them).
# Lock order: the sender's lock, then done_cond's, never the other way.
_watch = add_watcher


def _run_callback(fn: Callback, future: DeliveryFuture) -> None:
    try:
        fn(future)
    except Exception:  # a user's bug must not kill the sender thread
        log.exception("delivery callback raised")


class _Sender:
    """The sender thread and every piece of state it shares with produce().

    Kept apart from :class:`BackgroundProducer` so that the thread holds no
    reference to the user's object: a producer dropped without close() is
    collected, warned about and closed, instead of leaking a thread.
    """

    def __init__(self, owner: BackgroundProducer, cluster: Cluster, engine: ProduceEngine) -> None:
        # An RLock for its owner check, not for re-entry: produce() releases it in a
        # finally that must not release a lock another thread holds (see produce()).
        self.lock = threading.RLock()
        self.space = threading.Condition(self.lock)  # produce() waits here when full
        # Taken as `with done_lock`, never `with done_cond`: Condition.__enter__ is
        # Python code, and a KeyboardInterrupt landing in it after the lock was
        # taken leaked it (the next produce() then blocked on it for ever).
        self.done_lock = threading.Lock()
        self.done_cond = threading.Condition(self.done_lock)  # result() waits here
        self.cluster = cluster
        self.network = cluster.network
        self.engine = engine
        self.driver = Driver(engine, cluster)
        self.acc: Accumulator = owner._acc
        self.delivery_timeout_s = owner._delivery_timeout_s
        # (future, error, bytes to release when it is read): a batch's bytes
        # go with its last report (see batch_done), each report's count with it.
        self.reports: ReportQueue[tuple[DeliveryFuture, KafkaError | None, int]] | None = (
            ReportQueue() if owner._delivery_reports else None
        )
        self.metrics = owner._metrics
        self.metrics_log_interval_s = owner._metrics_log_interval_s
        self.next_metrics_log = time.monotonic() + self.metrics_log_interval_s
        self.queued_messages = 0
        self.queued_bytes = 0
        # With delivery reports on: messages reported and not read yet, still
        # counted in queued_messages. Unresolved ones (what flush() waits for)
        # are the difference (see unresolved): produce() counts a message once.
        self.reported = 0
        self.flushing = 0
        self.closing = False
        self.stopped = threading.Event()
        # Why produce() must refuse, once it must: forked (the sender thread is
        # not in this process) or the sender thread died. One attribute, so the
        # inline path pays one check for both.
        self.refusal: str | None = None
        _live_senders.add(self)
        self.thread = threading.Thread(target=self.run, name="grete-sender", daemon=True)

    @property
    def unresolved(self) -> int:
        """Messages produced whose future is not resolved yet (what flush()
        waits for: a batch between the accumulator and the engine is in
        neither). Read without the lock, queued_messages first: a read
        racing _release, which lowers ``reported`` first, can only count
        one too many (never report a pending message resolved). Counts the
        open stage's unused reservation too (see unused_slots): flush() places
        the stage, which returns it."""
        return self.queued_messages - self.reported

    def stage_gone(self, stage: ProducerBatch) -> None:
        """The Accumulator's ``stage_gone`` (under the lock): the queue slots
        produce() reserved for ``stage`` and its records did not take are
        free again (see produce()'s keyed path)."""
        unused = _unused_slots(stage)
        stage.stage_last = len(stage.values) - 1  # returned once
        if unused:
            self.queued_messages -= unused
            self.space.notify_all()

    def snapshot(self) -> dict[str, Any]:
        """What ``BackgroundProducer.metrics()`` returns."""
        out = self.metrics.snapshot()
        with self.lock:
            out["queued_messages"] = self.queued_messages - self.unused_slots()
            out["queued_bytes"] = self.queued_bytes
        return out

    def log_metrics(self, now: float) -> None:
        """The periodic DEBUG log of :meth:`snapshot` (see metrics_log_interval_ms)."""
        self.next_metrics_log = now + self.metrics_log_interval_s
        if metrics_log.isEnabledFor(logging.DEBUG):
            metrics_log.debug("producer metrics: %s", self.snapshot())

    def unused_slots(self) -> int:
        """Queue slots the open stage reserved that no record took yet,
        counted in ``queued_messages`` (call under the lock)."""
        stage = self.acc.stage
        return 0 if stage is None else _unused_slots(stage)

    # -- the sender thread -------------------------------------------------

    def run(self) -> None:
        engine = self.engine
        try:
            while True:
                now = time.monotonic()
                hold = self._holder(now)
                with self.lock:
                    force = self.flushing > 0 or self.closing
                    # Due within the timer slack: see _SLACK_S.
                    batches = self.acc.drain(now + _SLACK_S, force=force, hold=hold)
                    deadline = self.acc.next_deadline(hold)
                    closing = self.closing
                for batch in batches:
                    engine.add(batch)
                engine.expire(now, self._deadline_of)
                if now >= self.next_metrics_log:
                    self.log_metrics(now)
                if engine.closing_error is not None:
                    engine.fail_all(engine.closing_error)
                    self.driver.abandon_in_flight(engine.closing_error)
                if engine.idle and (
                    self.unresolved
                    or (self.reports is None and (self.queued_messages or self.queued_bytes))
                ):
                    self._settle_counts()
                if closing and engine.idle:
                    with self.lock:
                        if not len(self.acc):
                            break
                # (Waits end on time to the microsecond: see network._FINE_WAIT_S.)
                timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - _SLACK_S - now))
                self.driver.step(timeout)
        except BaseException as exc:  # never die silently with messages queued
            log.exception("sender thread failed")
            error = exc if isinstance(exc, KafkaError) else KafkaError(f"sender failed: {exc!r}")
            with self.lock:
                # Under the lock that produce() queues under: a message is either
                # among the leftovers, failed below, or refused.
                self.refusal = f"the sender thread stopped: {error}"
                leftovers = self.acc.take_all()
            for batch in leftovers:  # batch_done takes the lock itself
                self.batch_done(batch, -1, -1, error)
            # Requests in flight too: nobody is left to read their answers.
            # closing_error first, so that none of them is put back for a retry.
            engine.closing_error = error
            self.driver.abandon_in_flight(error)
            engine.fail_all(error)
        finally:
            try:
                if self.metrics_log_interval_s != math.inf:
                    self.log_metrics(time.monotonic())  # the last word: what it did in all
            finally:
                self.stopped.set()
                with self.lock:
                    self.space.notify_all()  # a produce() waiting for room: see _wait_for_space

    def _holder(self, now: float) -> Callable[[ProducerBatch], bool]:
        """Which lingered batches stay open and filling: those whose partition
        has batches waiting to be sent already (sending them now would only
        queue one more small batch, each needing its own request). Never past
        half the delivery timeout, so a held batch still gets its retries."""
        backlogged = self.engine.backlogged
        oldest = now - self.delivery_timeout_s / 2

        def hold(batch: ProducerBatch) -> bool:
            return batch.created > oldest and backlogged(batch.topic, batch.partition)

        return hold

    def _settle_counts(self) -> None:
        """Nothing queued and nothing in flight: nothing is unresolved either.
        Counts that say otherwise were left by a produce() interrupted (a
        KeyboardInterrupt) after counting its message and before queuing it;
        flush() and close() would wait on them for ever. Called on the sender
        thread with the engine idle, the only thread that moves batches from
        the accumulator to the engine, so an empty accumulator is the truth."""
        with self.lock:
            if len(self.acc):
                return
            log.warning(
                "counts reset: %d message(s) unresolved, %d (%d bytes) queued, "
                "none in the accumulator",
                self.unresolved,
                self.queued_messages,
                self.queued_bytes,
            )
            if self.reports is None:
                self.queued_messages = self.queued_bytes = 0
            else:
                # With delivery reports on, reported messages are released as the
                # reports are taken: only those stay counted.
                self.queued_messages = self.reported
            self.space.notify_all()
        with self.done_lock:
            self.done_cond.notify_all()

    def _deadline_of(self, batch: ProducerBatch) -> float:
        return batch.created + self.delivery_timeout_s

    def batch_done(
        self, batch: ProducerBatch, base_offset: int, append_time: int, error: KafkaError | None
    ) -> None:
        """Complete ``batch`` (called on the sender thread). Futures read the
        outcome from the batch: nothing per message here unless a callback
        or delivery reports want it."""
        n = len(batch.values)
        if error is not None:
            self.metrics.errors += n
            # Seen even by an application that dropped its futures.
            log.warning("%d message(s) to %s/%d failed: %s", n, batch.topic, batch.partition, error)
        else:
            self.metrics.messages_sent += n
            self.metrics.bytes_sent += batch.size
            self.metrics.batches += 1
        with self.done_lock:
            batch.outcome = (base_offset, append_time, error)
            # Taken here, under the lock add_done_callback() adds to them under.
            watchers, batch.watchers = batch.watchers, None
            self.done_cond.notify_all()
        for f in watchers or ():
            # Read directly: every watcher has both slots set when it is
            # listed. getattr() of an unset slot raises and clears an
            # AttributeError inside (~0.27 us a message, more than the rest of
            # this loop); the fallback is for a watcher listed otherwise.
            try:
                first, later = f._callback, f._callbacks
            except AttributeError:
                first = getattr(f, "_callback", None)
                later = getattr(f, "_callbacks", None)
            if first is not None:
                try:  # inline, not _run_callback: one call less a message
                    first(f)
                except Exception:  # a user's bug must not kill the sender thread
                    log.exception("delivery callback raised")
            if later:
                for fn in later:
                    _run_callback(fn, f)
        if self.reports is not None:
            # With reports on, every future is a watcher, in record order.
            # The batch's bytes are released with its last report (all of them
            # stay counted until then: a little over, never under, the bound),
            # not a record's size computed back at each read.
            reports = [(f, error, 0) for f in watchers or ()]
            if reports:
                reports[-1] = (reports[-1][0], error, batch.size)
            self.reports.put_many(reports)
            with self.lock:
                self.reported += n
        else:
            self._release(n, batch.size)
        with self.done_lock:  # flush() waits for callbacks too
            self.done_cond.notify_all()

    def relocated(self, batch: ProducerBatch, forward: Forward) -> None:
        """``batch``'s records moved (a stage placed, a batch split; see
        ``ProducerBatch.relocate``): its watchers follow them. Under
        ``done_cond``, where add_done_callback() reads a future's batch and
        lists it, so a callback asked for meanwhile is never lost."""
        with self.done_lock:
            move_watchers(batch, forward)

    def _release(self, count: int, size: int, read: int = 0) -> None:
        """``count`` messages and ``size`` bytes leave the queue, ``read``
        of them delivery reports just read."""
        with self.lock:
            self.reported -= read  # first: see unresolved
            self.queued_messages -= count
            self.queued_bytes -= size
            self.space.notify_all()


class BackgroundProducer:
    """Produce without waiting: each ``produce()`` returns a :class:`DeliveryFuture`.

    pykafka 2.x's asynchronous producer with its users' complaints answered:
    ``linger_ms`` defaults to 5 (not 5 s), memory is bounded by
    ``max_queued_messages`` and ``max_buffer_bytes`` whatever the broker does,
    ``stop()`` never hangs, and every message is reported, success or failure.

    :param required_acks: -1 by default (as Kafka 4's Java client), idempotent.
    :param linger_ms: how long a batch may wait to fill up (a float: fractions
        of a millisecond count; a lingered batch typically leaves within 0.1 ms of it).
    :param batch_size: the most messages per batch; ``max_batch_bytes`` the most bytes.
    :param max_queued_messages: bound on messages not yet reported
        (acknowledged, failed, or, with ``delivery_reports``, read)...
    :param max_buffer_bytes: ...and on their bytes (records' encoded sizes:
        the memory they take is more, by Python's per-object overhead and,
        for keyed records until their batch is sent, an encoded copy).
    :param block_on_queue_full: block ``produce()`` up to ``queue_full_timeout_ms``
        when the bound is reached (then raise), or raise at once.
    :param delivery_timeout_ms: the most time from ``produce()`` to a report
        (a request in flight then gets at least 1 s: see docs/guarantees.rst).
    :param delivery_reports: keep a queue of ``(future, error)`` for
        :meth:`get_delivery_report` (pykafka's style); its entries count
        against ``max_queued_messages`` until read, and a batch's bytes
        against ``max_buffer_bytes`` until its last report is read.
    :param serializer: turns non-bytes values into bytes.
    :param key_serializer: turns non-bytes keys into bytes.
    :param metrics_log_interval_ms: how often the sender thread logs
        :meth:`metrics` to the ``grete.producer.metrics`` logger at DEBUG
        (and once more when it stops); 0 turns it off. Nothing is built
        while that logger is not enabled for DEBUG.
    """

    def __init__(
        self,
        cluster: Cluster,
        topic: Topic,
        partitioner: Any = None,
        compression: CompressionType | int = CompressionType.NONE,
        max_retries: int = 2_147_483_647,
        retry_backoff_ms: int = 100,
        required_acks: int = -1,
        ack_timeout_ms: int = 30_000,
        batch_size: int = 10_000,
        *,
        linger_ms: float = 5,
        max_batch_bytes: int = 1 << 20,
        compression_level: int | None = None,
        max_request_size: int = 1 << 20,
        max_queued_messages: int = 100_000,
        max_buffer_bytes: int = 64 << 20,
        block_on_queue_full: bool = True,
        queue_full_timeout_ms: float = 60_000,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 5,
        enable_idempotence: bool | None = None,
        delivery_reports: bool = False,
        serializer: Callable[[Any], bytes] | None = None,
        key_serializer: Callable[[Any], bytes] | None = None,
        retry_backoff_max_ms: int = 1_000,
        metrics_log_interval_ms: float = 60_000,
    ) -> None:
        if not isinstance(cluster, Cluster) or not isinstance(topic, Topic):
            raise ConfigurationError("pass client.cluster and client.topics[name]")
        compression = CompressionType(compression)
        validate_level(compression, compression_level)
        if required_acks not in (0, 1, -1):
            raise ConfigurationError(f"required_acks must be 0, 1 or -1, not {required_acks!r}")
        if enable_idempotence is None:
            enable_idempotence = required_acks == -1
        elif enable_idempotence and required_acks != -1:
            raise ConfigurationError("enable_idempotence needs required_acks=-1")
        for name, value, lo in (
            ("batch_size", batch_size, 1),
            ("max_queued_messages", max_queued_messages, 1),
            ("max_buffer_bytes", max_buffer_bytes, 1024),
            ("max_batch_bytes", max_batch_bytes, 1024),
            ("max_request_size", max_request_size, 1024),
            ("max_retries", max_retries, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ConfigurationError(f"{name} must be an integer >= {lo}, not {value!r}")
        for name, fvalue in (
            ("linger_ms", linger_ms),
            ("delivery_timeout_ms", delivery_timeout_ms),
            ("queue_full_timeout_ms", queue_full_timeout_ms),
            ("metrics_log_interval_ms", metrics_log_interval_ms),
        ):
            if not isinstance(fvalue, (int, float)) or fvalue < 0:
                raise ConfigurationError(f"{name} must be >= 0, not {fvalue!r}")
        if not 1 <= max_in_flight <= (5 if enable_idempotence else 1000):
            raise ConfigurationError("max_in_flight must be 1..5 with idempotence")
        self._cluster, self._topic = cluster, topic
        self._partitioner = partitioner if partitioner is not None else DefaultPartitioner()
        self._on_new_batch = getattr(self._partitioner, "on_new_batch", None)
        # The sticky partition for unkeyed messages, kept here so produce()
        # need not ask the partitioner per message; updated when a batch closes.
        self._sticky: list[int | None] = [None]
        self._parts_cache: list[Partition] = []
        # Whether the partitioner sticks to one partition for unkeyed messages
        # until told a batch closed (then _sticky is all produce() needs).
        self._sticky_partitioner = type(self._partitioner) is StickyPartitioner
        # Java's murmur2 for keyed messages, computed inline (None: ask the partitioner).
        self._key_hash = java_key_hash(self._partitioner)
        self._serializer, self._key_serializer = serializer, key_serializer
        # produce()'s inline path takes only values it need not convert.
        self._plain = serializer is None and key_serializer is None
        self._plain_keyed = self._plain and self._key_hash is not None
        self._max_record = min(max_batch_bytes, max_request_size) - BATCH_OVERHEAD
        self._max_queued_messages = max_queued_messages
        self._max_buffer_bytes = max_buffer_bytes
        self._block = block_on_queue_full
        self._queue_full_timeout_s = queue_full_timeout_ms / 1000
        self._delivery_timeout_s = delivery_timeout_ms / 1000
        self._metrics_log_interval_s = metrics_log_interval_ms / 1000 or math.inf
        self._delivery_reports = delivery_reports
        # Every future is visited when its batch is done (to be reported).
        self._watch_all = delivery_reports
        self._metrics = Metrics()
        # The index of a batch's last record: produce() compares its index with
        # it, as `index + 1 >= batch_size` made a new int (past 256) a message.
        self._last_index = batch_size - 1
        self._acc = Accumulator(
            topic.name,
            max_records=batch_size,
            max_bytes=min(max_batch_bytes, max_request_size) - BATCH_OVERHEAD,
            linger_s=linger_ms / 1000,
            on_new_batch=_sticky_hook(topic, self._on_new_batch, self._sticky),
            key_placer=None if self._key_hash is None else _key_placer(topic),
            handles=False,  # futures point at batches, not the other way (DeliveryFuture)
        )
        engine = ProduceEngine(
            on_done=lambda *a: None,
            acks=required_acks,
            timeout_ms=int(ack_timeout_ms),
            compression=compression,
            compression_level=compression_level,
            max_retries=max_retries,
            delivery_timeout_s=delivery_timeout_ms / 1000,
            retry_backoff_s=retry_backoff_ms / 1000,
            retry_backoff_max_s=retry_backoff_max_ms / 1000,
            max_request_size=max_request_size,
            max_in_flight=max_in_flight,
            idempotent=enable_idempotence,
            metrics=self._metrics,
        )
        self._sender = sender = _Sender(self, cluster, engine)
        self._acc.owner = sender  # futures wait on the sender's condition
        self._acc.stage_gone = sender.stage_gone  # returns the stage's reservations
        engine.on_done = sender.batch_done
        self._closed = False
        sender.thread.start()
        self._finalizer = weakref.finalize(self, _abandoned, sender)

    def __repr__(self) -> str:
        return f"<grete.BackgroundProducer topic={self._topic.name!r}>"

    # -- producing ---------------------------------------------------------

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
        blocks while the queue is full, per ``block_on_queue_full``).

        The hot path of the background producer, paid per message: a bytes
        value with no key or a bytes key, going into a batch that is open
        and has room, takes the inline path below; everything else (the
        first message of a batch, headers, explicit partitions and
        timestamps, serializers, a full queue, every error) goes through
        :meth:`_produce`, which validates it all.
        """
        if (
            type(value) is not bytes
            or timestamp is not None
            or headers is not None
            or partition is not None
        ):
            return self._produce(value, partition_key, timestamp, headers, partition, callback)
        # Two inline paths, one per case, each with only the checks it
        # needs (a shared path paid ~80 ns a message for the other's).
        # acquire() inside the try, release() in the finally, not `with`
        # (which costs ~0.12 us more a message). Safe against a
        # KeyboardInterrupt only as written: CPython raises it after a
        # call returns (or at a backward jump or function entry), so it
        # lands either before acquire() took the lock (release() then
        # raises RuntimeError: an RLock checks its owner) or inside the
        # try. acquire() before the try leaked the lock: the sender froze.
        if partition_key is not None:
            # Keyed, with a Java-compatible partitioner: into the
            # accumulator's stage, whose records are placed in their
            # partitions all at once (Accumulator.place_stage, every
            # _STAGE_MAX records and when the stage has lingered). Hashing
            # keys in bulk costs less per record, and keeps the GIL here:
            # the extension releases it per call, which let the sender
            # thread in after every message and cut batches short. Only
            # this path appends to the stage (the full path places it
            # first), so its key column is a list and it has no headers.
            if type(partition_key) is not bytes or not self._plain_keyed:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            size = len(value) + len(partition_key) + RECORD_OVERHEAD
            if size > self._max_record:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            ts = _time_ns() // 1_000_000
            sender = self._sender
            lock = sender.lock
            try:
                lock.acquire()
                stage = self._acc.stage
                if stage is None and self._topic.partitions:
                    # (A stage open already can be placed: the key placer
                    # keeps the last partition count it saw.)
                    room = self._max_queued_messages - sender.queued_messages
                    if room > 0:
                        # Queue slots for its records reserved at once, not
                        # counted one a message (an int made and freed each):
                        # it is placed once they are taken, and those its
                        # records leave are returned then (_Sender.stage_gone).
                        stage = self._acc.new_stage(_monotonic())
                        room = min(room, _STAGE_MAX)
                        sender.queued_messages += room
                        stage.stage_last = room - 1
                if (
                    stage is None  # no partitions known, or no room: see the full path
                    or (queued_bytes := sender.queued_bytes + size)
                    > self._max_buffer_bytes  # (computed once: see the unkeyed path)
                    or sender.refusal is not None  # (closed too: see close())
                    # Past its reservation: a stage that could not be placed.
                    or (index := len(values := stage.values)) > stage.stage_last
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
                        sender.queued_bytes = queued_bytes
                    except BaseException:
                        stage.truncate(index)  # see the unkeyed path
                        raise
                    future = DeliveryFuture()
                    future._batch = stage
                    future._index = index
                    if callback is not None or self._watch_all:
                        future._callback = callback  # see the unkeyed path
                        future._callbacks = None
                        _watch(stage, future)
                    # The stage full: placed. Its index 0 when that made a
                    # batch ready (for the wake-up below; the future has it).
                    if index >= stage.stage_last and self._acc.place_stage():
                        index = 0
            finally:
                try:  # noqa: SIM105
                    lock.release()
                except RuntimeError:
                    pass
            if future is None:
                return self._produce(value, partition_key, timestamp, headers, partition, callback)
            # A new stage must be placed within linger_ms, and the sender may sleep
            # longer; a ready batch goes now. (No flag for either: two bytecodes
            # less a message.)
            if not index:
                sender.network.wakeup()
            return future
        # Unkeyed: into the sticky partition's open batch.
        size = len(value) + RECORD_OVERHEAD
        if size > self._max_record or not self._plain:
            return self._produce(value, partition_key, timestamp, headers, partition, callback)
        ts = _time_ns() // 1_000_000
        sender = self._sender
        acc = self._acc
        full = False
        lock = sender.lock
        try:
            lock.acquire()
            pid = self._sticky[0]
            batch = acc.open_batches.get(pid)  # type: ignore[arg-type]
            # The two new sizes computed once, each checked here and
            # stored below (each sum makes an int: ~150 instructions).
            if (
                batch is None
                or (batch_size := batch.size + size) > acc.max_bytes
                or acc.stage is not None  # staged keyed records go first
                or sender.queued_messages >= self._max_queued_messages
                or (queued_bytes := sender.queued_bytes + size) > self._max_buffer_bytes
                or sender.refusal is not None  # (closed too: see close())
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
                    sender.queued_messages += 1
                    sender.queued_bytes = queued_bytes
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
                    _watch(batch, future)  # under the lock: see _watch
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
            sender.network.wakeup()  # a full batch goes now
        return future

    def _produce(
        self,
        value: Any,
        partition_key: Any,
        timestamp: int | None,
        headers: Any,
        partition: int | None,
        callback: Callback | None,
    ) -> DeliveryFuture:
        """:meth:`produce` for every case, with every check."""
        sender = self._sender
        if self._closed or sender.refusal is not None:
            raise ProducerClosedError(sender.refusal or "produce() on a closed producer")
        if self._serializer is not None and value is not None:
            value = self._serializer(value)
        if self._key_serializer is not None and partition_key is not None:
            partition_key = self._key_serializer(partition_key)
        v = value if type(value) is bytes else to_bytes(value, "value", 0)
        k = partition_key
        if k is not None and type(k) is not bytes:
            k = to_bytes(k, "key", 0)
        h = None if headers is None else to_headers(headers, 0)
        size = record_size(k, v, h)
        if timestamp is None:
            ts = _time_ns() // 1_000_000
        elif type(timestamp) is int and timestamp >= 0:
            ts = timestamp
        else:
            raise InvalidMessageError(
                f"timestamp must be a non-negative int (ms), not {timestamp!r}"
            )
        if size > self._max_record:
            raise MessageSizeTooLarge(
                f"message of {size} bytes is over max_request_size/max_batch_bytes; not sent"
            )
        if partition is not None:
            if partition not in self._topic.partitions:
                raise InvalidMessageError(
                    f"topic {self._topic.name!r} has no partition {partition!r}"
                )
            pid = partition
        elif k is None and self._sticky[0] is not None:
            pid = self._sticky[0]
        else:
            pid = self._partitioner(self._partition_list(), k).id
            if k is None and self._sticky_partitioner:
                # Unkeyed messages stay on this partition until its batch
                # closes (then the hook picks the next): no need to ask again.
                self._sticky[0] = pid
        future = DeliveryFuture()
        with sender.lock:
            if sender.refusal is not None:  # the sender died since the check above
                raise ProducerClosedError(sender.refusal)
            acc = self._acc
            # Staged keyed records were produced before this one: placed first,
            # they stay first (and the queue slots their stage reserved and did
            # not use are free again before the bounds are checked).
            placed = acc.stage is not None and acc.place_stage()
            if (
                sender.queued_messages >= self._max_queued_messages
                or sender.queued_bytes + size > self._max_buffer_bytes
            ):
                self._wait_for_space(size)
                if acc.stage is not None:  # staged by another thread meanwhile
                    placed = acc.place_stage() or placed
            sender.queued_messages += 1
            sender.queued_bytes += size
            full = acc.append(pid, k, v, h, ts, None, size, _monotonic()) or placed
            batch = acc.last
            assert batch is not None
            future._batch = batch
            future._index = index = len(batch.values) - 1
            if callback is not None or self._watch_all:
                future._callback = callback  # both, on every watcher: see batch_done
                future._callbacks = None
                _watch(batch, future)  # under the sender's lock: see _watch
        if full or index == 0:
            # A full batch goes now; a new one must be looked at within
            # linger_ms, and the sender may be asleep for longer than that.
            sender.network.wakeup()
        return future

    def _partition_list(self) -> list[Partition]:
        """The topic's partitions by id. Partition objects are updated in
        place by metadata refreshes, so the list only changes with the count."""
        parts = self._topic.partitions
        cached = self._parts_cache
        if len(cached) != len(parts):
            cached = self._parts_cache = self._topic.partition_list()
        return cached

    def _wait_for_space(self, size: int) -> None:
        """Called with the sender lock held."""
        sender = self._sender
        if not self._block:
            raise ProducerQueueFullError(
                f"{sender.queued_messages} messages / {sender.queued_bytes} bytes queued"
            )
        deadline = time.monotonic() + self._queue_full_timeout_s
        while True:
            # Closed meanwhile, or the sender died: refused, even with room now
            # (nobody would drain what went into the accumulator).
            if sender.refusal is not None:
                raise ProducerClosedError(sender.refusal)
            if (
                sender.queued_messages < self._max_queued_messages
                and sender.queued_bytes + size <= self._max_buffer_bytes
            ):
                return
            left = deadline - time.monotonic()
            if left <= 0 or sender.stopped.is_set():
                raise ProducerQueueFullError(
                    f"queue still full after {self._queue_full_timeout_s:.1f}s "
                    f"({sender.queued_messages} messages, {sender.queued_bytes} bytes)"
                )
            sender.space.wait(left)

    def get_delivery_report(
        self, block: bool = True, timeout: float | None = None
    ) -> tuple[DeliveryFuture, KafkaError | None]:
        """pykafka's delivery reports: ``(future, error)``; raises ``queue.Empty``."""
        _refuse_if_forked(self._sender)
        reports = self._sender.reports
        if reports is None:
            raise ConfigurationError(
                "delivery reports are off (delivery_reports=True turns them on)"
            )
        future, error, size = reports.get(block, timeout)
        self._sender._release(1, size, read=1)
        return future, error

    def flush(self, timeout: float | None = None) -> int:
        """Send everything queued and wait for its reports; returns how many
        messages are still unreported (0 unless ``timeout`` ran out)."""
        sender = self._sender
        _refuse_if_forked(sender)
        deadline = None if timeout is None else time.monotonic() + timeout
        with sender.lock:
            sender.flushing += 1
        sender.network.wakeup()
        try:
            while True:
                pending = sender.unresolved > 0
                if not pending or sender.stopped.is_set():
                    return 0 if not pending else self._unreported()
                if deadline is not None and time.monotonic() >= deadline:
                    return self._unreported()
                with sender.done_lock:
                    sender.done_cond.wait(0.01)
        finally:
            with sender.lock:
                sender.flushing -= 1

    def _unreported(self) -> int:
        sender = self._sender
        with sender.lock:
            return sender.unresolved - sender.unused_slots()

    def close(self, timeout: float | None = None) -> None:
        """Deliver or fail everything queued, then stop the sender thread.

        Bounded: within ``timeout`` seconds (default: ``delivery_timeout_ms``)
        every queued message has been reported, failed ones with the reason.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        if self._sender.refusal is _FORKED:
            return  # the parent's: its sender thread delivers, in the parent
        # produce()'s inline paths check only the refusal: a closed producer refuses.
        if self._sender.refusal is None:
            self._sender.refusal = "produce() on a closed producer"
        _shutdown(self._sender, self._delivery_timeout_s if timeout is None else timeout)

    def stop(self) -> None:
        """pykafka's name for :meth:`close`."""
        self.close()

    def metrics(self) -> dict[str, Any]:
        """Counters and timings: messages/bytes sent, batches, retries, errors,
        queue depth, request latency percentiles (ms). The sender thread also
        logs them at DEBUG (see ``metrics_log_interval_ms``)."""
        return self._sender.snapshot()

    def __enter__(self) -> BackgroundProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# produce() places the stage once it holds this many keyed records.
_STAGE_MAX = 1024

# A sleep of the sender ends some 30-140 us after its timeout (Linux's default timer
# slack is 50 us, then the wake-up; ~70 us typical on this project's machines). It
# aims 50 us early and takes the batches due within 50 us, so lingered batches leave
# ~20 us after their deadline on average, not ~70 (Java's linger counts whole ms).
# 10,000 msgs/s on one broker, twelve latency runs before, six after: p50 3.4-3.7 ->
# 3.3-3.6 ms, p99 5.9-7.2 -> 5.8-6.1 ms (confluent-kafka 6.2-8.2, then 6.2-7.0 ms).
_SLACK_S = 0.00005


def _unused_slots(stage: ProducerBatch) -> int:
    """Queue slots produce() reserved for ``stage`` that no record took."""
    return max(0, stage.stage_last + 1 - len(stage.values))


def _key_placer(topic: Topic) -> KeyPlacer:
    """The Accumulator's ``key_placer``: every key's partition at once
    (``grouping.java_ids``), and the topic's partition count (the last one
    seen, should a metadata refresh ever leave the topic without partitions)."""
    last = [len(topic.partitions)]

    def place(keys: list[bytes], length: int | None) -> tuple[bytes | array[int], int]:
        partitions = len(topic.partitions) or last[0]
        last[0] = partitions
        return java_ids(keys, partitions, length), partitions

    return place


def _sticky_hook(topic: Topic, hook: Any, cell: list[int | None]) -> Callable[[int], None] | None:
    """The accumulator's batch-closed hook (a closure, not a bound method, so the
    sender thread keeps no reference to the producer object). ``cell`` gets the
    partitioner's new sticky partition."""
    if hook is None:
        return None

    def closed(partition: int) -> None:
        chosen = hook(topic.partition_list(), partition)
        cell[0] = chosen if isinstance(chosen, int) else None

    return closed


def _shutdown(sender: _Sender, timeout: float) -> None:
    wait = timeout + 1.0

    def mark_closing() -> bool:
        sender.closing = True
        sender.space.notify_all()  # a produce() waiting for room: refused now
        return True

    if not _under_lock(sender, wait, mark_closing):
        return
    sender.network.wakeup()
    if not sender.stopped.wait(timeout):
        # Out of time: fail what is left, so close() never hangs and nothing
        # is left unreported.
        error = KafkaTimeoutError(f"producer closed before delivery ({timeout:.1f}s)")
        for batch in _under_lock(sender, wait, sender.acc.take_all) or ():
            sender.batch_done(batch, -1, -1, error)
        sender.engine.closing_error = error
        sender.network.wakeup()
        sender.stopped.wait(1.0)
    # A sender thread that died leaves what was produced after its end in the
    # accumulator: fail that too, so nothing stays unreported after close().
    for batch in _under_lock(sender, wait, sender.acc.take_all) or ():
        sender.batch_done(batch, -1, -1, ProducerClosedError("the sender thread had stopped"))


def _under_lock(sender: _Sender, timeout: float, fn: Callable[[], T]) -> T | None:
    """``fn()`` under the sender lock, or None (logged) when the lock stays
    held for ``timeout`` seconds: close() is bounded even should a bug ever
    leak the lock. Interrupt-safe as produce()'s inline path is."""
    lock = sender.lock
    try:
        if not lock.acquire(timeout=timeout):
            log.error("close(): the producer's lock stayed held for %.1fs; not waiting", timeout)
            return None
        return fn()
    finally:
        try:  # noqa: SIM105 (contextlib.suppress is Python code: interruptible)
            lock.release()
        except RuntimeError:  # not acquired
            pass


def _abandoned(sender: _Sender) -> None:
    if sender.refusal is _FORKED:
        return  # a forked child's copy: the parent delivers (or warns)
    if sender.queued_messages or not sender.stopped.is_set():
        warnings.warn(
            "a grete BackgroundProducer was garbage-collected without close(); "
            "closing it now (call close() or use it as a context manager)",
            ResourceWarning,
            stacklevel=2,
        )
        _shutdown(sender, sender.delivery_timeout_s)
