"""BackgroundProducer without a broker: config validation, and every behaviour
that an unreachable cluster exercises (queue full, flush/close bounded,
delivery timeouts, closed and forked producers, garbage collection).

The ``cluster`` fixture (conftest.py) is filled by hand; its only broker (and the bootstrap
address) is a closed port on 127.0.0.1, so every send fails fast.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
import warnings
from typing import Any

import pytest

import grete
from grete.cluster import Cluster
from grete.errors import ConfigurationError, KafkaError, KafkaTimeoutError
from grete.producer import (
    BackgroundProducer,
    DeliveryFuture,
    DeliveryTimeoutError,
    InvalidMessageError,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.producer.batch import ProducerBatch

from .._effort import effort


def _producer(cluster: Cluster, **kw: Any) -> BackgroundProducer:
    kw.setdefault("required_acks", 1)  # no InitProducerId: straight to the (dead) leader
    kw.setdefault("retry_backoff_ms", 20)
    return BackgroundProducer(cluster, cluster._topics["t"], **kw)


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())


# -- configuration ---------------------------------------------------------

BAD_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("acks 2", {"required_acks": 2}),
    ("acks -2", {"required_acks": -2}),
    ("idempotence with acks 1", {"enable_idempotence": True, "required_acks": 1}),
    ("idempotence with acks 0", {"enable_idempotence": True, "required_acks": 0}),
    ("batch_size 0", {"batch_size": 0}),
    ("batch_size bool", {"batch_size": True}),
    ("batch_size float", {"batch_size": 10.5}),
    ("max_queued_messages 0", {"max_queued_messages": 0}),
    ("max_buffer_bytes tiny", {"max_buffer_bytes": 10}),
    ("max_batch_bytes tiny", {"max_batch_bytes": 100}),
    ("max_request_size tiny", {"max_request_size": 10}),
    ("negative retries", {"max_retries": -1}),
    ("negative linger", {"linger_ms": -1}),
    ("linger str", {"linger_ms": "5"}),
    ("negative delivery timeout", {"delivery_timeout_ms": -5}),
    ("negative queue_full timeout", {"queue_full_timeout_ms": -1}),
    ("max_in_flight 0", {"max_in_flight": 0}),
    ("idempotent max_in_flight 6", {"required_acks": -1, "max_in_flight": 6}),
    ("unknown compression", {"compression": 99}),
    ("bad gzip level", {"compression": 1, "compression_level": 42}),
]


@pytest.mark.parametrize("kwargs", [k for _, k in BAD_CONFIGS], ids=[n for n, _ in BAD_CONFIGS])
def test_bad_config_raises_configuration_error(cluster: Cluster, kwargs: dict[str, Any]) -> None:
    before = threading.active_count()
    with pytest.raises((ConfigurationError, ValueError)) as info:
        BackgroundProducer(cluster, cluster._topics["t"], **kwargs)
    if "compression" not in kwargs:
        assert isinstance(info.value, ConfigurationError)
    assert threading.active_count() == before  # no sender thread left behind


def test_acks1_with_idempotence_raises(cluster: Cluster) -> None:
    with pytest.raises(ConfigurationError, match="idempotence"):
        BackgroundProducer(cluster, cluster._topics["t"], required_acks=1, enable_idempotence=True)


def test_wrong_cluster_or_topic_type(cluster: Cluster) -> None:
    with pytest.raises(ConfigurationError):
        BackgroundProducer(object(), cluster._topics["t"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        BackgroundProducer(cluster, "t")  # type: ignore[arg-type]


def test_good_configs_and_idempotence_default(cluster: Cluster) -> None:
    p = BackgroundProducer(cluster, cluster._topics["t"])
    q = _producer(cluster, max_in_flight=50, linger_ms=0)
    r = cluster._topics["t"].get_producer(
        required_acks=-1, enable_idempotence=False, max_in_flight=10
    )
    try:
        assert p._sender.engine.idempotent and p._sender.engine.acks == -1
        assert not q._sender.engine.idempotent and q._sender.engine.acks == 1
        assert isinstance(r, BackgroundProducer) and not r._sender.engine.idempotent
    finally:
        for x in (p, q, r):
            x.close(timeout=2)
    assert all(x._sender.stopped.is_set() for x in (p, q, r))


def test_bad_messages_raise_at_produce(cluster: Cluster) -> None:
    with _producer(cluster, max_batch_bytes=2048, max_request_size=2048) as p:
        with pytest.raises(InvalidMessageError):
            p.produce(42)
        with pytest.raises(InvalidMessageError):
            p.produce(b"v", partition=3)
        with pytest.raises(InvalidMessageError):
            p.produce(b"v", timestamp=-1)
        with pytest.raises(InvalidMessageError):
            p.produce(b"v", headers={"h": 1})
        with pytest.raises(grete.errors.MessageSizeTooLarge):
            p.produce(b"x" * 5000)
        assert p.metrics()["queued_messages"] == 0


def test_get_delivery_report_needs_delivery_reports(cluster: Cluster) -> None:
    with _producer(cluster) as p, pytest.raises(ConfigurationError):
        p.get_delivery_report(block=False)


# -- an unreachable cluster --------------------------------------------------


def test_queue_full_without_blocking_raises_at_once(cluster: Cluster) -> None:
    p = _producer(cluster, max_queued_messages=5, block_on_queue_full=False)
    try:
        futures = [p.produce(b"m%d" % i) for i in range(5)]
        t0 = time.monotonic()
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"one too many")
        assert time.monotonic() - t0 < 0.5
        assert p.metrics()["queued_messages"] == 5
    finally:
        p.close(timeout=0.1)
    assert all(f.done() and f.exception() is not None for f in futures)


def test_queue_full_by_bytes(cluster: Cluster) -> None:
    p = _producer(cluster, max_buffer_bytes=4096, block_on_queue_full=False)
    try:
        p.produce(b"x" * 3000)
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"y" * 2000)
        p.produce(b"z" * 100)  # still fits
    finally:
        p.close(timeout=0.1)


def test_queue_full_blocks_then_raises_after_the_timeout(cluster: Cluster) -> None:
    p = _producer(cluster, max_queued_messages=3, queue_full_timeout_ms=100)
    try:
        for i in range(3):
            p.produce(b"m%d" % i)
        t0 = time.monotonic()
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"blocked")
        waited = time.monotonic() - t0
        assert 0.08 <= waited < 3.0, waited
    finally:
        p.close(timeout=0.1)


def test_blocked_produce_resumes_when_space_frees(cluster: Cluster) -> None:
    """Space frees when messages fail (delivery timeout): the blocked produce() goes on."""
    p = _producer(
        cluster, max_queued_messages=2, delivery_timeout_ms=300, queue_full_timeout_ms=10_000
    )
    try:
        first = [p.produce(b"a"), p.produce(b"b")]
        t0 = time.monotonic()
        third = p.produce(b"c")  # blocks until the first two time out
        waited = time.monotonic() - t0
        assert 0.2 <= waited < 5.0, waited
        assert all(isinstance(f.exception(timeout=1), DeliveryTimeoutError) for f in first)
        # Queued, then given up on for lack of time like the first two (its
        # 300 ms run out well before close()).
        assert isinstance(third.exception(timeout=10), DeliveryTimeoutError)
        assert not third.maybe_written
    finally:
        p.close(timeout=0.1)


def test_flush_with_timeout_returns_the_unreported_count(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        futures = [p.produce(b"v%d" % i, partition=i % 3) for i in range(7)]
        t0 = time.monotonic()
        left = p.flush(timeout=0.1)
        elapsed = time.monotonic() - t0
        assert left == 7
        assert 0.08 <= elapsed < 2.0, elapsed
        assert not any(f.done() for f in futures)
    finally:
        p.close(timeout=0.1)


def test_close_with_dead_cluster_is_bounded_and_fails_every_future(cluster: Cluster) -> None:
    p = _producer(cluster, linger_ms=1000)
    seen: list[DeliveryFuture] = []
    futures = [p.produce(b"v%d" % i, callback=seen.append) for i in range(50)]
    t0 = time.monotonic()
    p.close(timeout=0.1)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.5, elapsed
    assert all(f.done() for f in futures)
    # Still queued when close() ran out of time (never sent: the cluster is
    # unreachable), so each fails with KafkaTimeoutError, certainly not written
    # (docs/guarantees.rst, "close() / stop() with messages queued"), also
    # one the sender was about to send when close() ran out (it failed with
    # StillConnecting under load, see test_guarantees.py).
    for f in futures:
        err = f.exception(timeout=0)
        assert isinstance(err, KafkaTimeoutError), err
        assert not f.maybe_written
        with pytest.raises(KafkaTimeoutError):
            f.result(timeout=0)
    assert sorted(id(f) for f in seen) == sorted(id(f) for f in futures)
    assert p._sender.stopped.is_set()
    assert p.metrics()["queued_messages"] == 0
    assert p.metrics()["errors"] == 50


def test_close_with_dead_cluster_idempotent(cluster: Cluster) -> None:
    """The idempotent default first needs a producer id, which never comes."""
    p = BackgroundProducer(cluster, cluster._topics["t"], retry_backoff_ms=20)
    futures = [p.produce(b"v") for _ in range(10)]
    t0 = time.monotonic()
    p.close(timeout=0.1)
    assert time.monotonic() - t0 < 2.5
    assert all(f.done() and f.exception() is not None for f in futures)


def test_delivery_timeout_fails_futures(cluster: Cluster) -> None:
    with _producer(cluster, delivery_timeout_ms=100) as p:
        t0 = time.monotonic()
        futures = [p.produce(b"v%d" % i) for i in range(20)]
        for f in futures:
            err = f.exception(timeout=5.0)
            assert isinstance(err, DeliveryTimeoutError), err
            # The connection was refused: nothing was ever sent.
            assert f.maybe_written is False and err.maybe_written is False
        assert time.monotonic() - t0 < 5.0
        assert p.flush(timeout=2.0) == 0
        assert p.metrics()["errors"] == 20


def test_result_timeout_raises_kafka_timeout_error(cluster: Cluster) -> None:
    with _producer(cluster, delivery_timeout_ms=60_000) as p:
        f = p.produce(b"never")
        with pytest.raises(KafkaTimeoutError):
            f.result(timeout=0.1)
        assert not f.done()
        p.close(timeout=0.1)
        assert f.done()


def test_produce_after_close_raises(cluster: Cluster) -> None:
    p = _producer(cluster)
    p.close(timeout=0.1)
    with pytest.raises(ProducerClosedError):
        p.produce(b"late")
    p.close()  # twice is fine
    with _producer(cluster) as q:
        pass
    with pytest.raises(ProducerClosedError):
        q.produce(b"late")
    r = _producer(cluster)
    r.stop()
    with pytest.raises(ProducerClosedError):
        r.produce(b"late")


def test_callbacks_and_add_done_callback_run_once(cluster: Cluster) -> None:
    calls: list[str] = []
    with _producer(cluster, delivery_timeout_ms=100) as p:
        f = p.produce(b"v", callback=lambda fut: calls.append("cb"))
        f.add_done_callback(lambda fut: calls.append("added"))
        assert f.exception(timeout=5) is not None
        assert _wait(lambda: len(calls) == 2, 2.0)
        f.add_done_callback(lambda fut: calls.append("late"))  # already done: at once
        assert calls == ["cb", "added", "late"]


def test_every_watcher_has_both_callback_slots_and_a_bare_one_still_runs(
    cluster: Cluster,
) -> None:
    # The sender reads a watcher's _callback and _callbacks directly (a
    # getattr of an unset slot costs an AttributeError raised and cleared per
    # message), so each way of listing a future sets both.
    calls: list[str] = []
    with _producer(cluster, delivery_timeout_ms=100) as p:
        p.produce(b"opens the sticky batch")
        f = p.produce(b"v", callback=lambda fut: calls.append("f"))  # the inline path
        k = p.produce(b"k", partition_key=b"key", callback=lambda fut: calls.append("k"))
        g = p.produce(b"w", timestamp=5)  # the full path, no callback...
        g.add_done_callback(lambda fut: calls.append("g"))  # ...then one added
        h = p.produce(b"x", timestamp=5, callback=lambda fut: calls.append("h"))
        assert (f._callbacks, k._callbacks, g._callback, h._callbacks) == (None,) * 4
        for fut in (f, k, g, h):
            assert fut.exception(timeout=5) is not None
        assert _wait(lambda: len(calls) == 4, 2.0)
        assert sorted(calls) == ["f", "g", "h", "k"]
        # A watcher listed some other way, one slot unset: still called.
        bare = object.__new__(DeliveryFuture)
        bare._callback = lambda fut: calls.append("bare")
        batch = ProducerBatch("t", 0, 0.0, p._sender)
        batch.watchers = [bare]
        bare._batch, bare._index = batch, 0
        p._sender.batch_done(batch, 0, -1, None)
        assert calls[-1] == "bare"


def test_raising_callback_does_not_kill_the_sender(cluster: Cluster) -> None:
    def boom(_: DeliveryFuture) -> None:
        raise RuntimeError("user bug")

    with _producer(cluster, delivery_timeout_ms=100) as p:
        a = p.produce(b"a", callback=boom)
        assert a.exception(timeout=5) is not None
        b = p.produce(b"b")
        assert isinstance(b.exception(timeout=5), DeliveryTimeoutError)
        assert not p._sender.stopped.is_set()


def test_add_done_callback_races_with_completion(cluster: Cluster) -> None:
    """A callback added while the sender resolves the future is never lost."""
    with _producer(cluster, delivery_timeout_ms=50, linger_ms=0) as p:
        lost = 0
        for _ in range(effort(30, 8)):
            futures = [p.produce(b"v") for _ in range(50)]
            hits: list[int] = []
            for f in futures:
                time.sleep(0.0005)
                f.add_done_callback(lambda fut, hits=hits: hits.append(1))  # type: ignore[misc]
            for f in futures:
                f.exception(timeout=5)
            _wait(lambda: len(hits) == len(futures), 1.0)  # noqa: B023
            lost += len(futures) - len(hits)
        assert lost == 0


def test_garbage_collected_producer_warns_and_fails_its_messages(cluster: Cluster) -> None:
    p = _producer(cluster, delivery_timeout_ms=100)
    futures = [p.produce(b"v%d" % i) for i in range(5)]
    sender = p._sender
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del p
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught), caught
    assert all(f.done() and f.exception() is not None for f in futures)
    assert _wait(sender.stopped.is_set, 3.0)


def test_forked_child_cannot_produce(cluster: Cluster) -> None:
    with _producer(cluster, delivery_timeout_ms=100) as p:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 3
            try:
                try:
                    p.produce(b"from the child")
                    code = 1
                except ProducerClosedError:
                    code = 0
            finally:
                os.write(w, bytes([code]))
                os._exit(code)
        os.close(w)
        try:
            got = b""
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                got = os.read(r, 1)
        finally:
            os.close(r)
            _, status = os.waitpid(pid, 0)
        assert got == b"\x00", got
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent is unaffected.
        f = p.produce(b"parent")
        assert isinstance(f.exception(timeout=5), DeliveryTimeoutError)


def test_read_reports_release_their_counts_and_a_batch_its_bytes(cluster: Cluster) -> None:
    # Each report read releases its message; a batch's bytes go with its last
    # report (counted a little long, never short), and reading them all
    # leaves nothing counted.
    # One batch, however slowly the six come: one partition, and a linger no
    # test outlives; flush() closes it. (Left to linger_ms and the sticky
    # partitioner, a pause of 20 ms between two produce() calls split them.)
    p = _producer(cluster, delivery_reports=True, delivery_timeout_ms=1000, linger_ms=600_000)
    try:
        futures = []
        for i in range(6):
            futures.append(p.produce(b"v%d" % i, partition=0))
            time.sleep(0.02)
        assert p.flush(timeout=30) == 0
        for f in futures:
            assert isinstance(f.exception(timeout=0), DeliveryTimeoutError)
        sender = p._sender
        before = sender.queued_bytes
        assert sender.queued_messages == 6 and before > 0
        reads = [p.get_delivery_report(timeout=1) for _ in range(5)]
        assert [f for f, _ in reads] == futures[:5]  # in produce order
        assert (sender.queued_messages, sender.queued_bytes) == (1, before)  # one batch
        p.get_delivery_report(timeout=1)
        assert (sender.queued_messages, sender.queued_bytes) == (0, 0)
    finally:
        p.close(timeout=0.1)


def test_delivery_reports_bound_the_queue(cluster: Cluster) -> None:
    """Undrained reports count against max_queued_messages."""
    p = _producer(
        cluster,
        delivery_reports=True,
        max_queued_messages=4,
        block_on_queue_full=False,
        delivery_timeout_ms=100,
    )
    try:
        futures = [p.produce(b"v%d" % i) for i in range(4)]
        for f in futures:
            assert f.exception(timeout=5) is not None
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"no room: reports not read")
        fut, err = p.get_delivery_report(timeout=1)
        assert fut in futures and isinstance(err, DeliveryTimeoutError)
        p.produce(b"room for one again")
        with pytest.raises(ProducerQueueFullError):
            p.produce(b"full again")
    finally:
        p.close(timeout=0.1)


def test_flush_waits_for_batches_between_accumulator_and_engine(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the sender has drained but not yet handed to the engine is
    neither in the accumulator nor in the engine: flush() must still wait."""
    from grete.producer.engine import ProduceEngine

    original = ProduceEngine.add

    def slow_add(self: ProduceEngine, batch: Any) -> None:
        time.sleep(0.2)  # widen the window between drain() and add()
        original(self, batch)

    monkeypatch.setattr(ProduceEngine, "add", slow_add)
    with _producer(cluster, delivery_timeout_ms=300, linger_ms=0) as p:
        f = p.produce(b"v")
        time.sleep(0.05)  # the sender has drained it and sits in add()
        assert p.flush(timeout=10) == 0
        assert f.done(), "flush() returned 0 with a message unreported"
        assert isinstance(f.exception(timeout=0), DeliveryTimeoutError)


