"""The background producer: one topic, ``produce()`` returns a future at
once, a sender thread batches (``linger_ms``), sends, retries, and reports
every delivery.

A topic-bound front end over the producer core (:mod:`grete.producer.core`):
the same core, lanes and inline paths as :class:`~grete.KafkaProducer`, with
pykafka's API (``partition_key=``, delivery reports, ``stop()``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from grete.cluster import Cluster, Topic
from grete.errors import ConfigurationError, KafkaError
from grete.producer.config import given, resolve
from grete.producer.core import ProducerCore, abandoned
from grete.producer.fast import STAGE_MAX
from grete.producer.frontend import CoreFrontEnd
from grete.producer.futures import Callback, DeliveryFuture
from grete.protocol.compression import CompressionType

__all__ = ["STAGE_MAX", "BackgroundProducer", "DeliveryFuture"]

# Kept under its former name for the tests that import it from here.
_STAGE_MAX = STAGE_MAX


class BackgroundProducer(CoreFrontEnd):
    """Produce without waiting: each ``produce()`` returns a :class:`DeliveryFuture`.

    pykafka 2.x's asynchronous producer with its users' complaints answered:
    ``linger_ms`` defaults to 5 (not 5 s), memory is bounded by
    ``max_queued_messages`` and ``max_buffer_bytes`` whatever the broker does,
    ``stop()`` never hangs, and every message is reported, success or failure.

    :param required_acks: -1 by default (as Kafka 4's Java client), idempotent.
    :param linger_ms: how long a batch may wait to fill up (a float: fractions
        of a millisecond count; a lingered batch typically leaves within 0.1 ms of it).
    :param batch_size: the most messages per batch; ``max_batch_bytes`` the most bytes.
    :param max_queued_messages: bound on messages not yet reported
        (acknowledged, failed, or, with ``delivery_reports``, read)...
    :param max_buffer_bytes: ...and on their bytes (records' encoded sizes:
        the memory they take is more, by Python's per-object overhead and,
        for keyed records until their batch is sent, an encoded copy).
    :param block_on_queue_full: block ``produce()`` up to ``queue_full_timeout_ms``
        when the bound is reached (then raise), or raise at once.
    :param delivery_timeout_ms: the most time from ``produce()`` to a report
        (a request in flight then gets at least 1 s: see docs/guarantees.rst).
    :param delivery_reports: keep a queue of ``(future, error)`` for
        :meth:`get_delivery_report` (pykafka's style); its entries count
        against ``max_queued_messages`` until read, and a batch's bytes
        against ``max_buffer_bytes`` until its last report is read.
    :param serializer: turns non-bytes values into bytes.
    :param key_serializer: turns non-bytes keys into bytes.
    :param metrics_log_interval_ms: how often the sender thread logs
        :meth:`metrics` to the ``grete.producer.metrics`` logger at DEBUG
        (and once more when it stops); 0 turns it off. Nothing is built
        while that logger is not enabled for DEBUG.
    """

    def __init__(
        self,
        cluster: Cluster,
        topic: Topic,
        partitioner: Any = None,
        compression: CompressionType | int | str = CompressionType.NONE,
        max_retries: int = 2_147_483_647,
        retry_backoff_ms: int = 100,
        required_acks: int | str = -1,
        ack_timeout_ms: int = 30_000,
        batch_size: int = 10_000,
        *,
        linger_ms: float = 5,
        max_batch_bytes: int = 1 << 20,
        compression_level: int | None = None,
        max_request_size: int = 1 << 20,
        max_queued_messages: int = 100_000,
        max_buffer_bytes: int = 64 << 20,
        block_on_queue_full: bool = True,
        queue_full_timeout_ms: float = 60_000,
        delivery_timeout_ms: float = 120_000,
        max_in_flight: int = 5,
        enable_idempotence: bool | None = None,
        delivery_reports: bool = False,
        serializer: Callable[[Any], bytes] | None = None,
        key_serializer: Callable[[Any], bytes] | None = None,
        retry_backoff_max_ms: int = 1_000,
        metrics_log_interval_ms: float = 60_000,
        **unknown: Any,
    ) -> None:
        options = given(locals(), unknown)  # an unknown keyword: refused by name
        if not isinstance(cluster, Cluster) or not isinstance(topic, Topic):
            raise ConfigurationError("pass client.cluster and client.topics[name]")
        config = resolve("BackgroundProducer", options)
        self._cluster, self._topic = cluster, topic
        self._core = self._sender = core = ProducerCore(cluster, config)
        lane = core.lane(topic.name, topic)
        self._acc = lane._acc
        self._sticky = lane._sticky
        # The lane's produce() itself, inline paths and all: no call in between.
        self.produce = lane.produce  # type: ignore[method-assign]
        self._closed = False
        core.thread.start()
        self._finalizer = weakref.finalize(self, abandoned, core, "BackgroundProducer")

    def __repr__(self) -> str:
        return f"<grete.BackgroundProducer topic={self._topic.name!r}>"

    def produce(
        self,
        value: Any,
        partition_key: Any = None,
        timestamp: int | None = None,
        headers: Any = None,
        partition: int | None = None,
        callback: Callback | None = None,
    ) -> DeliveryFuture:
        """Queue one message; returns its :class:`DeliveryFuture` at once (or
        blocks while the queue is full, per ``block_on_queue_full``).

        ``value`` and ``partition_key``: bytes, str (UTF-8) or None (after
        the serializers); ``timestamp``: ms since the epoch (None: now);
        ``headers``: ``(str, bytes)`` pairs or a dict; ``partition``: this
        partition instead of the partitioner's choice; ``callback(future)``:
        called on the sender thread once the message is acknowledged or failed.
        (Each producer replaces this method by its topic lane's ``produce``:
        see ``grete.producer.fast``.)
        """
        raise AssertionError("replaced in __init__")  # pragma: no cover

    def get_delivery_report(
        self, block: bool = True, timeout: float | None = None
    ) -> tuple[DeliveryFuture, KafkaError | None]:
        """pykafka's delivery reports: ``(future, error)``; raises ``queue.Empty``."""
        return self._sender.get_delivery_report(block, timeout)

    def stop(self) -> None:
        """pykafka's name for :meth:`close`."""
        self.close()
