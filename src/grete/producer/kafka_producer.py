"""``KafkaProducer``: one producer for every topic, as the Java client,
confluent-kafka and kafka-python have it: the topic is given per message.

One sender thread, one buffer bound, one producer id and epoch for all
topics (the producer core, :mod:`grete.producer.core`); each topic gets a
lane of its own (:mod:`grete.producer.lane`) on its first message.
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from grete.cluster import Cluster
from grete.errors import ConfigurationError
from grete.producer.config import given, resolve
from grete.producer.core import ProducerCore, abandoned
from grete.producer.errors import (
    InvalidMessageError,
    ProducerClosedError,
    TransactionStateError,
)
from grete.producer.frontend import CoreFrontEnd
from grete.producer.futures import Callback, DeliveryFuture
from grete.producer.transactions import TransactionManager, TransactionState
from grete.protocol.compression import CompressionType

if TYPE_CHECKING:
    from grete.client import KafkaClient
    from grete.producer.fast import FastLane

# Kafka's rule for topic names (kafka.common.internals.Topic).
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")


class KafkaProducer(CoreFrontEnd):
    """Produce to any topic: ``produce(topic, value, key=...)`` returns a
    :class:`~grete.DeliveryFuture` at once; one sender thread batches
    (``linger_ms``), sends, retries and reports every message.

    Made by ``client.producer(**options)`` or ``KafkaProducer(client,
    **options)``, where ``client`` is a :class:`~grete.KafkaClient` (or its
    ``cluster``). Options, defaults and bounds: see the options table in
    the documentation (the same as :class:`~grete.BackgroundProducer`'s,
    without ``delivery_reports``, plus ``unknown_topic_timeout_ms``).
    Idempotent by default (``required_acks=-1``): one producer id and epoch
    for every topic.

    A topic's metadata is fetched on its first message without blocking:
    its messages wait in order (counted against the buffer bound) and are
    sent once the cluster lists the topic. A topic the cluster does not
    list within ``unknown_topic_timeout_ms`` (nor auto-creates, where the
    brokers allow it) fails its own messages with
    :class:`~grete.UnknownTopicOrPartition`; other topics are not affected.
    """

    def __init__(
        self,
        client: KafkaClient | Cluster,
        *,
        partitioner: Any = None,
        compression: CompressionType | int | str = CompressionType.NONE,
        compression_level: int | None = None,
        max_retries: int = 2_147_483_647,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1_000,
        required_acks: int | str = -1,
        ack_timeout_ms: int = 30_000,
        batch_size: int = 10_000,
        linger_ms: float = 5,
        max_batch_bytes: int = 1 << 20,
        max_request_size: int = 1 << 20,
        max_queued_messages: int = 100_000,
        max_buffer_bytes: int = 64 << 20,
        block_on_queue_full: bool = True,
        queue_full_timeout_ms: float = 60_000,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 5,
        enable_idempotence: bool | None = None,
        serializer: Callable[[Any], bytes] | None = None,
        key_serializer: Callable[[Any], bytes] | None = None,
        metrics_log_interval_ms: float = 60_000,
        unknown_topic_timeout_ms: float = 10_000,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = 60_000,
        **unknown: Any,
    ) -> None:
        options = given(locals(), unknown)  # an unknown keyword: refused by name
        cluster = client if isinstance(client, Cluster) else getattr(client, "cluster", None)
        if not isinstance(cluster, Cluster):
            raise ConfigurationError("pass a grete KafkaClient (or its cluster)")
        config = resolve("KafkaProducer", options)
        self._cluster = cluster
        self._core = core = ProducerCore(cluster, config)
        self._lanes = core.lanes  # topic -> lane, read per message
        self._closed = False
        core.thread.start()
        self._finalizer = weakref.finalize(self, abandoned, core, "KafkaProducer")

    def __repr__(self) -> str:
        return f"<grete.KafkaProducer topics={sorted(list(self._lanes))!r}>"

    def produce(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
        headers: Any = None,
        callback: Callback | None = None,
    ) -> DeliveryFuture:
        """Queue one message for ``topic``; returns its
        :class:`~grete.DeliveryFuture` at once (or blocks while the buffer
        is full, per ``block_on_queue_full``).

        ``value`` and ``key``: bytes, str (UTF-8) or None (after the
        serializers; a None value is a tombstone); ``partition``: this
        partition instead of the partitioner's choice; ``timestamp``: ms
        since the epoch (None: now); ``headers``: ``(str, bytes)`` pairs or
        a dict; ``callback(future)``: called on the sender thread once the
        message is acknowledged or failed. The future's result is a
        :class:`~grete.DeliveryResult` naming the topic, partition, offset
        and timestamp.
        """
        try:
            lane = self._lanes[topic]
        except (KeyError, TypeError):  # a topic's first message (or not a name)
            lane = self._lane(topic)
        return lane.produce(value, key, timestamp, headers, partition, callback)

    def _lane(self, topic: Any) -> FastLane:
        """A topic's first message: its name checked, its lane made."""
        if isinstance(topic, bytes):
            topic = topic.decode("utf-8", "replace")
        if not isinstance(topic, str) or not _LEGAL_TOPIC.fullmatch(topic) or topic in (".", ".."):
            raise InvalidMessageError(
                f"topic must be a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -), not {topic!r}"
            )
        return self._core.lane(topic)

    # -- transactions ------------------------------------------------------

    def _txn(self) -> TransactionManager:
        txn = self._core.txn
        if txn is None:
            raise TransactionStateError(
                "this producer is not transactional (give it a transactional_id)"
            )
        if self._closed:
            raise ProducerClosedError("the producer is closed")
        return txn

    @property
    def transaction_state(self) -> TransactionState:
        """Where the transactional producer stands (see :class:`TransactionState`)."""
        return self._txn().state

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register the ``transactional_id`` with its coordinator: fences any
        earlier producer with the same id and aborts (or finishes) the
        transaction it left open. Called once, before the first
        transaction; may be called again after a timeout (it goes on)."""
        self._txn().init(timeout)

    def begin_transaction(self) -> None:
        """Start a transaction: ``produce()`` is allowed until it is committed
        or aborted."""
        self._txn().begin()

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Send every message of the transaction, wait for their
        acknowledgements, then commit: all of them (and the offsets sent
        with :meth:`send_offsets_to_transaction`) become visible to
        ``read_committed`` readers at once. Raises
        :class:`~grete.producer.errors.TransactionAbortableError` when a message
        failed (then call :meth:`abort_transaction`)."""
        self._txn().commit(timeout)

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort the transaction: messages not sent yet fail (not written),
        those sent are never visible to ``read_committed`` readers. Allowed
        while messages are in flight and after a failed commit."""
        self._txn().abort(timeout)

    def send_offsets_to_transaction(
        self,
        offsets: Mapping[tuple[str, int], int],
        group_id: str,
        *,
        generation_id: int = -1,
        member_id: str = "",
        group_instance_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Commit a consumer group's offsets in the transaction (exactly-once
        consume-transform-produce): ``offsets`` maps ``(topic, partition)`` to
        the next offset to read. They count only if the transaction commits."""
        self._txn().send_offsets(
            offsets,
            group_id,
            generation_id=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            timeout=timeout,
        )

    @contextlib.contextmanager
    def transaction(self, timeout: float | None = None) -> Iterator[KafkaProducer]:
        """``with producer.transaction(): ...``: begins a transaction, commits
        it when the block ends, aborts it when the block raises (the
        exception is re-raised)."""
        txn = self._txn()
        txn.begin()
        try:
            yield self
            txn.commit(timeout)
        except BaseException:
            # The block raised, or the commit failed (abortable): aborted, and
            # the exception goes on. (A fatal error leaves nothing to abort.)
            if txn.state in (TransactionState.IN_TRANSACTION, TransactionState.ABORTABLE_ERROR):
                txn.abort(timeout)
            raise
