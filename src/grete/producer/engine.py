"""The send engine shared by every producer front end.

It decides *what* to send and what each answer means, and never does I/O
itself: a driver (the blocking ``Producer.produce``, the background sender
thread, an asyncio task) asks :meth:`ProduceEngine.plan` for requests, sends
them however it likes, and feeds the outcome back through
:meth:`ProduceEngine.on_response` / :meth:`ProduceEngine.on_transport_error`.

What it owns:

* per-partition queues, kept in send order, with at most ``max_in_flight``
  requests per broker and only the head of a partition's queue eligible, so
  a retry never overtakes an earlier batch;
* idempotence: producer id/epoch, per-partition sequence numbers assigned
  when a batch is first sent and kept across retries (so the broker drops
  duplicates), and an epoch bump when a sequence gap is unavoidable;
* the error table: retry with exponential backoff and jitter, metadata
  refresh on stale-metadata errors, splitting of batches the broker finds too
  large, and a bounded number of attempts.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from grete._backoff import backoff_ceiling
from grete.errors import (
    KafkaError,
    LeaderNotAvailable,
    MessageSizeTooLarge,
    StillConnecting,
    error_for_code,
)
from grete.producer.batch import ProducerBatch
from grete.producer.metrics import Metrics
from grete.protocol.compression import CompressionType
from grete.protocol.errors import error_info

# Error codes with a meaning of their own here (protocol/errors.py has them all).
_MESSAGE_TOO_LARGE = 10
_RECORD_LIST_TOO_LARGE = 18
_OUT_OF_ORDER_SEQUENCE = 45
_DUPLICATE_SEQUENCE = 46
_UNKNOWN_PRODUCER_ID = 59
# A transactional Produce that came while the coordinator still writes the last
# transaction's markers (transactions v2): sent again shortly.
_CONCURRENT_TRANSACTIONS = 51
# REQUEST_TIMED_OUT and NOT_ENOUGH_REPLICAS_AFTER_APPEND: written on the leader.
_APPENDED_CODES = (7, 20)
# How soon a batch waiting for a handshake looks again (the connect thread also
# wakes the driver when it is done).
_CONNECTING_RECHECK_S = 0.005

_SEQUENCE_WRAP = 1 << 31


def _order(batch: ProducerBatch) -> tuple[int, ...]:
    return batch.order


# (batch, base_offset, log_append_time_ms, error)
DoneCallback = Callable[[ProducerBatch, int, int, "KafkaError | None"], None]


@dataclass
class Plan:
    """One Produce request to send: to ``node_id``, carrying ``batches``."""

    node_id: int
    body: dict[str, Any]
    batches: list[ProducerBatch]
    expect_response: bool
    sent_at: float = 0.0


@dataclass
class _PartitionState:
    queue: list[ProducerBatch] = field(default_factory=list)  # sorted by batch.order
    in_flight: int = 0
    # Send-order places of the batches in flight (to tell earlier from later).
    in_flight_orders: list[tuple[int, ...]] = field(default_factory=list)
    next_sequence: int = 0
    next_order: int = 0
    # A batch of this partition was acknowledged (under idempotence: under the
    # current producer id and epoch, so the broker holds our state and checks
    # every sequence) and none has failed since. Until then one batch at a time:
    # with two in flight, a failed first one and an accepted second one would
    # swap places in the log. That is what a fresh topic does (its first
    # request answered NOT_LEADER, the next one accepted), and under
    # idempotence a broker with no state for us takes *any* first sequence.
    confirmed: bool = False


class ProduceEngine:
    """See the module docstring. Not thread-safe: one driver owns it."""

    def __init__(
        self,
        *,
        on_done: DoneCallback,
        acks: int,
        timeout_ms: int,
        compression: CompressionType = CompressionType.NONE,
        compression_level: int | None = None,
        max_retries: int = 3,
        retry_backoff_s: float = 0.1,
        retry_backoff_max_s: float = 1.0,
        max_request_size: int = 1 << 20,
        max_in_flight: int = 5,
        idempotent: bool = False,
        delivery_timeout_s: float = 120.0,
        transactional_id: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.on_done = on_done
        self.acks = acks
        self.timeout_ms = timeout_ms
        self.compression = compression
        self.compression_level = compression_level
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.retry_backoff_max_s = retry_backoff_max_s
        self.max_request_size = max_request_size
        self.max_in_flight = max_in_flight
        self.idempotent = idempotent
        # The bound on a batch's whole life; waiting for a leader (which spends
        # no attempts) ends here at the latest.
        self.delivery_timeout_s = delivery_timeout_s
        self.transactional_id = transactional_id
        self.producer_id = -1
        self.producer_epoch = -1
        # Set when a sequence gap cannot be avoided (a batch failed for good,
        # or was split): sending pauses until nothing is in flight, then the
        # driver bumps the epoch (InitProducerId) and sequences restart at 0.
        self.needs_epoch_bump = False
        self.needs_metadata = False
        self._partitions: dict[tuple[str, int], _PartitionState] = {}
        self._node_in_flight: dict[int, int] = {}
        self._queued = 0
        self.in_flight = 0
        # The requests counted in in_flight, by id(plan): what abandon_in_flight()
        # gives up on, whether or not a driver got as far as sending them.
        self._plans: dict[int, Plan] = {}
        self.metrics = metrics if metrics is not None else Metrics()
        # Set when the producer is closing out of time: nothing is retried any more.
        self.closing_error: KafkaError | None = None
        # gate(topic, partition): may this partition's head be sent now? (A
        # transactional producer's: only once the partition joined the transaction.)
        self.gate: Callable[[str, int], bool] | None = None

    # -- state -------------------------------------------------------------

    @property
    def needs_producer_id(self) -> bool:
        return self.idempotent and (self.producer_id < 0 or self.needs_epoch_bump)

    @property
    def idle(self) -> bool:
        return self._queued == 0 and self.in_flight == 0

    @property
    def queued(self) -> int:
        return self._queued

    def topics(self) -> set[str]:
        """The topics this engine has sent to (or queued for)."""
        return {topic for (topic, _) in self._partitions}

    def backlogged(self, topic: str, partition: int) -> bool:
        """Whether a new batch for this partition would only wait here: some of
        its batches are not sent yet, or it has ``max_in_flight`` requests out.
        A front end keeps filling its open batch meanwhile (as the Java client
        does), rather than queueing many small ones that each need a request."""
        state = self._partitions.get((topic, partition))
        return state is not None and (bool(state.queue) or state.in_flight >= self._limit(state))

    def _limit(self, state: _PartitionState) -> int:
        """Batches of a partition that may be in flight at once (see ``confirmed``)."""
        return self.max_in_flight if state.confirmed else 1

    def set_producer_id(self, producer_id: int, epoch: int) -> None:
        """Adopt a new identity; every partition's sequence restarts at 0.

        A queued batch that went out under the old identity without an
        answer saying whether it landed (``maybe_written``) is failed here,
        not resent: under the new identity the broker could not recognise it
        as a duplicate, so it might be written twice. Its error says it may
        be in the log (the Java client fails such batches too)."""
        from grete.producer.errors import OutcomeUnknownError

        self.producer_id, self.producer_epoch = producer_id, epoch
        self.needs_epoch_bump = False
        for state in self._partitions.values():
            state.next_sequence = 0
            state.confirmed = False
            keep = []
            for batch in state.queue:
                if batch.maybe_written and batch.base_sequence is not None:
                    self._queued -= 1
                    self._finish(batch, -1, -1, OutcomeUnknownError(batch.topic, batch.partition))
                    continue
                batch.base_sequence = None
                keep.append(batch)
            state.queue = keep

    def _state(self, batch: ProducerBatch) -> _PartitionState:
        key = (batch.topic, batch.partition)
        state = self._partitions.get(key)
        if state is None:
            state = self._partitions[key] = _PartitionState()
        return state

    # -- queueing ----------------------------------------------------------

    def add(self, batch: ProducerBatch) -> None:
        """Queue a new batch behind every earlier batch of its partition."""
        state = self._state(batch)
        batch.order = (state.next_order,)
        state.next_order += 1
        state.queue.append(batch)
        self._queued += 1

    def _requeue(
        self, batch: ProducerBatch, state: _PartitionState, now: float, *, count: bool
    ) -> None:
        """Put a batch back in its place (by original order) for another try.
        Its partition goes back to one batch at a time until one lands."""
        state.confirmed = False
        if count:
            backoff = backoff_ceiling(
                self.retry_backoff_s, self.retry_backoff_max_s, batch.attempts
            )
            batch.retry_at = now + backoff * random.uniform(0.8, 1.2)
        bisect.insort(state.queue, batch, key=_order)
        self._queued += 1

    def _finish(
        self, batch: ProducerBatch, offset: int, append_time: int, error: KafkaError | None
    ) -> None:
        batch.release_encoding()  # a finished batch is never sent again
        self.on_done(batch, offset, append_time, error)

    def fail_all(self, error: KafkaError) -> None:
        """Fail every queued batch (on close, or when the producer id is lost)."""
        for state in self._partitions.values():
            batches, state.queue = state.queue, []
            self._queued -= len(batches)
            for batch in batches:
                self._gap(batch)
                self._finish(batch, -1, -1, error)

    def expire(self, now: float, deadline_of: Callable[[ProducerBatch], float]) -> None:
        """Fail queued batches whose delivery deadline passed (background producer)."""
        from grete.producer.errors import DeliveryTimeoutError

        for state in self._partitions.values():
            keep = []
            for batch in state.queue:
                if deadline_of(batch) <= now:
                    self._queued -= 1
                    self._finish(
                        batch,
                        -1,
                        -1,
                        DeliveryTimeoutError(
                            batch.topic, batch.partition, batch.maybe_written, batch.last_error
                        ),
                    )
                    if self.idempotent and batch.base_sequence is not None:
                        self.needs_epoch_bump = True
                else:
                    keep.append(batch)
            state.queue = keep

    # -- planning ----------------------------------------------------------

    def next_retry_at(self, now: float) -> float | None:
        """When the earliest backing-off batch becomes sendable (None: none is
        backing off; everything else waits for an answer, not for the clock)."""
        waits = [
            s.queue[0].retry_at
            for s in self._partitions.values()
            if s.queue and s.queue[0].retry_at > now
        ]
        return min(waits) if waits else None

    def plan(self, now: float, leader_of: Callable[[str, int], int | None]) -> list[Plan]:
        """Requests ready to go now. ``leader_of(topic, partition)`` gives the
        leader's node id, or None when metadata has none."""
        return list(self.plans(now, leader_of))

    def plans(self, now: float, leader_of: Callable[[str, int], int | None]) -> Iterator[Plan]:
        """:meth:`plan`, one request at a time: each is built (its batches
        encoded) only when the one before was taken. A driver that frames
        each request (and drops its encodings) before asking for the next
        holds one request's encodings at a time, not every request's."""
        if (
            self._queued == 0
            or (self.idempotent and self.needs_producer_id)
            or self.closing_error is not None  # closed out of time: failed, not sent
        ):
            return
        # Group eligible partition heads by leader.
        by_node: dict[int, list[tuple[_PartitionState, ProducerBatch]]] = {}
        gate = self.gate
        for (topic, partition), state in self._partitions.items():
            if not state.queue or state.in_flight >= self._limit(state):
                continue
            head = state.queue[0]
            if head.retry_at > now:
                continue
            if gate is not None and not gate(topic, partition):
                continue
            node = leader_of(topic, partition)
            if node is None:
                self._no_leader(state, head, now)
                continue
            by_node.setdefault(node, []).append((state, head))
        for node, heads in by_node.items():
            while heads and self._node_in_flight.get(node, 0) < self.max_in_flight:
                if self.needs_producer_id:
                    # A request before this one failed a sequenced batch for good
                    # (the driver runs in between): sequences given out now would
                    # only be refused as out of order. Wait for the new epoch.
                    return
                plan, heads = self._build(node, heads, now)
                if plan is not None:
                    yield plan

    def _no_leader(self, state: _PartitionState, batch: ProducerBatch, now: float) -> None:
        """Waiting for a leader is not an attempt (nothing reached a broker);
        it is bounded by the delivery timeout instead."""
        self.needs_metadata = True
        if self._expired(batch, now):
            state.queue.pop(0)
            self._queued -= 1
            self._gap(batch)
            from grete.producer.errors import DeliveryTimeoutError

            # A delivery timeout, as expire() would say, naming why it waited.
            self._finish(
                batch,
                -1,
                -1,
                DeliveryTimeoutError(
                    batch.topic,
                    batch.partition,
                    batch.maybe_written,
                    LeaderNotAvailable(
                        f"no leader for {batch.topic}/{batch.partition} within the delivery "
                        f"timeout ({self.delivery_timeout_s:.0f}s)"
                    ),
                ),
            )
        else:
            batch.last_error = LeaderNotAvailable(f"no leader for {batch.topic}/{batch.partition}")
            batch.retry_at = now + self._wait_backoff(batch)

    def _expired(self, batch: ProducerBatch, now: float) -> bool:
        return now - batch.created >= self.delivery_timeout_s

    def _wait_backoff(self, batch: ProducerBatch) -> float:
        batch.waits += 1
        return backoff_ceiling(self.retry_backoff_s, self.retry_backoff_max_s, batch.waits)

    def _build(
        self,
        node: int,
        heads: list[tuple[_PartitionState, ProducerBatch]],
        now: float,
    ) -> tuple[Plan | None, list[tuple[_PartitionState, ProducerBatch]]]:
        """One request: at most one batch per partition (Kafka's rule for v3+),
        bounded by ``max_request_size``; the rest is left for the next one.
        None when none of ``heads`` can still go (see :meth:`plans`)."""
        topics: dict[str, list[dict[str, Any]]] = {}
        batches: list[ProducerBatch] = []
        rest: list[tuple[_PartitionState, ProducerBatch]] = []
        size = 0
        for state, batch in heads:
            if (
                not state.queue
                or state.queue[0] is not batch
                or state.in_flight >= self._limit(state)
            ):
                # Changed since the heads were taken: a request built before this
                # one was not sent and its batch is back at the head (plans()
                # builds each request after the one before went out).
                continue
            if self.idempotent and batch.base_sequence is None:
                batch.base_sequence = state.next_sequence
                state.next_sequence = (state.next_sequence + len(batch)) % _SEQUENCE_WRAP
            data = batch.encode(
                self.compression,
                self.compression_level,
                self.producer_id,
                self.producer_epoch,
                self.transactional_id is not None,
            )
            if batches and size + len(data) > self.max_request_size:
                rest.append((state, batch))
                continue
            size += len(data)
            state.queue.pop(0)
            self._queued -= 1
            state.in_flight += 1
            state.in_flight_orders.append(batch.order)
            batch.attempts += 1
            batches.append(batch)
            topics.setdefault(batch.topic, []).append({"index": batch.partition, "records": data})
            # The next batch of this partition may ride in the next request.
            if (
                state.queue
                and state.in_flight < self._limit(state)
                and state.queue[0].retry_at <= now
            ):
                rest.append((state, state.queue[0]))
        if not batches:
            return None, rest
        body = {
            "transactional_id": self.transactional_id,
            "acks": self.acks,
            "timeout_ms": self.timeout_ms,
            "topic_data": [{"name": t, "partition_data": p} for t, p in topics.items()],
        }
        self._node_in_flight[node] = self._node_in_flight.get(node, 0) + 1
        self.in_flight += 1
        self.metrics.requests += 1
        plan = Plan(node, body, batches, self.acks != 0, now)
        self._plans[id(plan)] = plan
        return plan, rest

    # -- outcomes ----------------------------------------------------------

    def _landed(self, plan: Plan, now: float) -> bool:
        """Uncount ``plan``; False (and nothing done) if it was abandoned."""
        if self._plans.pop(id(plan), None) is None:
            return False
        self.metrics.request_latency(now - plan.sent_at)
        self._node_in_flight[plan.node_id] -= 1
        self.in_flight -= 1
        for batch in plan.batches:
            state = self._state(batch)
            state.in_flight -= 1
            state.in_flight_orders.remove(batch.order)
        return True

    def on_response(self, plan: Plan, body: dict[str, Any] | None, now: float) -> None:
        """The broker answered ``plan`` (``body`` is None for acks=0)."""
        if not self._landed(plan, now):
            return  # abandoned: its batches have failed already
        if body is None:
            for batch in plan.batches:
                self._finish(batch, -1, -1, None)
            return
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for topic in body["responses"]:
            for p in topic["partition_responses"]:
                results[(topic["name"], p["index"])] = p
        for batch in plan.batches:
            p = results.get((batch.topic, batch.partition))
            if p is None:
                self._failed(
                    batch,
                    now,
                    KafkaError(f"broker answered without {batch.topic}/{batch.partition}"),
                    retriable=True,
                )
                continue
            code = p["error_code"]
            if code == 0:
                state = self._state(batch)
                # Pipelining resumes once nothing earlier of the partition awaits a retry.
                state.confirmed = not self._earlier_pending(batch, state)
                self._finish(batch, p["base_offset"], p.get("log_append_time_ms", -1), None)
            elif code == _DUPLICATE_SEQUENCE:
                # Already written by an earlier attempt whose answer was lost.
                self._state(batch).confirmed = True
                self._finish(batch, -1, -1, None)
            else:
                self._broker_error(batch, p, now)

    def _broker_error(self, batch: ProducerBatch, p: dict[str, Any], now: float) -> None:
        code = p["error_code"]
        state = self._state(batch)
        detail = p.get("error_message") or ""
        for rec in p.get("record_errors") or ():
            detail += f" (record {rec.get('batch_index')}: {rec.get('batch_index_error_message')})"
        where = f"{batch.topic}/{batch.partition}"
        if code in (_MESSAGE_TOO_LARGE, _RECORD_LIST_TOO_LARGE) and len(batch) > 1:
            first, second = batch.split()
            first.base_sequence = second.base_sequence = None
            self._requeue(second, state, now, count=False)
            self._requeue(first, state, now, count=False)
            self._gap(batch)
            return
        if code in (_MESSAGE_TOO_LARGE, _RECORD_LIST_TOO_LARGE):
            self._gap(batch)
            self._finish(
                batch,
                -1,
                -1,
                MessageSizeTooLarge(
                    f"the message to {where} is larger than the broker accepts "
                    f"(topic max.message.bytes) {detail}".rstrip()
                ),
            )
            return
        if code == _OUT_OF_ORDER_SEQUENCE and self._earlier_pending(batch, state):
            # An earlier batch of this partition is being retried; this one was
            # refused only because it came too soon. Not an attempt of its own.
            batch.attempts -= 1
            self._requeue(batch, state, now, count=False)
            return
        if self.idempotent and code in (_OUT_OF_ORDER_SEQUENCE, _UNKNOWN_PRODUCER_ID):
            # The broker lost our sequence state: new epoch, sequences from 0.
            self.needs_epoch_bump = True
            self._failed(
                batch, now, error_for_code(code, f"{where} {detail}".strip()), retriable=True
            )
            return
        info = error_info(code)
        error = error_for_code(code, f"{where} {detail}".strip())
        if code == _CONCURRENT_TRANSACTIONS and self.transactional_id is not None:
            self._failed(batch, now, error, retriable=True)
            return
        if code in _APPENDED_CODES:
            # The leader appended the records but the replicas did not confirm
            # in time: a later failure must say they may be in the log.
            batch.maybe_written = True
        if info.invalid_metadata:
            # The leader moved: a matter of waiting for metadata, which is
            # bounded by the delivery timeout rather than by max_retries (a
            # failover can take the brokers' session timeout, seconds).
            self.needs_metadata = True
            self._wait(batch, now, error)
            return
        self._failed(batch, now, error, info.retriable)

    def _earlier_pending(self, batch: ProducerBatch, state: _PartitionState) -> bool:
        # Only an *earlier* batch (requeued, or still in flight) excuses the
        # refusal: a later one in flight must not, or a partition whose
        # sequence state the broker lost would be resent forever.
        return (bool(state.queue) and state.queue[0].order < batch.order) or any(
            order < batch.order for order in state.in_flight_orders
        )

    def on_transport_error(self, plan: Plan, error: KafkaError, now: float, *, sent: bool) -> None:
        """The request could not be sent (``sent=False``: certainly not
        written), or its connection failed or timed out after it left: the
        outcome is unknown, and a retry keeps the batch's sequence so the
        broker can drop it if it did land."""
        if not self._landed(plan, now):
            return
        self.needs_metadata = True
        for batch in plan.batches:
            batch.maybe_written = batch.maybe_written or sent
            if sent:
                self._failed(batch, now, error, retriable=True)
            else:
                # Nothing left the machine (broker down, backing off, or the
                # handshake still running): wait for a leader that answers,
                # bounded by the delivery timeout.
                self._wait(batch, now, error)
                if isinstance(error, StillConnecting):
                    batch.waits -= 1  # not a failure: look again very soon
                    batch.retry_at = now + _CONNECTING_RECHECK_S

    def on_send_error(self, plan: Plan, error: KafkaError, now: float) -> None:
        """The request could not be framed or sent for a reason that retrying
        it would not fix (an authentication failure, no version of Produce the
        broker speaks, a bug): its batches fail with ``error``, not written.
        Without this they would stay counted in flight for ever, and a
        producer waiting for them would never return."""
        if not self._landed(plan, now):
            return
        for batch in plan.batches:
            self._gap(batch)
            self._finish(batch, -1, -1, error)

    def abandon_in_flight(self, error: KafkaError, now: float) -> None:
        """Give up on every request in flight: their batches fail with
        ``error``, maybe written, and are never retried; answers that come
        later are ignored. Covers requests a driver was interrupted while
        sending (counted here, never handed to the network, or handed over
        half-framed): waiting for their answers would wait for ever."""
        for plan in list(self._plans.values()):
            self._landed(plan, now)
            for batch in plan.batches:
                batch.maybe_written = True
                self._gap(batch)
                self._finish(batch, -1, -1, error)

    def _wait(self, batch: ProducerBatch, now: float, error: KafkaError) -> None:
        """Requeue without spending an attempt, unless the delivery timeout ran out."""
        if self.closing_error is not None:
            # Closed out of time while this one waited: close()'s error.
            self._gap(batch)
            self._finish(batch, -1, -1, self.closing_error)
            return
        if self._expired(batch, now):
            self._gap(batch)
            self._finish(batch, -1, -1, self._final_error(batch, now, error, True))
            return
        batch.attempts -= 1
        batch.last_error = error
        self._requeue(batch, self._state(batch), now, count=False)
        batch.retry_at = now + self._wait_backoff(batch)

    def _failed(self, batch: ProducerBatch, now: float, error: KafkaError, retriable: bool) -> None:
        if (
            retriable
            and batch.attempts <= self.max_retries
            and self.closing_error is None
            and not self._expired(batch, now)
        ):
            self.metrics.retries += 1
            self.metrics.topic(batch.topic).retries += 1
            batch.last_error = error
            self._requeue(batch, self._state(batch), now, count=True)
            return
        self._gap(batch)
        self._finish(batch, -1, -1, self._final_error(batch, now, error, retriable))

    def _final_error(
        self, batch: ProducerBatch, now: float, error: KafkaError, retriable: bool
    ) -> KafkaError:
        """What a batch given up on reports: a retriable error met after its
        delivery timeout ran out is a delivery timeout (naming that error),
        whichever noticed first, this answer or :meth:`expire`."""
        from grete.producer.errors import DeliveryTimeoutError

        if retriable and self.closing_error is None and self._expired(batch, now):
            return DeliveryTimeoutError(batch.topic, batch.partition, batch.maybe_written, error)
        return error

    def _gap(self, batch: ProducerBatch) -> None:
        """``batch`` leaves its partition's sequence for good; later batches
        would be refused as out of order, so the epoch must be bumped."""
        if self.idempotent and batch.base_sequence is not None:
            self.needs_epoch_bump = True
