"""What ``produce()`` returns: a :class:`DeliveryFuture`, a pointer to its
record (batch, index) that follows the record when it moves and reads the
outcome from the batch once the sender has set it.

The futures wait on their producer core's ``done_cond`` (the batch's
``owner``); see :mod:`grete.producer.core` for the lock order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from grete.errors import KafkaError, KafkaTimeoutError
from grete.producer.batch import ProducerBatch, add_watcher
from grete.producer.errors import ProducerClosedError
from grete.producer.message import DeliveryResult, Headers

log = logging.getLogger("grete.producer")

Callback = Callable[["DeliveryFuture"], None]

#: Why a forked child's copy of a producer refuses (its sender thread is not
#: in that process).
FORKED = "this producer was started in another process (fork); create a new one here"


def refuse_if_forked(core: object) -> None:
    """Raise in a forked child, for calls that would wait for the parent's
    sender thread (it does not run here: they would wait for ever)."""
    if getattr(core, "refusal", None) is FORKED:
        raise ProducerClosedError(FORKED)


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
    # without getattr (see ProducerCore.batch_done).
    __slots__ = ("_batch", "_callback", "_callbacks", "_index")
    # No __init__ (nor __new__): DeliveryFuture() is then the cheapest way to
    # make one (cheaper than object.__new__(DeliveryFuture)); produce()
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
        refuse_if_forked(owner)
        cond = owner.done_cond
        deadline = None if timeout is None else time.monotonic() + timeout
        with owner.done_lock:  # see ProducerCore.done_lock
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
        return DeliveryResult(
            batch.partition, base + i if base >= 0 else -1, append_time, batch.topic
        )

    def exception(self, timeout: float | None = None) -> KafkaError | None:
        return self._wait(timeout)[2][2]

    @property
    def maybe_written(self) -> bool:
        """For a failure: True when the message may still be in the log."""
        return self._where()[0].maybe_written

    def add_done_callback(self, fn: Callback) -> None:
        if not self.done():
            sender = self._batch.owner
            refuse_if_forked(sender)
            # Under done_cond: the sender sets outcomes, takes a batch's
            # watchers and moves them (relocated) under it, so fn is either
            # seen there or called here. Under the sender's lock first: see watch.
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
                        watch(batch, self)
                    return
        fn(self)


# List a future among those its batch visits when done. Two threads listing
# into one batch at once could lose one (add_watcher creates the list), so:
# produce() lists only into an open batch or the stage, under the sender's
# lock; add_done_callback() takes that lock and then done_cond's; the sender
# takes a finished batch's watchers, and moves a split batch's, under
# done_cond (those batches are not open: produce() never lists into them).
# Lock order: the sender's lock, then done_cond's, never the other way.
watch = add_watcher


def run_callback(fn: Callback, future: DeliveryFuture) -> None:
    try:
        fn(future)
    except Exception:  # a user's bug must not kill the sender thread
        log.exception("delivery callback raised")
