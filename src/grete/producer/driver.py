"""Drives a :class:`ProduceEngine` over a blocking :class:`~grete.network.Network`.

The synchronous producer runs :meth:`Driver.step` in the caller's thread until
its batches are done; the background producer runs the same steps in its
sender thread. (An asyncio front end would reimplement only this file.)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from grete.cluster import Cluster
from grete.connection import Pending
from grete.errors import KafkaConnectionError, KafkaError, StillConnecting, error_for_code
from grete.producer.engine import Plan, ProduceEngine
from grete.protocol import messages as m
from grete.protocol.errors import error_info

if TYPE_CHECKING:
    from grete.producer.transactions import TransactionManager

log = logging.getLogger("grete.producer")

# Produce v13 names topics by id; grete speaks up to v12.
PRODUCE_MAX_VERSION = 12

# The shortest wait for a produce answer, however near its batches' delivery
# deadline (see _send_request): a broker on loopback answers in under a
# millisecond, but a connection closed for a late answer costs every request
# on it a retry. A message is reported at most this long after its delivery
# timeout.
_MIN_REQUEST_TIMEOUT_S = 1.0


class Driver:
    """One engine, one cluster; see the module docstring."""

    def __init__(self, engine: ProduceEngine, cluster: Cluster) -> None:
        self.engine = engine
        self.cluster = cluster
        self.network = cluster.network
        self._next_metadata = 0.0
        self._metadata_pending: Pending | None = None
        self._next_pid_try = 0.0
        self._pid_failures = 0
        self._pid_pending: Pending | None = None
        # Answers to this engine's requests, left by whichever thread polled
        # the network when they came (the network is the client's, shared by
        # its producers and its metadata calls) and handed to the engine in
        # step(), on the thread that drives it: the engine is not thread-safe.
        self._landed: deque[tuple[Plan, Pending]] = deque()
        # Topics a front end holds records for whose partitions are not
        # known yet: every refresh asks for them too (and for their creation,
        # where the brokers auto-create topics).
        self.wanted: set[str] = set()
        self.leader_of = cluster.leader_id
        # Produce's highest version (a transactional producer of transactions
        # v1 caps it at 11: v12 in a transaction means transactions v2).
        self.produce_cap = PRODUCE_MAX_VERSION
        # A transactional producer's: it owns the producer id (see step).
        self.txn: TransactionManager | None = None

    def step(self, timeout: float) -> None:
        """Send what is ready, then wait up to ``timeout`` for answers."""
        engine = self.engine
        self._take_landed()
        now = time.monotonic()
        if self._metadata_pending is not None and self._metadata_pending.done:
            self._metadata_landed(self._metadata_pending)
        if self._pid_pending is not None and self._pid_pending.done:
            self._pid_landed(self._pid_pending)
        if (
            self._metadata_pending is None
            and now >= self._next_metadata
            and (
                engine.needs_metadata
                or now - self.cluster.last_update > self.cluster.metadata_max_age_s
            )
        ):
            # Asked for by an error, or the periodic refresh (metadata_max_age_ms)
            # that finds new partitions and moved leaders before any error does.
            self._refresh_metadata(now)
        if self.txn is not None:
            self.txn.step(now)
        elif (
            engine.needs_producer_id
            and engine.in_flight == 0
            and self._pid_pending is None
            and now >= self._next_pid_try
        ):
            self._init_producer_id()
        # One request built at a time, each framed before the next is built.
        for plan in engine.plans(time.monotonic(), self.leader_of):
            self._send_request(plan)
        now = time.monotonic()
        wake = engine.next_retry_at(now)
        if wake is not None:
            timeout = max(0.0, min(timeout, wake - now))
        self.network.poll(timeout, self._landed)
        self._take_landed()

    def _take_landed(self) -> None:
        """Hand the answers that came to the engine (see ``_landed``)."""
        landed, engine = self._landed, self.engine
        while landed:
            plan, p = landed.popleft()
            # The engine ignores answers to plans it has abandoned.
            if p.error is not None:
                engine.on_transport_error(plan, p.error, time.monotonic(), sent=True)
            else:
                body = None if p.response is None else p.response.body
                engine.on_response(plan, body, time.monotonic())

    def _refresh_metadata(self, now: float) -> None:
        """Send a Metadata request without waiting for it (a silent broker
        must not stall sending to the others); its answer is applied by a
        later step."""
        self.engine.needs_metadata = False
        # Not more often than the retry backoff: a dead broker must not turn
        # into a metadata storm.
        self._next_metadata = now + self.engine.retry_backoff_s
        topics = sorted(self.engine.topics() | self.wanted)
        auto_create = bool(self.wanted) and self.cluster.allow_auto_create_topics
        try:
            self._metadata_pending = self.cluster.request_update(topics, auto_create=auto_create)
        except KafkaError as exc:
            log.info("metadata refresh failed: %s", exc)
            self._metadata_pending = None
        if self._metadata_pending is None:
            self.engine.needs_metadata = True  # no broker ready yet: try again

    def _metadata_landed(self, pending: Pending) -> None:
        self._metadata_pending = None
        if pending.error is not None or pending.response is None:
            log.info("metadata refresh failed: %s", pending.error)
            self.engine.needs_metadata = True
            return
        try:
            self.cluster.apply(pending.response.body)
        except KafkaError as exc:  # a malformed answer: ask again later
            log.info("metadata answer not usable: %s", exc)
            self.engine.needs_metadata = True

    def _send_request(self, plan: Plan) -> None:
        """Send one Produce request; its answer is handled when it lands."""
        engine = self.engine
        # The answer is awaited no longer than the delivery timeout of the
        # oldest batch on board allows (at least _MIN_REQUEST_TIMEOUT_S):
        # without this bound, a request sent just before its batches' deadline
        # kept them unreported for a whole request timeout (30 s) more. Past
        # it the connection closes, as on a request timeout, and the batches
        # fail as timed out, maybe written.
        oldest = min(batch.created for batch in plan.batches)
        timeout = max(_MIN_REQUEST_TIMEOUT_S, oldest + engine.delivery_timeout_s - time.monotonic())
        try:
            self.network.send(
                plan.node_id,
                m.PRODUCE,
                plan.body,
                cap=self.produce_cap,
                expect_response=plan.expect_response,
                wait_connect=False,
                # Its answer is queued, not handled, by whoever polls: see _landed.
                callback=lambda p: self._landed.append((plan, p)),
                timeout=timeout,
            )
        except KafkaConnectionError as exc:
            # Nothing left the machine: the batches were certainly not written.
            if exc.retriable:
                engine.on_transport_error(plan, exc, time.monotonic(), sent=False)
            else:
                # A closed client (ClientClosedError): waiting for it as for a
                # broker that is down would wait out the delivery timeout.
                engine.on_send_error(plan, exc, time.monotonic())
            return
        except Exception as exc:
            # Authentication refused, no Produce version in common, a bug while
            # framing: nothing left the machine either, and retrying would meet
            # the same. The batches must fail here: escaping, they would stay
            # counted in flight with nobody left to answer them.
            error = exc if isinstance(exc, KafkaError) else KafkaError(f"sending failed: {exc!r}")
            if error is not exc:
                error.__cause__ = exc
            log.warning("produce request to broker %s not sent: %s", plan.node_id, error)
            engine.on_send_error(plan, error, time.monotonic())
            return
        except BaseException as exc:
            # KeyboardInterrupt (or SystemExit) in the middle of framing or
            # writing: the connection may hold half a frame, and whoever
            # catches this must abandon the plan (engine.abandon_in_flight),
            # which nobody will answer now.
            self.network.discard(plan.node_id, f"interrupted while sending: {exc!r}")
            raise
        # Framed: the frame's copy of the batches is all the connection needs
        # until it is written. Holding the encodings until the answer came kept
        # every request in flight in memory long after the socket took it; a
        # retry encodes its batch again (same columns and identity: same
        # records, same sequence).
        plan.body = {}
        for batch in plan.batches:
            batch.release_encoding()

    def abandon_in_flight(self, error: KafkaError) -> None:
        """Stop waiting for every unanswered request (a producer closing out
        of time, a call interrupted): their batches get ``error``, maybe
        written, and answers arriving later are ignored."""
        self.engine.abandon_in_flight(error, time.monotonic())

    def _init_producer_id(self) -> None:
        """Send InitProducerId (a first identity, or an epoch bump of ours,
        KIP-360) without waiting: the sender thread must go on expiring
        batches and serving close() while a broker is slow to answer. Its
        answer is applied by a later step (:meth:`_pid_landed`)."""
        engine = self.engine
        body: dict[str, Any] = {
            "transactional_id": engine.transactional_id,
            "transaction_timeout_ms": 2_147_483_647,
            "producer_id": engine.producer_id,
            "producer_epoch": engine.producer_epoch,
        }
        nodes = self.cluster.network.known_nodes or [-1]
        try:
            self._pid_pending = self.network.send(
                nodes[self._pid_failures % len(nodes)],
                m.INIT_PRODUCER_ID,
                body,
                wait_connect=False,
            )
        except StillConnecting:
            # Not a failure: the connect thread wakes the poll when it is done.
            return
        except KafkaError as exc:
            self._pid_failed(exc)

    def _pid_landed(self, pending: Pending) -> None:
        self._pid_pending = None
        engine = self.engine
        try:
            response = pending.result()
            code = response["error_code"]
            if code != 0:
                raise error_for_code(code, "InitProducerId")
        except KafkaError as exc:
            self._pid_failed(exc)
            return
        self._pid_failures = 0
        log.debug("producer id %s epoch %s", response["producer_id"], response["producer_epoch"])
        engine.set_producer_id(response["producer_id"], response["producer_epoch"])

    def _pid_failed(self, exc: KafkaError) -> None:
        """Try again (another broker, after a backoff), or fail every batch
        waiting for an identity once retrying is hopeless."""
        engine = self.engine
        self._pid_failures += 1
        retriable = exc.retriable or error_info(getattr(exc, "code", -1)).retriable
        if not retriable or self._pid_failures > engine.max_retries + 3:
            log.error("cannot obtain a producer id: %s", exc)
            engine.fail_all(exc)
            self._pid_failures = 0
            return
        self._next_pid_try = time.monotonic() + engine.retry_backoff_s * self._pid_failures
