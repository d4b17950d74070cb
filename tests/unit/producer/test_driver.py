"""The driver between engine and network, over the broker-less ``cluster``
fixture: errors that escape sending must fail batches, never strand them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from grete.cluster import Cluster
from grete.connection import Pending
from grete.errors import AuthenticationError, KafkaConnectionError, KafkaError
from grete.network import Network
from grete.producer import (
    BackgroundProducer,
    ProduceFailureError,
    Producer,
    ProducerClosedError,
)
from grete.producer.batch import ProducerBatch
from grete.producer.driver import Driver
from grete.producer.engine import ProduceEngine
from grete.protocol import messages as m

Done = tuple[ProducerBatch, int, int, "KafkaError | None"]


def _engine(done: list[Done], *, idempotent: bool = False) -> ProduceEngine:
    engine = ProduceEngine(
        on_done=lambda b, o, t, e: done.append((b, o, t, e)),
        acks=-1 if idempotent else 1,
        timeout_ms=1000,
        idempotent=idempotent,
        max_retries=3,
        retry_backoff_s=0.01,
        retry_backoff_max_s=0.1,
    )
    if idempotent:
        engine.set_producer_id(4000, 0)
    return engine


def _batch(partition: int, n: int) -> ProducerBatch:
    batch = ProducerBatch("t", partition, time.monotonic())
    for i in range(n):
        batch.append(None, b"v%d" % i, None, 1_700_000_000_000, i, 10)
    return batch


def _never_answered(
    monkeypatch: pytest.MonkeyPatch, *, interrupt_at: int | None = None
) -> list[Pending]:
    """Every Produce request is handed to a connection that never answers
    (returned: their Pendings); the ``interrupt_at``-th raises
    KeyboardInterrupt once handed over, as Ctrl-C inside ``Network.send``."""
    sent: list[Pending] = []

    def send(self: Network, node_id: int, api: Any, body: Any, **kw: Any) -> Pending:
        if api is not m.PRODUCE:  # a metadata refresh: as unreachable as the fixture's broker
            raise KafkaConnectionError("connection refused")
        pending = Pending(api, len(sent), time.monotonic() + 60, 60.0)
        if kw.get("callback") is not None:
            pending.add_callback(kw["callback"])
        sent.append(pending)
        if len(sent) == interrupt_at:
            raise KeyboardInterrupt
        return pending

    monkeypatch.setattr(Network, "send", send)
    return sent


def _refuse(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    """Make every Produce request fail inside ``Network.send``, as a broker
    refusing our credentials would; returns the node ids tried."""
    tried: list[int] = []

    def send(self: Network, node_id: int, api: Any, body: Any, **kw: Any) -> Pending:
        if api is not m.PRODUCE:  # a metadata refresh: as unreachable as the fixture's broker
            raise KafkaConnectionError("connection refused")
        tried.append(node_id)
        raise error

    monkeypatch.setattr(Network, "send", send)
    return tried


@pytest.mark.parametrize("idempotent", [False, True])
@pytest.mark.parametrize(
    "error",
    [AuthenticationError("SASL authentication failed"), RuntimeError("a bug while framing")],
    ids=["authentication", "bug"],
)
def test_a_request_that_cannot_be_sent_fails_its_batches(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, error: Exception, idempotent: bool
) -> None:
    tried = _refuse(monkeypatch, error)
    done: list[Done] = []
    engine = _engine(done, idempotent=idempotent)
    driver = Driver(engine, cluster)
    batches = [_batch(p, 3) for p in range(3)]
    for batch in batches:
        engine.add(batch)
    for plan in engine.plans(time.monotonic(), driver.leader_of):
        driver._send_request(plan)
    assert tried == [1]  # one request: broker 1 leads all three partitions
    assert engine.idle and engine.in_flight == 0
    assert [d[0] for d in done] == batches
    for _, offset, _, err in done:
        assert offset == -1 and isinstance(err, KafkaError)
        assert str(error) in str(err)
    assert not any(b.maybe_written for b in batches)  # nothing left the machine
    if isinstance(error, KafkaError):
        assert all(d[3] is error for d in done)  # the typed error itself, not a wrapper
    else:
        assert all(d[3] is not None and d[3].__cause__ is error for d in done)
    # Sequences given to the failed batches are gone: the next ones need a new epoch.
    assert engine.needs_epoch_bump is idempotent


def test_sync_produce_reports_the_refusal_and_the_next_call_does_not_hang(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse(monkeypatch, AuthenticationError("SASL authentication failed"))
    producer = Producer(cluster, cluster._topics["t"], required_acks=1, max_retries=0)
    try:

        def call(result: list[BaseException]) -> None:
            try:
                producer.produce([b"a", b"b", b"c"])
            except BaseException as exc:
                result.append(exc)

        for _ in range(2):  # before the fix, the second call waited for ever
            result: list[BaseException] = []
            t = threading.Thread(target=call, args=(result,), daemon=True)
            t.start()
            t.join(10)
            assert not t.is_alive(), "produce() hung"
            (exc,) = result
            assert isinstance(exc, ProduceFailureError)
            assert len(exc.failures) == 3
            for failure in exc.failures:
                assert isinstance(failure.error, AuthenticationError)
                assert failure.maybe_written is False
    finally:
        producer.stop()


def test_background_futures_get_the_refusal(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse(monkeypatch, AuthenticationError("SASL authentication failed"))
    with BackgroundProducer(cluster, cluster._topics["t"], required_acks=1) as p:
        futures = [p.produce(b"v%d" % i) for i in range(5)]
        assert p.flush(timeout=10) == 0
        for f in futures:
            assert isinstance(f.exception(timeout=0), AuthenticationError)


def test_sender_crash_fails_requests_in_flight_too(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests on the wire when the sender thread dies are failed (maybe
    written), not left unresolved with nobody to read their answers."""
    sent = _never_answered(monkeypatch)
    # Records handed to the connection, request by request (the Pendings do not say).
    on_the_wire: list[int] = []
    original_send = Driver._send_request

    def send_request(self: Driver, plan: Any) -> None:
        on_the_wire.append(sum(len(batch) for batch in plan.batches))
        original_send(self, plan)

    monkeypatch.setattr(Driver, "_send_request", send_request)
    original_step = Driver.step
    produced = threading.Event()  # crash only once all three are produced (else refused)

    def step(self: Driver, timeout: float) -> None:
        if sent and produced.is_set():
            raise RuntimeError("injected sender bug")
        original_step(self, timeout)

    monkeypatch.setattr(Driver, "step", step)
    p = BackgroundProducer(cluster, cluster._topics["t"], required_acks=1, linger_ms=0)
    try:
        futures = [p.produce(b"v%d" % i, partition=0) for i in range(3)]
        produced.set()
        for f in futures:
            err = f.exception(timeout=10)
            assert isinstance(err, KafkaError) and "injected" in str(err)
        # However the three split into requests: those on the wire when the
        # sender died are maybe written, those still queued certainly not.
        assert len(on_the_wire) == len(sent) >= 1
        wired = sum(on_the_wire)
        assert 1 <= wired <= 3
        assert [f.maybe_written for f in futures] == [True] * wired + [False] * (3 - wired)
        assert p.flush(timeout=1) == 0
    finally:
        t0 = time.monotonic()
        p.close(timeout=1.0)
        assert time.monotonic() - t0 < 3.0