def test_flush_runs_callbacks_before_returning(cluster: Cluster) -> None:
    calls: list[int] = []
    with _producer(cluster, delivery_timeout_ms=100) as p:
        for i in range(20):
            p.produce(b"v", partition=i % 3, callback=lambda f, i=i: calls.append(i))  # type: ignore[misc]
        assert p.flush(timeout=10) == 0
        assert sorted(calls) == list(range(20))


def test_sender_crash_fails_queued_messages_and_close_fails_later_ones(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender thread dying must not deadlock on its own lock, every queued
    message is failed, and one produced after the crash is refused at once
    (queued, it would wait for close() with nobody to send it)."""
    from grete.producer.driver import Driver

    p = _producer(cluster, linger_ms=60_000, delivery_timeout_ms=60_000)
    try:
        before = [p.produce(b"v%d" % i) for i in range(3)]  # lingering in the accumulator

        def broken(self: Driver, timeout: float) -> None:
            raise RuntimeError("injected sender bug")

        monkeypatch.setattr(Driver, "step", broken)
        for f in before:
            err = f.exception(timeout=5)
            assert isinstance(err, KafkaError) and "injected" in str(err)
        assert _wait(p._sender.stopped.is_set, 5.0)
        with pytest.raises(ProducerClosedError, match="sender thread stopped"):
            p.produce(b"after the crash")
        assert p.flush(timeout=1) == 0
    finally:
        t0 = time.monotonic()
        p.close(timeout=1.0)
        assert time.monotonic() - t0 < 3.0
    assert p.metrics()["queued_messages"] == 0


def test_failed_batches_are_logged_for_callers_who_dropped_their_futures(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="grete.producer"):
        p = _producer(cluster, delivery_timeout_ms=100)
        for i in range(3):
            p.produce(b"v%d" % i)  # fire and forget
        p.close(5)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed and "3 message(s) to t/" in failed[0].getMessage()
    assert p.metrics()["errors"] == 3
