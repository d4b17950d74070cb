"""Promises of docs/guarantees.rst that no other test held to, each against a
scripted broker (``_fake_broker``) or a listener that never answers: no Kafka.

* giving up on InitProducerId (a non-retriable error at once, a retriable one
  after ``max_retries + 3`` failed tries): every queued message fails with it;
* UNKNOWN_PRODUCER_ID: an epoch bump (InitProducerId with the current id and
  epoch), then the batch is resent under the new epoch from sequence 0;
* ``close(timeout)``: queued messages fail with KafkaTimeoutError, not written;
  messages of requests in flight fail maybe written;
* the synchronous ``Producer``'s ``delivery_timeout_ms``: a batch retried for
  lack of anything better fails with DeliveryTimeoutError naming the last error;
* a broker whose connection handshake hangs does not stall sending to another.

Each would fail without its behaviour; none bounds a duration the product does
not promise (waits are generous; where a time discriminates, it is set against
a configured timeout many times longer).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from grete.cluster import Broker, Cluster, Partition, Topic
from grete.connection import ConnectionConfig
from grete.errors import (
    ClusterAuthorizationFailed,
    CoordinatorNotAvailable,
    KafkaError,
    KafkaTimeoutError,
    NotEnoughReplicas,
    StillConnecting,
)
from grete.network import Network
from grete.producer import BackgroundProducer, DeliveryTimeoutError, Producer
from grete.producer.errors import ProduceFailureError
from grete.protocol import messages as m
from grete.protocol.framing import decode_request_frame, encode_response_frame
from grete.protocol.records import decode_batches

from ._fake_broker import FakeBroker, cluster_of
from .test_engine import Harness

PRODUCER_ID = 7


class ScriptedBroker(FakeBroker):
    """The fake broker, with scripted error codes: ``pid_codes`` answer the
    InitProducerId requests in turn (0: the id, with the epoch one past the
    one asked about, as KIP-360 bumps it), ``produce_codes`` the Produce
    requests (every partition of one request gets the code; once the script
    runs out, ``produce_default``). With ``answer_produce=False`` it answers
    nothing more once a Produce came. Records every InitProducerId body and,
    per Produce, each batch's (producer id, epoch, base sequence, values)."""

    def __init__(
        self,
        *,
        pid_codes: list[int] | None = None,
        produce_codes: list[int] | None = None,
        produce_default: int = 0,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.pid_codes = list(pid_codes or [])
        self.produce_codes = list(produce_codes or [])
        self.produce_default = produce_default
        self.hung = False
        # Answers every Metadata request when set (else the fake broker's own).
        self.metadata: dict[str, Any] | None = None
        # InitProducerId is answered once this is set (set by default).
        self.pid_gate = threading.Event()
        self.pid_gate.set()
        self.pid_bodies: list[dict[str, Any]] = []
        self.produced: list[list[tuple[int, int, int, list[bytes | None]]]] = []

    def _answer(self, frame: bytes) -> bytes | None:
        cid, _, request = decode_request_frame(frame, m.APIS_BY_KEY)
        if self.hung:
            with self._lock:
                self.requests[request.api.name] += 1
            return None
        if request.api is m.INIT_PRODUCER_ID and self.answer_init_pid:
            self.pid_gate.wait(30)
            with self._lock:
                self.requests[request.api.name] += 1
                self.pid_bodies.append(dict(request.body))
                code = self.pid_codes.pop(0) if self.pid_codes else 0
            if code:
                body = {"error_code": code, "producer_id": -1, "producer_epoch": -1}
            else:
                asked = request.body.get("producer_epoch", -1)
                body = {
                    "error_code": 0,
                    "producer_id": PRODUCER_ID,
                    "producer_epoch": 0 if asked is None or asked < 0 else asked + 1,
                }
            return encode_response_frame(cid, request.api, request.version, body)
        if request.api is m.METADATA and self.metadata is not None:
            with self._lock:
                self.requests[request.api.name] += 1
            return encode_response_frame(cid, request.api, request.version, self.metadata)
        if request.api is m.PRODUCE:
            batches = []
            for topic in request.body["topic_data"]:
                for p in topic["partition_data"]:
                    for b in decode_batches(p["records"]):
                        values = [r.value for r in b.records]
                        batches.append((b.producer_id, b.producer_epoch, b.base_sequence, values))
            with self._lock:
                self.produced.append(batches)
                if not self.answer_produce:
                    # Silent from now on: answering a later request (a
                    # Metadata refresh) on the same connection would answer
                    # out of order, which no broker does; the client would
                    # drop the connection and resend.
                    self.requests[request.api.name] += 1
                    self.hung = True
                    return None
                code = self.produce_codes.pop(0) if self.produce_codes else self.produce_default
            if code:
                with self._lock:
                    self.requests[request.api.name] += 1
                responses = [
                    {
                        "name": topic["name"],
                        "partition_responses": [
                            {"index": p["index"], "error_code": code, "base_offset": -1}
                            for p in topic["partition_data"]
                        ],
                    }
                    for topic in request.body["topic_data"]
                ]
                body = {"responses": responses}
                return encode_response_frame(cid, request.api, request.version, body)
        return super()._answer(frame)


@contextlib.contextmanager
def _scripted(**kw: Any) -> Iterator[ScriptedBroker]:
    broker = ScriptedBroker(**kw)
    try:
        yield broker
    finally:
        broker.close()


# -- InitProducerId given up on ---------------------------------------------


@pytest.mark.parametrize(
    ("error", "tries"),
    [
        # Not authorised: hopeless at once, one try.
        (ClusterAuthorizationFailed, 1),
        # Retriable, but never better: max_retries (1) + 3 failed tries are
        # retried, the next failure gives up.
        (CoordinatorNotAvailable, 5),
    ],
    ids=["non-retriable", "retriable-too-often"],
)
def test_giving_up_on_init_producer_id_fails_every_queued_message(
    error: type[KafkaError], tries: int
) -> None:
    # ``tries`` failures, then the broker would give an id: a producer that
    # tried once more than promised delivers, one that gave up sooner fails
    # with fewer tries counted.
    with _scripted(pid_codes=[error.code] * tries) as broker:
        broker.pid_gate.clear()  # no answer before the messages are queued
        cluster = cluster_of(broker, ["t"])
        # One batch of five, closed when full: queued in the engine at once.
        p = BackgroundProducer(
            cluster,
            cluster._topics["t"],
            max_retries=1,
            retry_backoff_ms=10,
            batch_size=5,
            linger_ms=600_000,
        )
        try:
            assert p._sender.engine.idempotent
            # The tries made when each message failed (the callback runs on
            # the sender thread as it gives up; a later batch would try again).
            tried: list[int] = []

            def record(_f: Any) -> None:
                tried.append(broker.requests["InitProducerId"])

            futures = [p.produce(b"v%d" % i, callback=record) for i in range(5)]
            deadline = time.monotonic() + 30
            while p._sender.engine.queued < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert p._sender.engine.queued == 1
            broker.pid_gate.set()
            for f in futures:
                err = f.exception(timeout=30)
                assert type(err) is error, err
                assert not f.maybe_written
            # Given up after exactly ``tries``, and nothing sent without an id.
            assert tried == [tries] * 5
            assert broker.requests["Produce"] == 0
        finally:
            p.close(timeout=1)
            cluster.network.close()


# -- UNKNOWN_PRODUCER_ID ----------------------------------------------------


def test_unknown_producer_id_bumps_the_epoch_and_resends_the_batch() -> None:
    unknown = 59  # UNKNOWN_PRODUCER_ID: the broker lost our state
    with _scripted(produce_codes=[unknown]) as broker:
        cluster = cluster_of(broker, ["t"])
        try:
            with BackgroundProducer(
                cluster, cluster._topics["t"], linger_ms=600_000, batch_size=3
            ) as p:
                futures = [p.produce(b"v%d" % i) for i in range(3)]
                results = [f.result(timeout=30) for f in futures]
            values = [b"v0", b"v1", b"v2"]
            # First id (-1/-1), then KIP-360's bump: the current id and epoch.
            assert [(b["producer_id"], b["producer_epoch"]) for b in broker.pid_bodies] == [
                (-1, -1),
                (PRODUCER_ID, 0),
            ]
            # The refused batch, then the same records under the new epoch,
            # sequences restarted at 0.
            assert broker.produced == [
                [(PRODUCER_ID, 0, 0, values)],
                [(PRODUCER_ID, 1, 0, values)],
            ]
            assert [r.offset for r in results] == [0, 1, 2]
            assert all(not f.maybe_written for f in futures)
        finally:
            cluster.network.close()


# -- close() with messages queued and in flight -----------------------------


def test_close_fails_queued_as_not_written_and_in_flight_as_maybe_written() -> None:
    with _scripted(answer_produce=False) as broker:
        cluster = cluster_of(broker, ["t"], request_timeout_s=30.0)
        # Batches of two, closed when full (the linger is longer than any test).
        # The first goes out and is never answered; the second waits behind it
        # (one request in flight per broker); the fifth message stays in its
        # open batch until close() takes it.
        p = BackgroundProducer(
            cluster,
            cluster._topics["t"],
            required_acks=1,
            batch_size=2,
            linger_ms=600_000,
            max_in_flight=1,
        )
        try:
            futures = [p.produce(b"v%d" % i) for i in range(5)]
            deadline = time.monotonic() + 30
            while broker.requests["Produce"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert broker.requests["Produce"] == 1
            t0 = time.monotonic()
            p.close(timeout=0.5)
            # Bounded by its timeout, not by the request timeout (30 s).
            assert time.monotonic() - t0 < 15.0
            assert broker.produced == [[(-1, -1, -1, [b"v0", b"v1"])]], (
                broker.produced,
                broker.requests,
            )
            assert all(f.done() for f in futures)
            errors = [f.exception(timeout=0) for f in futures]
            assert [f.maybe_written for f in futures] == [True, True, False, False, False]
            assert all(isinstance(e, KafkaError) for e in errors[:2]), errors
            assert all(type(e) is KafkaTimeoutError for e in errors[2:]), errors
        finally:
            p.close(timeout=1)
            cluster.network.close()


def test_a_batch_sent_after_close_ran_out_fails_with_the_closing_error() -> None:
    # The race the background producer runs into under load: close() sets
    # closing_error from its thread while the sender is between its
    # fail_all(closing_error) check and its next step, which plans the queued
    # batch and tries to send it; the broker is still being connected to.
    h = Harness()
    batch = h.add(0, 1)
    closing = KafkaTimeoutError("producer closed before delivery (0.1s)")
    h.engine.closing_error = closing
    for plan in h.plan():  # (none: plans() hands out nothing once closing)
        h.engine.on_transport_error(plan, StillConnecting("still connecting"), h.now, sent=False)
    h.engine.fail_all(closing)  # what the sender's loop does next
    ((b, _o, _t, error),) = h.done
    assert b is batch and not batch.maybe_written
    assert isinstance(error, KafkaTimeoutError), error


# -- the synchronous Producer's delivery timeout ----------------------------


def test_sync_producer_gives_up_at_its_delivery_timeout_with_the_last_error() -> None:
    # Every Produce is refused with a retriable error. 200 retries at up to
    # 50 ms apart would take ~10 s: delivery_timeout_ms (0.5 s) ends the call
    # first. (Without it, the call fails with NotEnoughReplicas.)
    with _scripted(produce_default=NotEnoughReplicas.code) as broker:
        cluster = cluster_of(broker, ["t"])
        try:
            p = Producer(
                cluster,
                cluster._topics["t"],
                max_retries=200,
                retry_backoff_ms=20,
                retry_backoff_max_ms=50,
                delivery_timeout_ms=500,
            )
            t0 = time.monotonic()
            with pytest.raises(ProduceFailureError) as info:
                p.produce([b"a", b"b"])
            took = time.monotonic() - t0
            # Not before the timeout.
            assert 0.5 <= took < 30.0, took
            assert broker.requests["Produce"] >= 2
            failures = info.value.failures
            assert [f.index for f in failures] == [0, 1]
            for failure in failures:
                assert type(failure.error) is DeliveryTimeoutError, failure.error
                assert type(failure.error.last_error) is NotEnoughReplicas
                assert failure.error.__cause__ is failure.error.last_error
                assert not failure.maybe_written
        finally:
            cluster.network.close()


# -- a hung handshake does not stall the other brokers ----------------------


def test_a_hung_handshake_does_not_stall_sending_to_another_broker() -> None:
    # Broker 1 accepts TCP connections (the kernel does, from the backlog) and
    # never answers ApiVersions: its handshake hangs until connect_timeout_s
    # (20 s). Broker 2 answers. Messages to broker 2's partition are
    # acknowledged meanwhile, not after the hung handshake gives up.
    connect_timeout_s = 20.0
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    hung_port = int(hung.getsockname()[1])
    good = ScriptedBroker()
    network = Network(
        [("127.0.0.1", good.port)],
        ConnectionConfig(connect_timeout_s=connect_timeout_s, request_timeout_s=30.0),
    )
    try:
        cluster = Cluster(network)
        brokers = {1: Broker(1, "127.0.0.1", hung_port), 2: Broker(2, "127.0.0.1", good.port)}
        cluster.brokers = brokers
        network.set_brokers({i: ("127.0.0.1", b.port) for i, b in brokers.items()})
        topic = Topic(cluster, "t")
        for i, leader in ((0, brokers[1]), (1, brokers[2])):
            part = Partition(topic, i)
            part.leader = leader
            topic.partitions[i] = part
        cluster._topics["t"] = topic
        # A metadata refresh (asked for when a send finds its broker still
        # connecting) must tell the same story: the fake broker's own answer
        # lists itself alone, leading a one-partition topic.
        good.metadata = {
            "brokers": [
                {"node_id": i, "host": "127.0.0.1", "port": b.port} for i, b in brokers.items()
            ],
            "cluster_id": "fake",
            "controller_id": 2,
            "topics": [
                {
                    "error_code": 0,
                    "name": "t",
                    "is_internal": False,
                    "partitions": [
                        {
                            "error_code": 0,
                            "partition_index": i,
                            "leader_id": leader,
                            "leader_epoch": 0,
                            "replica_nodes": [leader],
                            "isr_nodes": [leader],
                            "offline_replicas": [],
                        }
                        for i, leader in ((0, 1), (1, 2))
                    ],
                }
            ],
        }
        cluster.last_update = time.monotonic() + 3600  # no periodic refresh
        p = BackgroundProducer(cluster, topic, required_acks=1, linger_ms=0)
        try:
            stuck = p.produce(b"to the hung broker", partition=0)
            # Its handshake under way (the connection accepted by the kernel)
            # before anything goes to the other broker.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _has_pending_connection(hung):
                time.sleep(0.01)
            t0 = time.monotonic()
            moving = [p.produce(b"m%d" % i, partition=1) for i in range(20)]
            for f in moving:
                assert f.exception(timeout=connect_timeout_s / 2) is None
            took = time.monotonic() - t0
            assert took < connect_timeout_s / 2, took
            assert not stuck.done(), "the hung broker's message resolved?"
            assert good.requests["Produce"] >= 1
        finally:
            p.close(timeout=0.5)
        assert stuck.done() and stuck.exception(timeout=0) is not None
    finally:
        network.close()
        good.close()
        hung.close()


def _has_pending_connection(listener: socket.socket) -> bool:
    """Whether a connection waits in ``listener``'s backlog (without accepting it)."""
    readable, _, _ = select.select([listener], [], [], 0)
    return bool(readable)


def test_scripted_broker_counts_what_it_answers() -> None:
    # The helper itself: scripted answers are counted like the fake broker's own.
    with _scripted(pid_codes=[CoordinatorNotAvailable.code]) as broker:
        cluster = cluster_of(broker, ["t"])
        try:
            with BackgroundProducer(cluster, cluster._topics["t"], retry_backoff_ms=10) as p:
                assert p.produce(b"x").result(timeout=30).offset == 0
            assert broker.requests["InitProducerId"] == 2
            assert broker.requests["Produce"] == 1
        finally:
            cluster.network.close()
