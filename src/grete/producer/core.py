"""The producer core: one sender thread, one buffer bound, one engine (and
so one producer id) for every topic a producer writes to.

Front ends add an API around it and nothing else: ``KafkaProducer`` (any
topic per message), ``BackgroundProducer`` (one topic). Per topic, a
:class:`~grete.producer.lane.TopicLane` turns ``produce()`` calls into
records in that topic's :class:`~grete.producer.accumulator.Accumulator`;
the core's thread drains every topic's batches into the engine, drives the
engine (:class:`~grete.producer.driver.Driver`), resolves futures and
releases the bound.

Locks, in the only order they are ever taken:

1. ``lock`` (an RLock, for its owner check: see ``fast.py``): the
   accumulators, the counts (``queued_messages``, ``queued_bytes``,
   ``reported``), ``refusal``, the lanes. ``space`` waits on it.
2. ``done_lock`` (``done_cond``'s): batch outcomes and watchers; futures
   wait on ``done_cond``.

The engine and driver are touched by the sender thread only.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from grete.cluster import Cluster, Topic
from grete.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartition, error_for_code
from grete.partitioners import DefaultPartitioner
from grete.producer.accumulator import Accumulator, RecordAccumulator
from grete.producer.batch import Forward, ProducerBatch, Stage, move_watchers
from grete.producer.driver import Driver
from grete.producer.errors import ProducerClosedError
from grete.producer.frontend import engine_for
from grete.producer.futures import FORKED, DeliveryFuture, refuse_if_forked, run_callback
from grete.producer.metrics import Metrics
from grete.producer.reports import ReportQueue
from grete.protocol.errors import error_info
from grete.protocol.records import BATCH_OVERHEAD

if TYPE_CHECKING:
    from grete.producer.config import ProducerConfig
    from grete.producer.fast import FastLane
    from grete.producer.transactions import TransactionManager

log = logging.getLogger("grete.producer")
metrics_log = logging.getLogger("grete.producer.metrics")

T = TypeVar("T")

# Error code of a topic the cluster does not list.
_UNKNOWN_TOPIC_OR_PARTITION = 3

# A sleep of the sender ends some 30-140 us after its timeout (timer slack,
# then the wake-up): it aims this much early and takes the batches due within
# it, so lingered batches leave close to their deadline (measured in
# benchmarks/_latency.py runs; see DESIGN.md).
SLACK_S = 0.00005

# Cores of this process: a child after fork() has their state but not their
# threads, so they are marked unusable there (checked once per produce()).
_live_cores: weakref.WeakSet[ProducerCore] = weakref.WeakSet()


def _mark_forked() -> None:
    for core in list(_live_cores):
        core.refuse_for_good(FORKED)
        # Fresh locks: one the parent's sender thread held at the fork stays
        # held here for ever (that thread is not in this process), and every
        # call that takes it, produce() included, would hang instead of
        # raising. Safe: this runs before the child has other threads.
        core.lock = threading.RLock()
        core.space = threading.Condition(core.lock)
        core.done_lock = threading.Lock()
        core.done_cond = threading.Condition(core.done_lock)


os.register_at_fork(after_in_child=_mark_forked)


def unused_slots(stage: Stage) -> int:
    """Queue slots produce() reserved for ``stage`` that no record took."""
    return max(0, stage.reserved_last + 1 - len(stage.values))


class ProducerCore:
    """The sender thread and every piece of state it shares with ``produce()``.

    Kept apart from the front ends so that the thread holds no reference to
    the user's object: a producer dropped without close() is collected,
    warned about and closed, instead of leaking a thread.
    """

    def __init__(self, cluster: Cluster, config: ProducerConfig) -> None:
        self.config = config
        # An RLock for its owner check, not for re-entry: produce() releases it in a
        # finally that must not release a lock another thread holds (see fast.py).
        self.lock = threading.RLock()
        self.space = threading.Condition(self.lock)  # produce() waits here when full
        # Taken as `with done_lock`, never `with done_cond`: Condition.__enter__ is
        # Python code, and a KeyboardInterrupt landing in it after the lock was
        # taken leaked it (the next produce() then blocked on it for ever).
        self.done_lock = threading.Lock()
        self.done_cond = threading.Condition(self.done_lock)  # result() waits here
        self.cluster = cluster
        self.network = cluster.network
        # One partitioner for every topic (grete's partitioners keep their
        # state per topic).
        self.partitioner: Any = (
            config.partitioner if config.partitioner is not None else DefaultPartitioner()
        )
        self.metrics = Metrics()
        self.engine = engine_for(config, self.batch_done, self.metrics)
        self.driver = Driver(self.engine, cluster)
        self.max_bytes = min(config.max_batch_bytes, config.max_request_size) - BATCH_OVERHEAD
        self.accs = RecordAccumulator(
            max_records=config.batch_size,
            max_bytes=self.max_bytes,
            linger_s=config.linger_s,
            owner=self,  # futures wait on this core's condition
        )
        # topic -> its lane; added to under the lock, read without it (a
        # front end may keep a reference: the dict is never replaced).
        self.lanes: dict[str, FastLane] = {}
        self.delivery_timeout_s = config.delivery_timeout_s
        # (future, error, bytes to release when it is read): a batch's bytes
        # go with its last report (see batch_done), each report's count with it.
        self.reports: ReportQueue[tuple[DeliveryFuture, KafkaError | None, int]] | None = (
            ReportQueue() if config.delivery_reports else None
        )
        self.metrics_log_interval_s = config.metrics_log_interval_s
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
        # Why produce() must refuse, once it must: closed, forked (the sender
        # thread is not in this process) or the sender thread died. One
        # attribute, so the inline path pays one check for all.
        self.refusal: str | None = None
        # What produce() raises with it (a transactional producer refuses
        # outside a transaction with TransactionStateError).
        self.refusal_type: type[KafkaError] = ProducerClosedError
        self._txn_refusal = False
        # A transactional producer's state machine (see transactions.py).
        self.txn: TransactionManager | None = None
        if config.transactional_id is not None:
            from grete.producer.transactions import NOT_IN_TRANSACTION, TransactionManager

            self.txn = TransactionManager(
                self, config.transactional_id, config.transaction_timeout_ms
            )
            self.driver.txn = self.txn
            self.refuse(NOT_IN_TRANSACTION)
        _live_cores.add(self)
        self.thread = threading.Thread(target=self.run, name="grete-sender", daemon=True)

    # -- refusals ------------------------------------------------------------

    def refuse(self, reason: str | None, kind: type[KafkaError] | None = None) -> None:
        """A transactional producer's refusal of produce() (outside a
        transaction: ``kind`` TransactionStateError by default), or None to
        allow it again. Never replaces a refusal for good (closed, forked,
        the sender died)."""
        from grete.producer.errors import TransactionStateError

        with self.lock:
            if self.refusal is None or self._txn_refusal:
                self.refusal = reason
                self.refusal_type = kind or TransactionStateError
                self._txn_refusal = reason is not None

    def refuse_for_good(self, reason: str) -> None:
        """Closed (or its thread gone): produce() raises ProducerClosedError."""
        self.refusal = reason
        self.refusal_type = ProducerClosedError
        self._txn_refusal = False

    def fail_unsent(self, error: KafkaError) -> None:
        """Fail every record not handed to the engine yet (an aborted
        transaction's): they were not written."""
        with self.lock:
            batches = self.accs.take_all()
        for batch in batches:
            self.batch_done(batch, -1, -1, error)

    # -- topics ------------------------------------------------------------

    def lane(self, name: str, topic: Topic | None = None) -> FastLane:
        """The lane of topic ``name`` (``topic``: its metadata when the
        caller has it), made on first use (see lane.py)."""
        lane = self.lanes.get(name)
        if lane is not None:
            return lane
        from grete.producer.fast import FastLane

        with self.lock:
            lane = self.lanes.get(name)
            if lane is None:
                lane = FastLane(self, name, topic)
                # Read without the lock: one store, atomic under the GIL.
                self.lanes[name] = lane
        return lane

    # -- counts --------------------------------------------------------------

    @property
    def unresolved(self) -> int:
        """Messages produced whose future is not resolved yet (what flush()
        waits for: a batch between the accumulator and the engine is in
        neither). Read without the lock, queued_messages first: a read
        racing _release, which lowers ``reported`` first, can only count
        one too many (never report a pending message resolved). Counts the
        open stages' unused reservations too (see unused_slots): flush()
        places the stages, which returns them."""
        return self.queued_messages - self.reported

    def stage_gone(self, stage: Stage) -> None:
        """The accumulators' ``stage_gone`` (under the lock): the queue slots
        produce() reserved for ``stage`` and its records did not take are
        free again (see fast.py's keyed path)."""
        unused = unused_slots(stage)
        stage.reserved_last = len(stage.values) - 1  # returned once
        if unused:
            self.queued_messages -= unused
            self.space.notify_all()

    def unused_slots(self) -> int:
        """Queue slots the open stages reserved that no record took yet,
        counted in ``queued_messages`` (call under the lock)."""
        return sum(
            unused_slots(acc.stage) for acc in self.accs.by_topic.values() if acc.stage is not None
        )

    def snapshot(self) -> dict[str, Any]:
        """What a front end's ``metrics()`` returns."""
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

    # -- the sender thread -------------------------------------------------

    def run(self) -> None:
        engine = self.engine
        accs = self.accs
        try:
            while True:
                now = time.monotonic()
                hold = self._holder(now)
                waiting: list[Accumulator] = []
                with self.lock:
                    force = self.flushing > 0 or self.closing
                    # Due within the timer slack: see SLACK_S.
                    batches = accs.drain(now + SLACK_S, force=force, hold=hold)
                    deadline = accs.next_deadline(hold)
                    closing = self.closing
                    if self.lanes and len(accs):
                        waiting = accs.unassigned()
                if waiting:
                    batches += self._assign(waiting, now)
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
                        if not len(accs):
                            break
                # (Waits end on time to the microsecond: see network._FINE_WAIT_S.)
                timeout = 0.1 if deadline is None else max(0.0, min(0.1, deadline - SLACK_S - now))
                if waiting:
                    timeout = min(timeout, self.config.retry_backoff_s)
                if self.txn is not None and self.txn.op is not None:
                    timeout = min(timeout, 0.005)  # a transaction call is waiting
                self.driver.step(timeout)
        except BaseException as exc:  # never die silently with messages queued
            log.exception("sender thread failed")
            error = exc if isinstance(exc, KafkaError) else KafkaError(f"sender failed: {exc!r}")
            with self.lock:
                # Under the lock that produce() queues under: a message is either
                # among the leftovers, failed below, or refused.
                self.refuse_for_good(f"the sender thread stopped: {error}")
                leftovers = accs.take_all()
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
                    self.space.notify_all()  # a produce() waiting for room: see wait_for_space

    def _assign(self, waiting: list[Accumulator], now: float) -> list[ProducerBatch]:
        """Topics whose records wait for their partitions: place them once
        the metadata lists the topic; fail them when it will not (an error
        that is not retriable, or ``unknown_topic_timeout_ms`` passed). Until
        then every metadata refresh asks for these topics (and for their
        creation, where the brokers auto-create topics). Returns the batches
        ready to send."""
        cluster = self.cluster
        driver = self.driver
        failed: list[tuple[ProducerBatch, KafkaError]] = []
        ready: list[ProducerBatch] = []
        wanted: set[str] = set()
        for acc in waiting:
            lane = self.lanes[acc.topic]
            topic = lane.current_topic()
            with self.lock:
                held = acc.unassigned
                if held is None:
                    continue
                if topic.partitions:
                    closed, rejected = acc.place_unassigned(lane.choose_partition, now)
                    if rejected is not None:
                        failed.append((rejected, lane.no_such_partition(rejected)))
                    if closed:
                        ready += acc.drain(now + SLACK_S)
                    continue
                code = cluster.topic_error(acc.topic)
                timed_out = now - held.created >= min(
                    self.config.unknown_topic_timeout_s, self.delivery_timeout_s
                )
                if code and not error_info(code).retriable:
                    error: KafkaError = error_for_code(code, f"topic {acc.topic!r}")
                elif timed_out:
                    error = _unknown_topic(acc.topic, code, self.config.unknown_topic_timeout_s)
                else:
                    wanted.add(acc.topic)
                    continue
                acc.unassigned = None
                failed.append((held, error))
        for batch, error in failed:
            self.batch_done(batch, -1, -1, error)
        if wanted:
            driver.wanted = wanted
            self.engine.needs_metadata = True
        else:
            driver.wanted = set()
        return ready

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
        the accumulators to the engine, so empty accumulators are the truth."""
        with self.lock:
            if len(self.accs):
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
        counters = self.metrics.topic(batch.topic)
        if error is not None:
            if self.txn is not None:
                self.txn.batch_failed(error)
            self.metrics.errors += n
            counters.errors += n
            # Seen even by an application that dropped its futures.
            log.warning("%d message(s) to %s/%d failed: %s", n, batch.topic, batch.partition, error)
        else:
            self.metrics.messages_sent += n
            self.metrics.bytes_sent += batch.size
            self.metrics.batches += 1
            counters.messages_sent += n
            counters.bytes_sent += batch.size
            counters.batches += 1
        with self.done_lock:
            batch.outcome = (base_offset, append_time, error)
            # Taken here, under the lock add_done_callback() adds to them under.
            watchers, batch.watchers = batch.watchers, None
            self.done_cond.notify_all()
        for f in watchers or ():
            # Read directly: every watcher has both slots set when it is
            # listed (getattr() of an unset slot raises and clears an
            # AttributeError inside, which costs more than the rest of this
            # loop); the fallback is for a watcher listed otherwise.
            try:
                first, later = f._callback, f._callbacks
            except AttributeError:
                first = getattr(f, "_callback", None)
                later = getattr(f, "_callbacks", None)
            if first is not None:
                try:  # inline, not run_callback: one call less a message
                    first(f)
                except Exception:  # a user's bug must not kill the sender thread
                    log.exception("delivery callback raised")
            if later:
                for fn in later:
                    run_callback(fn, f)
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
            self.release(n, batch.size)
        with self.done_lock:  # flush() waits for callbacks too
            self.done_cond.notify_all()

    def relocated(self, batch: ProducerBatch, forward: Forward) -> None:
        """``batch``'s records moved (a stage placed, a batch split; see
        ``ProducerBatch.relocate``): its watchers follow them. Under
        ``done_cond``, where add_done_callback() reads a future's batch and
        lists it, so a callback asked for meanwhile is never lost."""
        with self.done_lock:
            move_watchers(batch, forward)

    def release(self, count: int, size: int, read: int = 0) -> None:
        """``count`` messages and ``size`` bytes leave the queue, ``read``
        of them delivery reports just read."""
        with self.lock:
            self.reported -= read  # first: see unresolved
            self.queued_messages -= count
            self.queued_bytes -= size
            self.space.notify_all()

    # -- the front ends' calls -----------------------------------------------

    def flush(self, timeout: float | None) -> int:
        """Send everything queued and wait for its reports; how many messages
        are still unreported (0 unless ``timeout`` ran out)."""
        refuse_if_forked(self)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.lock:
            self.flushing += 1
        self.network.wakeup()
        try:
            while True:
                pending = self.unresolved > 0
                if not pending or self.stopped.is_set():
                    return 0 if not pending else self._unreported()
                if deadline is not None and time.monotonic() >= deadline:
                    return self._unreported()
                with self.done_lock:
                    self.done_cond.wait(0.01)
        finally:
            with self.lock:
                self.flushing -= 1

    def _unreported(self) -> int:
        with self.lock:
            return self.unresolved - self.unused_slots()

    def get_delivery_report(
        self, block: bool, timeout: float | None
    ) -> tuple[DeliveryFuture, KafkaError | None]:
        refuse_if_forked(self)
        reports = self.reports
        if reports is None:
            from grete.errors import ConfigurationError

            raise ConfigurationError(
                "delivery reports are off (delivery_reports=True turns them on)"
            )
        future, error, size = reports.get(block, timeout)
        self.release(1, size, read=1)
        return future, error

    def close(self, timeout: float | None) -> None:
        """Deliver or fail everything queued, then stop the sender thread,
        within ``timeout`` seconds (default: the delivery timeout)."""
        if self.refusal is FORKED:
            return  # the parent's: its sender thread delivers, in the parent
        # produce()'s inline paths check only the refusal: a closed producer refuses.
        if self.refusal is None or self._txn_refusal:
            self.refuse_for_good("produce() on a closed producer")
        if self.txn is not None:
            # An open transaction is not committed by close(): what is unsent is
            # failed (the coordinator aborts the transaction at its timeout).
            self.txn.closing()
        shutdown(self, self.delivery_timeout_s if timeout is None else timeout)


def _unknown_topic(name: str, code: int, wait_s: float) -> KafkaError:
    """The error of records whose topic never appeared in the metadata."""
    if code == _UNKNOWN_TOPIC_OR_PARTITION:
        return UnknownTopicOrPartition(
            f"topic {name!r} does not exist (not in the cluster's metadata after "
            f"{wait_s:g}s; unknown_topic_timeout_ms); the messages were not sent"
        )
    if code:
        return error_for_code(code, f"topic {name!r} not available after {wait_s:g}s")
    return KafkaTimeoutError(
        f"no metadata for topic {name!r} within {wait_s:g}s; the messages were not sent"
    )


def shutdown(core: ProducerCore, timeout: float) -> None:
    wait = timeout + 1.0

    def mark_closing() -> bool:
        core.closing = True
        core.space.notify_all()  # a produce() waiting for room: refused now
        return True

    if not _under_lock(core, wait, mark_closing):
        return
    core.network.wakeup()
    if not core.stopped.wait(timeout):
        # Out of time: fail what is left, so close() never hangs and nothing
        # is left unreported.
        error = KafkaTimeoutError(f"producer closed before delivery ({timeout:.1f}s)")
        for batch in _under_lock(core, wait, core.accs.take_all) or ():
            core.batch_done(batch, -1, -1, error)
        core.engine.closing_error = error
        core.network.wakeup()
        core.stopped.wait(1.0)
    # A sender thread that died leaves what was produced after its end in the
    # accumulator: fail that too, so nothing stays unreported after close().
    for batch in _under_lock(core, wait, core.accs.take_all) or ():
        core.batch_done(batch, -1, -1, ProducerClosedError("the sender thread had stopped"))


def _under_lock(core: ProducerCore, timeout: float, fn: Callable[[], T]) -> T | None:
    """``fn()`` under the core's lock, or None (logged) when the lock stays
    held for ``timeout`` seconds: close() is bounded even should a bug ever
    leak the lock. Interrupt-safe as produce()'s inline path is."""
    lock = core.lock
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


def abandoned(core: ProducerCore, kind: str) -> None:
    """The finalizer of a front end dropped without close()."""
    if core.refusal is FORKED:
        return  # a forked child's copy: the parent delivers (or warns)
    if core.queued_messages or not core.stopped.is_set():
        warnings.warn(
            f"a grete {kind} was garbage-collected without close(); "
            "closing it now (call close() or use it as a context manager)",
            ResourceWarning,
            stacklevel=2,
        )
        if core.refusal is None or core._txn_refusal:
            core.refuse_for_good("produce() on a closed producer")
        shutdown(core, core.delivery_timeout_s)
