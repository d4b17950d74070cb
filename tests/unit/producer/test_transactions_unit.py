"""A transactional KafkaProducer without a broker: every misuse refused with a
clear error, abortable and fatal errors, close() with a transaction open,
bounded calls. (Real coordinators: tests/integration/test_transactions.py.)

The ``cluster`` fixture's broker is a closed port: no coordinator is ever
found, so a test that needs the producer initialized sets the state the
sender would have set.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from grete import ConfigurationError, KafkaError, KafkaProducer, KafkaTimeoutError
from grete.cluster import Cluster
from grete.errors import error_for_code
from grete.producer.errors import (
    TransactionAbortableError,
    TransactionAbortedError,
    TransactionFatalError,
    TransactionStateError,
)
from grete.producer.transactions import TransactionManager, TransactionState


def _producer(cluster: Cluster, **kw: Any) -> KafkaProducer:
    kw.setdefault("transactional_id", "tx-unit")
    kw.setdefault("linger_ms", 60_000)
    return KafkaProducer(cluster, **kw)


def _txn(p: KafkaProducer) -> TransactionManager:
    txn = p._core.txn
    assert txn is not None
    return txn


def _initialized(p: KafkaProducer) -> TransactionManager:
    """As if init_transactions() had completed (id 1000, epoch 0)."""
    txn = _txn(p)
    p._core.engine.set_producer_id(1000, 0)
    txn.state = TransactionState.READY
    return txn


def test_a_transactional_producer_is_idempotent_with_acks_all(cluster: Cluster) -> None:
    with pytest.raises(ConfigurationError, match="transactional_id needs"):
        _producer(cluster, required_acks=1)
    with pytest.raises(ConfigurationError, match="transactional_id needs"):
        _producer(cluster, enable_idempotence=False)
    with pytest.raises(ConfigurationError, match="transactional_id must be"):
        _producer(cluster, transactional_id="")
    p = _producer(cluster)
    try:
        assert p._core.engine.idempotent and p._core.engine.acks == -1
        assert p._core.engine.transactional_id == "tx-unit"
    finally:
        p.close(timeout=0.5)


def test_transaction_calls_on_a_plain_producer_are_refused(cluster: Cluster) -> None:
    p = KafkaProducer(cluster)
    try:
        for call in (
            p.init_transactions,
            p.begin_transaction,
            p.commit_transaction,
            p.abort_transaction,
            lambda: p.send_offsets_to_transaction({("t", 0): 1}, "g"),
        ):
            with pytest.raises(TransactionStateError, match="not transactional"):
                call()
    finally:
        p.close(timeout=0.5)


@pytest.mark.parametrize(
    "produce",
    [
        lambda p: p.produce("t", b"unkeyed"),
        lambda p: p.produce("t", b"keyed", key=b"k"),
        lambda p: p.produce("t", b"headers", headers={"h": b"v"}),
        lambda p: p.produce("new-topic", b"v"),
    ],
    ids=["unkeyed", "keyed", "headers", "new topic"],
)
def test_produce_outside_a_transaction_is_refused_on_every_path(
    cluster: Cluster, produce: Any
) -> None:
    p = _producer(cluster)
    try:
        with pytest.raises(TransactionStateError, match="begin_transaction"):
            produce(p)
        _initialized(p)
        with pytest.raises(TransactionStateError, match="begin_transaction"):
            produce(p)
        p.begin_transaction()
        assert not produce(p).done()  # in a transaction: queued
        assert p.metrics()["queued_messages"] == 1
    finally:
        p.close(timeout=0.5)


def test_each_misuse_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        with pytest.raises(TransactionStateError, match="init_transactions"):
            p.begin_transaction()
        with pytest.raises(TransactionStateError, match="commit_transaction"):
            p.commit_transaction()
        with pytest.raises(TransactionStateError, match="abort_transaction"):
            p.abort_transaction()
        txn = _initialized(p)
        with pytest.raises(TransactionStateError, match="init_transactions"):
            p.init_transactions()
        with pytest.raises(TransactionStateError, match="commit_transaction"):
            p.commit_transaction()
        with pytest.raises(TransactionStateError, match="send_offsets"):
            p.send_offsets_to_transaction({("t", 0): 5}, "group")
        p.begin_transaction()
        with pytest.raises(TransactionStateError, match="begin_transaction"):
            p.begin_transaction()
        assert txn.state is TransactionState.IN_TRANSACTION
        with pytest.raises(ConfigurationError, match="offset"):
            p.send_offsets_to_transaction({("t", 0): -1}, "group")
        with pytest.raises(ConfigurationError, match="group_id"):
            p.send_offsets_to_transaction({("t", 0): 1}, "")
        assert txn.state is TransactionState.IN_TRANSACTION
    finally:
        p.close(timeout=0.5)


def test_a_transaction_that_sent_nothing_ends_without_its_coordinator(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        p.commit_transaction(timeout=5)
        assert txn.state is TransactionState.READY
        with p.transaction():
            pass
        p.begin_transaction()
        p.abort_transaction(timeout=5)
        assert txn.state is TransactionState.READY
    finally:
        p.close(timeout=0.5)


def test_abort_fails_unsent_messages_as_not_written(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        futures = [p.produce("t", b"v%d" % i, key=b"k") for i in range(10)]
        futures += [p.produce("t", b"u%d" % i) for i in range(10)]
        p.abort_transaction(timeout=5)
        for f in futures:
            error = f.exception(timeout=1)
            assert isinstance(error, TransactionAbortedError) and not f.maybe_written
        assert txn.state is TransactionState.READY
        assert p.metrics()["queued_messages"] == 0
        p.begin_transaction()  # and a new one can begin
    finally:
        p.close(timeout=0.5)


def test_a_failed_message_makes_the_transaction_abortable(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        txn.batch_failed(error_for_code(19, "t/0"))  # NOT_ENOUGH_REPLICAS, given up on
        assert txn.state is TransactionState.ABORTABLE_ERROR
        assert p.transaction_state is TransactionState.ABORTABLE_ERROR
        with pytest.raises(TransactionAbortableError, match="abort_transaction"):
            p.produce("t", b"more")
        with pytest.raises(TransactionAbortableError, match="abort_transaction") as info:
            p.commit_transaction(timeout=1)
        assert info.value.__cause__ is not None
        with pytest.raises(TransactionStateError):
            p.begin_transaction()
        p.abort_transaction(timeout=5)
        assert txn.state is TransactionState.READY
        p.begin_transaction()
        assert not p.produce("t", b"again").done()
    finally:
        p.close(timeout=0.5)


@pytest.mark.parametrize("code", [90, 53, 35], ids=["fenced", "unauthorized", "unsupported"])
def test_a_fencing_error_leaves_the_producer_unusable(cluster: Cluster, code: int) -> None:
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        txn.batch_failed(error_for_code(code, "t/0"))
        assert txn.state is TransactionState.FATAL_ERROR
        for call in (
            lambda: p.produce("t", b"v"),
            lambda: p.commit_transaction(timeout=1),
            lambda: p.abort_transaction(timeout=1),
            p.begin_transaction,
        ):
            with pytest.raises(TransactionFatalError, match="close it") as info:
                call()
            assert isinstance(info.value, KafkaError)
    finally:
        p.close(timeout=0.5)


def test_calls_are_bounded_by_their_timeout_and_can_be_made_again(cluster: Cluster) -> None:
    # No coordinator is ever found: init_transactions() times out, and again.
    p = _producer(cluster)
    try:
        for _ in range(2):
            start = time.monotonic()
            with pytest.raises(KafkaTimeoutError, match="call it again"):
                p.init_transactions(timeout=0.3)
            assert time.monotonic() - start < 5
        assert _txn(p).state is TransactionState.INITIALIZING
    finally:
        p.close(timeout=0.5)


def test_close_with_a_transaction_open_fails_its_unsent_messages(cluster: Cluster) -> None:
    p = _producer(cluster)
    _initialized(p)
    p.begin_transaction()
    futures = [p.produce("t", b"v%d" % i) for i in range(5)]
    start = time.monotonic()
    p.close(timeout=1)
    assert time.monotonic() - start < 5
    for f in futures:
        assert isinstance(f.exception(timeout=1), TransactionAbortedError)
    from grete.producer import ProducerClosedError

    with pytest.raises(ProducerClosedError):
        p.produce("t", b"after")
    with pytest.raises(ProducerClosedError):
        p.begin_transaction()


def test_the_context_manager_aborts_on_an_exception_and_reraises_it(cluster: Cluster) -> None:
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        with pytest.raises(ValueError, match="boom"), p.transaction():
            f = p.produce("t", b"v")
            raise ValueError("boom")
        assert isinstance(f.exception(timeout=1), TransactionAbortedError)
        assert txn.state is TransactionState.READY
    finally:
        p.close(timeout=0.5)


def test_a_transaction_timed_out_by_its_coordinator_is_abortable(cluster: Cluster) -> None:
    # INVALID_PRODUCER_EPOCH: the coordinator aborted it at transaction_timeout_ms
    # and bumped the epoch (KIP-588); the abort then takes the new epoch with
    # InitProducerId instead of EndTxn.
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        txn.batch_failed(error_for_code(47, "t/0"))
        assert p.transaction_state is TransactionState.ABORTABLE_ERROR
        assert txn._recover
        with pytest.raises(TransactionAbortableError):
            p.commit_transaction(timeout=1)
    finally:
        p.close(timeout=0.5)


def test_partitions_whose_add_went_unanswered_are_asked_again(cluster: Cluster) -> None:
    # (Transactions v1.) An AddPartitionsToTxn whose connection broke: the
    # partitions go back to be added again, else the gate held their batches
    # for ever (a commit during a broker kill then ran out of time).
    p = _producer(cluster)
    try:
        txn = _initialized(p)
        p.begin_transaction()
        txn.coordinator = 1
        txn._adding = {("t", 0), ("t", 2)}
        txn._lost(time.monotonic(), KafkaError("connection lost"), False)
        assert txn._to_add == {("t", 0), ("t", 2)} and not txn._adding
        assert txn.coordinator is None  # looked up again
        assert not txn.gate("t", 0)  # still held until added
    finally:
        p.close(timeout=0.5)