def test_produce_after_the_sender_died_is_refused(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message produced once the sender thread is dead would sit in a batch
    nobody takes, its future never resolved: refused instead, naming why."""

    def step(self: Driver, timeout: float) -> None:
        raise RuntimeError("injected sender bug")

    monkeypatch.setattr(Driver, "step", step)
    p = BackgroundProducer(cluster, cluster._topics["t"], required_acks=1, linger_ms=0)
    try:
        assert p._sender.stopped.wait(5)
        cases: list[dict[str, Any]] = [{}, {"partition": 0}]  # inline path, general path
        for kwargs in cases:
            with pytest.raises(ProducerClosedError, match=r"sender thread stopped.*injected"):
                p.produce(b"late", **kwargs)
        assert p.flush(timeout=1) == 0
    finally:
        p.close(timeout=1.0)


def _interrupt_produce_sends(monkeypatch: pytest.MonkeyPatch, *, after: int) -> list[int]:
    """:func:`_never_answered`, the ``after``-th request interrupted; returns
    the nodes whose connection was discarded."""
    _never_answered(monkeypatch, interrupt_at=after)
    discarded: list[int] = []

    def discard(self: Network, node_id: int, reason: str) -> None:
        discarded.append(node_id)
        assert "interrupted while sending" in reason

    monkeypatch.setattr(Network, "discard", discard)
    return discarded


@pytest.mark.parametrize("idempotent", [False, True])
def test_abandoning_fails_plans_never_handed_to_the_network(idempotent: bool) -> None:
    done: list[Done] = []
    engine = _engine(done, idempotent=idempotent)
    batches = [_batch(p, 3) for p in range(3)]
    for batch in batches:
        engine.add(batch)
    (plan,) = engine.plans(time.monotonic(), lambda t, p: 1)  # built, never sent
    assert engine.in_flight == 1
    error = KafkaError("interrupted")
    engine.abandon_in_flight(error, time.monotonic())
    assert engine.idle and engine.in_flight == 0
    assert [d[0] for d in done] == batches and all(d[3] is error for d in done)
    assert all(b.maybe_written for b in batches)  # it may have gone out before the interrupt
    assert engine.needs_epoch_bump is idempotent
    # A late answer to the abandoned request changes nothing.
    body = {
        "responses": [
            {"name": "t", "partition_responses": [{"index": i, "error_code": 0, "base_offset": 7}]}
            for i in range(3)
        ]
    }
    engine.on_response(plan, body, time.monotonic())
    engine.on_transport_error(plan, KafkaConnectionError("late"), time.monotonic(), sent=True)
    assert len(done) == 3 and engine.in_flight == 0 and engine.idle


def test_keyboard_interrupt_while_sending_poisons_the_connection_and_the_next_call_runs(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C inside Network.send: the request was counted in flight but
    never handed back to the driver, so nothing would ever answer it. The
    call raises; the next call must neither wait for it (it hung for ever)
    nor report it; the connection, maybe holding half a frame, is dropped."""
    discarded = _interrupt_produce_sends(monkeypatch, after=1)
    producer = Producer(cluster, cluster._topics["t"], required_acks=1, max_retries=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            producer.produce([b"a", b"b", b"c"])
        assert discarded == [1]
        assert producer._engine.idle and producer._engine.in_flight == 0
        monkeypatch.setattr(
            Network, "send", lambda *a, **k: (_ for _ in ()).throw(AuthenticationError("no"))
        )
        result: list[BaseException] = []

        def call() -> None:
            try:
                producer.produce([b"d"])
            except BaseException as exc:
                result.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(10)
        assert not t.is_alive(), "produce() hung on the interrupted call's request"
        (exc,) = result
        assert isinstance(exc, ProduceFailureError) and len(exc.failures) == 1
    finally:
        producer.stop()


def test_an_exception_escaping_a_connections_io_drops_that_connection(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Network.poll: a KeyboardInterrupt out of on_readable/on_writable
    leaves the stream's framing unknown, so the connection is closed (its
    requests fail, maybe written) before the exception goes on."""
    network = cluster.network
    closed: list[KafkaError | None] = []

    class Conn:
        connected = True
        in_flight = 1
        wants_write = False

        def fileno(self) -> int:
            return r.fileno()

        def on_readable(self) -> None:
            raise KeyboardInterrupt

        def on_writable(self) -> None:
            raise AssertionError("not writable")

        def check_timeouts(self, now: float) -> None:
            pass

        def close(self, error: KafkaError | None = None) -> None:
            closed.append(error)

    import socket

    r, w = socket.socketpair()
    try:
        w.send(b"x")  # readable
        conn = Conn()
        monkeypatch.setitem(network._conns, 99, conn)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            network.poll(1.0)
        assert 99 not in network._conns and conn not in network._registered
        (error,) = closed
        assert isinstance(error, KafkaConnectionError) and "interrupted" in str(error)
    finally:
        r.close()
        w.close()
