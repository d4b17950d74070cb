"""Background producers and the threads around them: producers sharing one
client, a broker slow to give a producer id, fork(), a produce() blocked for
room when the producer closes. Against the scripted broker of _fake_broker
(and the dead-port ``cluster`` fixture), no Kafka."""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from grete.cluster import Cluster
from grete.errors import ClientClosedError, ConfigurationError, KafkaError
from grete.producer import BackgroundProducer, DeliveryTimeoutError, Producer, ProducerClosedError
from grete.producer import engine as engine_module

from ._fake_broker import FakeBroker, cluster_of, serving


def _producer(cluster: Cluster, topic: str = "t", **kw: Any) -> BackgroundProducer:
    kw.setdefault("required_acks", 1)  # no InitProducerId, unless asked for
    return BackgroundProducer(cluster, cluster._topics[topic], **kw)


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    yield from serving()


@pytest.fixture
def silent_produce_broker() -> Iterator[FakeBroker]:
    yield from serving(answer_produce=False)


@pytest.fixture
def silent_pid_broker() -> Iterator[FakeBroker]:
    yield from serving(answer_init_pid=False)


def test_producers_of_one_client_handle_their_answers_on_their_own_threads(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's network is shared: whichever thread polls it completes every
    # request that lands, whoever sent it. An engine is not thread-safe, so its
    # answers must reach it on its own sender thread, never on another
    # producer's, nor on a user thread polling the network (metadata calls).
    cluster = cluster_of(broker, ["a", "b"])
    owners: dict[int, int] = {}  # engine id -> its sender thread
    calls: Counter[str] = Counter()
    real = engine_module.ProduceEngine.on_response

    def on_response(self: Any, *args: Any) -> None:
        calls["own" if owners.get(id(self)) == threading.get_ident() else "foreign"] += 1
        real(self, *args)

    monkeypatch.setattr(engine_module.ProduceEngine, "on_response", on_response)
    producers = [_producer(cluster, name, linger_ms=0) for name in ("a", "b")]
    for p in producers:
        ident = p._sender.thread.ident
        assert ident is not None
        owners[id(p._sender.engine)] = ident
    stop = threading.Event()

    def poll_like_a_metadata_call() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            cluster.network.poll(0.0005)

    poller = threading.Thread(target=poll_like_a_metadata_call, daemon=True)
    poller.start()
    try:
        futures = []
        for i in range(300):  # one request each, mostly (linger 0)
            for p in producers:
                futures.append(p.produce(b"m%d" % i))
            if i % 10 == 0:
                time.sleep(0.001)
        for p in producers:
            assert p.flush(timeout=20) == 0
        assert all(f.exception(timeout=0) is None for f in futures)
    finally:
        stop.set()
        poller.join(5)
        for p in producers:
            p.close(timeout=5)
        cluster.network.close()
    assert calls["own"] > 0
    assert calls["foreign"] == 0, calls


def test_a_silent_producer_id_request_does_not_block_close(
    silent_pid_broker: FakeBroker,
) -> None:
    # InitProducerId goes out without waiting: while a broker sits on it, the
    # sender thread still serves close(), which fails what is queued in time,
    # not after the request timeout (30 s by default). The second request is
    # the one that counts: by then the batches are in the engine (before the
    # first, they may still be in the accumulator, which close() empties itself).
    cluster = cluster_of(silent_pid_broker, ["t"], request_timeout_s=1.5)
    p = BackgroundProducer(cluster, cluster._topics["t"], linger_ms=0)  # idempotent
    try:
        futures = [p.produce(b"v%d" % i) for i in range(5)]
        deadline = time.monotonic() + 10
        while silent_pid_broker.requests["InitProducerId"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert silent_pid_broker.requests["InitProducerId"] == 2
        t0 = time.monotonic()
        p.close(timeout=0.3)
        took = time.monotonic() - t0
        assert took < 1.0, took
        assert all(f.done() for f in futures)
        assert all(isinstance(f.exception(timeout=0), KafkaError) for f in futures)
        assert silent_pid_broker.requests["Produce"] == 0  # never sent without an id
    finally:
        p.close(timeout=1)
        cluster.network.close()


def test_a_request_in_flight_is_bounded_by_the_delivery_timeout(
    silent_produce_broker: FakeBroker,
) -> None:
    # The broker takes the request and never answers. The message is reported
    # once its delivery timeout (0.5 s) has passed, maybe written, at most
    # _MIN_REQUEST_TIMEOUT_S (1 s) later: not after the request timeout (30 s).
    cluster = cluster_of(silent_produce_broker, ["t"], request_timeout_s=30.0)
    p = _producer(cluster, linger_ms=0, delivery_timeout_ms=500)
    try:
        t0 = time.monotonic()
        future = p.produce(b"never answered")
        error = future.exception(timeout=10)
        took = time.monotonic() - t0
        assert isinstance(error, DeliveryTimeoutError), error
        assert future.maybe_written
        assert 0.45 < took < 2.5, took
        assert silent_produce_broker.requests["Produce"] >= 1
    finally:
        p.close(timeout=1)
        cluster.network.close()


def test_a_producer_id_then_delivery(broker: FakeBroker) -> None:
    # The answer to the non-blocking InitProducerId is applied by a later step.
    cluster = cluster_of(broker, ["t"])
    try:
        with BackgroundProducer(cluster, cluster._topics["t"], linger_ms=0) as p:
            futures = [p.produce(b"v%d" % i) for i in range(20)]
            assert p.flush(timeout=10) == 0
        assert all(f.exception(timeout=0) is None for f in futures)
        assert p._sender.engine.producer_id == 7
        assert broker.requests["InitProducerId"] == 1
    finally:
        cluster.network.close()


def test_produce_waiting_for_room_is_refused_when_the_producer_closes(
    cluster: Cluster,
) -> None:
    # A produce() blocked on a full queue learns of close() at once: it raises
    # ProducerClosedError, not ProducerQueueFullError after its whole timeout.
    # The queue is full of an unread delivery report, which close() does not
    # free (a failed delivery, which it does, would wake the waiter anyway).
    p = _producer(
        cluster,
        max_queued_messages=1,
        queue_full_timeout_ms=20_000,
        delivery_timeout_ms=100,
        delivery_reports=True,
    )
    first = p.produce(b"fills the queue")
    assert first.exception(timeout=5) is not None  # reported, not read
    outcome: list[BaseException | None] = []

    def blocked() -> None:
        try:
            p.produce(b"waits for room")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked, daemon=True)
    thread.start()
    time.sleep(0.2)
    assert not outcome  # still waiting
    t0 = time.monotonic()
    p.close(timeout=0.5)
    thread.join(5)
    assert time.monotonic() - t0 < 3.0
    assert len(outcome) == 1 and isinstance(outcome[0], ProducerClosedError), outcome


def _child(checks: list[tuple[str, Any]]) -> int:
    """Run ``checks`` (name, fn returning True when right) in a forked child;
    returns a bitmask of the failed ones."""
    failed = 0
    for bit, (_, check) in enumerate(checks):
        try:
            ok = check()
        except BaseException:
            ok = False
        if not ok:
            failed |= 1 << bit
    return failed


def _in_a_forked_child(checks: list[tuple[str, Any]]) -> int:
    """Run ``checks`` in a forked child (warnings are errors there); the
    bitmask of those that failed, or -1 when the child did not answer within
    20 s (it is killed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 255
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no ResourceWarning from the finalizer
                code = _child(checks)
        finally:
            os.write(w, code.to_bytes(2, "big"))
            os._exit(0)
    os.close(w)
    got = b""
    try:
        deadline = time.monotonic() + 20
        while len(got) < 2 and (left := deadline - time.monotonic()) > 0:
            if not select.select([r], [], [], left)[0]:
                break  # a check hung in the child
            chunk = os.read(r, 2 - len(got))
            if not chunk:
                break
            got += chunk
    finally:
        os.close(r)
        if len(got) < 2:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return int.from_bytes(got, "big") if len(got) == 2 else -1


def _raises(exc_type: type[BaseException], fn: Any, match: str = "fork") -> Any:
    def check() -> bool:
        try:
            fn()
        except exc_type as exc:
            return match in str(exc)
        return False

    return check


def _quick(fn: Any, limit: float = 1.0) -> Any:
    def check() -> bool:
        t0 = time.monotonic()
        fn()
        return time.monotonic() - t0 < limit

    return check


def test_a_forked_child_is_refused_at_once_and_never_waits(cluster: Cluster) -> None:
    # In the child, the parent's producer has no sender thread: every call that
    # would wait for it raises the fork error, close() and the finalizer return
    # at once (they waited the delivery timeout: 60 s here), and the client's
    # connections, the parent's sockets, are closed to it.
    p = _producer(cluster, delivery_timeout_ms=60_000)
    gc_only = _producer(cluster, delivery_timeout_ms=60_000)
    reports = _producer(cluster, delivery_timeout_ms=60_000, delivery_reports=True)
    sync = Producer(cluster, cluster._topics["t"])
    pending = p.produce(b"in the parent")  # unresolved: retried for 60 s
    gc_only.produce(b"in the parent too")
    checks: list[tuple[str, Any]] = [
        ("produce", _raises(ProducerClosedError, lambda: p.produce(b"child"))),
        ("flush", _raises(ProducerClosedError, lambda: p.flush())),
        ("result", _raises(ProducerClosedError, lambda: pending.result())),
        ("callback", _raises(ProducerClosedError, lambda: pending.add_done_callback(print))),
        ("report", _raises(ProducerClosedError, lambda: reports.get_delivery_report())),
        ("network", _raises(ClientClosedError, lambda: cluster.network.poll(0))),
        ("sync producer", _raises(ClientClosedError, lambda: sync.produce([b"child"]))),
        ("close", _quick(lambda: p.close())),
        ("finalizer", _quick(gc_only._finalizer)),
        ("client close", _quick(cluster.network.close)),
    ]
    failed = _in_a_forked_child(checks)
    assert failed == 0, [name for bit, (name, _) in enumerate(checks) if failed & (1 << bit)]
    # The parent is unaffected: its network and producers still work.
    assert not pending.done()
    cluster.network.poll(0)
    for producer in (p, gc_only, reports):
        producer.close(timeout=0.5)
    assert pending.done()


def test_metrics_are_logged_at_debug_by_the_sender(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # Every metrics_log_interval_ms while the logger is enabled for DEBUG, and
    # once more when the sender stops; never when the interval is 0.
    cluster = cluster_of(broker, ["t", "quiet"])
    try:
        with caplog.at_level(logging.DEBUG, logger="grete.producer.metrics"):
            p = _producer(cluster, linger_ms=0, metrics_log_interval_ms=50)
            quiet = _producer(cluster, "quiet", linger_ms=0, metrics_log_interval_ms=0)
            for i in range(10):
                p.produce(b"v%d" % i)
                quiet.produce(b"q%d" % i)
            assert p.flush(timeout=10) == 0 and quiet.flush(timeout=10) == 0
            time.sleep(0.3)
            during = len(caplog.records)
            p.close(timeout=5)
            quiet.close(timeout=5)
        records = [r for r in caplog.records if r.name == "grete.producer.metrics"]
        assert during >= 3, during  # ~6 in 0.3 s, at 50 ms
        assert len(records) == len(caplog.records)
        assert all(r.levelno == logging.DEBUG for r in records)
        last = records[-1].getMessage()
        assert "'messages_sent': 10" in last and "'queued_messages': 0" in last, last
    finally:
        cluster.network.close()


def test_metrics_log_interval_is_validated(cluster: Cluster) -> None:
    with pytest.raises(ConfigurationError, match="metrics_log_interval_ms"):
        BackgroundProducer(cluster, cluster._topics["t"], metrics_log_interval_ms=-1)


def test_a_closed_client_refuses_at_once(broker: FakeBroker) -> None:
    # Not retried as a broker that is down would be (until the delivery timeout).
    cluster = cluster_of(broker, ["t"])
    sync = Producer(cluster, cluster._topics["t"])
    background = _producer(cluster, linger_ms=0)
    assert sync.produce([b"before"])[0].offset == 0
    cluster.network.close()
    t0 = time.monotonic()
    with pytest.raises(ClientClosedError, match="client is closed"):
        sync.produce([b"after"])
    # The sender thread stops on the closed client: a message produced before
    # it noticed fails with it, one produced after is refused.
    try:
        future = background.produce(b"after")
    except ProducerClosedError as exc:
        assert "client is closed" in str(exc)
    else:
        assert isinstance(future.exception(timeout=5), ClientClosedError)
    assert time.monotonic() - t0 < 2.0
    assert background._sender.stopped.wait(5)
    with pytest.raises(ProducerClosedError, match="client is closed"):
        background.produce(b"after that")
    background.close(timeout=1)
