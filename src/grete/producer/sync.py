"""The synchronous ``Producer`` of pykafka's documentation, on a modern Kafka."""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain, islice, repeat
from operator import add, itemgetter
from typing import Any, overload

from grete._murmur2 import unsigned_murmur2_bytes
from grete.cluster import Cluster, Partition, Topic
from grete.errors import ConfigurationError, KafkaError
from grete.partitioners import java_key_hash, random_partitioner
from grete.producer.accumulator import (
    RECORD_OVERHEAD,
    Accumulator,
    cut_batches,
    keyed_record_sizes,
    record_size,
)
from grete.producer.batch import ProducerBatch
from grete.producer.config import given, resolve
from grete.producer.driver import Driver
from grete.producer.engine import Plan
from grete.producer.errors import (
    InvalidMessageError,
    MessageFailure,
    ProduceFailureError,
    ProducerClosedError,
)
from grete.producer.frontend import engine_for
from grete.producer.grouping import KeyIds, grouped, hashed_ids, java_ids
from grete.producer.message import DeliveryResult, Headers, Message, to_bytes, to_headers
from grete.protocol.compression import CompressionType
from grete.protocol.records import BATCH_OVERHEAD

Partitioner = Callable[[Sequence[Partition], "bytes | None"], Partition]
# An acknowledged batch, as results need it: (partition, input indexes, base
# offset, timestamps: one per message, or one for all).
_Done = tuple[int, "Sequence[int]", int, "int | Sequence[int]"]


def _by_partition(
    keys: list[bytes],
    values: list[bytes],
    ids_of: KeyIds,
    count: int,
    first: int = 0,
    typecode: str = "q",
) -> Iterator[tuple[int, array[int], list[bytes], list[bytes]]]:
    """``(partition id, input indexes, keys, values)`` for each partition with
    messages, in input order, where a key goes to ``(hash(key) & 0x7fffffff)
    % count`` as in the Java client (``ids_of(keys, count)``: each key's
    partition id).
    Indexes count from ``first``, in an array of ``typecode``."""
    indexes = range(first, first + len(keys))
    for pid, take in grouped(ids_of(keys, count), count):
        yield pid, array(typecode, take(indexes)), take(keys), take(values)


# An iterator of messages is read this many at a time by the keyed fast path.
_READ_CHUNK = 4_096
# Batches built and waiting to be sent, past which building more waits for
# answers (the keyed path builds as it sends: this bounds its memory).
_AHEAD_MAX = 16
_OVERHEADS = repeat(RECORD_OVERHEAD)
# While batches are being built, the requests ready are sent every this many batches.
_STEP_EVERY = 8


#: Keyed messages as columns, a chunk at a time: ``(keys, values)`` pairs of lists.
_Chunks = list[tuple[list[bytes], list[bytes]]]


def _keyed_columns(messages: Iterable[Any]) -> tuple[_Chunks, Iterable[Any] | None]:
    """Split ``(bytes, bytes)`` tuples into key and value columns with C-level
    passes, ``_READ_CHUNK`` messages at a time (an iterator's tuples are never
    all held at once). Returns ``(chunks, None)``, or, at the first chunk of
    another shape, ``([], everything)``: the same messages, in order, for the
    general path (what was read is put back in front of the rest). Chunks,
    not one column, so that their consumer can free each once it is grouped."""
    chunks: _Chunks = []
    source = iter(messages)
    for chunk in iter(lambda: list(islice(source, _READ_CHUNK)), []):
        if (
            set(map(type, chunk)) != {tuple}
            or set(map(len, chunk)) != {2}
            or set(map(type, ck := list(map(itemgetter(0), chunk)))) != {bytes}
            or set(map(type, cv := list(map(itemgetter(1), chunk)))) != {bytes}
        ):
            if isinstance(messages, list):
                return [], messages
            # Put back what was read, in front of the rest.
            return [], chain(_pairs(chunks), chunk, source)
        chunks.append((ck, cv))
    return chunks, None


def _pairs(chunks: _Chunks) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, value)`` tuples again."""
    return chain.from_iterable(zip(keys, values, strict=True) for keys, values in chunks)


class Producer:
    """Produce messages to one topic and wait until the brokers acknowledge them.

    :param cluster: the :class:`~grete.cluster.Cluster` (``client.cluster``).
    :param topic: the :class:`~grete.cluster.Topic` (``client.topics["name"]``).
    :param partitioner: ``partitioner(partitions, key) -> Partition``; pykafka's
        default :func:`~grete.partitioners.random_partitioner`. Use
        :func:`~grete.partitioners.hashing_partitioner` for keys placed as the
        Java client places them.
    :param compression: a :class:`~grete.CompressionType`.
    :param max_retries: how many times a batch the brokers failed is sent again.
        Waiting for a new leader after a broker failure spends no attempts: it is
        bounded by ``delivery_timeout_ms`` instead.
    :param retry_backoff_ms: first backoff before a retry; doubles per attempt
        (with jitter) up to ``retry_backoff_max_ms``.
    :param required_acks: 0 (no answer), 1 (the leader) or -1 (all in-sync replicas).
    :param ack_timeout_ms: how long the broker may wait for replicas (the
        Produce request's timeout).
    :param batch_size: the most *messages* in one record batch. pykafka's
        docstring said bytes, but its default (200) and its behaviour counted
        messages; grete keeps that meaning and bounds bytes separately with
        ``max_request_size``.
    :param compression_level: codec level (gzip 1-9, lz4 1-17, zstd -131072..22).
    :param max_request_size: the most bytes in one Produce request (default 1 MiB);
        a single message larger than this fails alone with ``MessageSizeTooLarge``.
    :param enable_idempotence: exactly-once per partition with the broker's
        sequence checks. Default: on when ``required_acks=-1`` (as the Java client).
    :param max_in_flight: requests in flight per broker (at most 5 with idempotence).
    :param delivery_timeout_ms: the longest a ``produce()`` call may take for one
        message, retries and leader elections included (default 2 min, as Java).
    """

    def __init__(
        self,
        cluster: Cluster,
        topic: Topic,
        partitioner: Partitioner | Any = random_partitioner,
        compression: CompressionType | int = CompressionType.NONE,
        max_retries: int = 3,
        retry_backoff_ms: int = 100,
        required_acks: int = 1,
        ack_timeout_ms: int = 10_000,
        batch_size: int = 200,
        *,
        compression_level: int | None = None,
        max_request_size: int = 1 << 20,
        enable_idempotence: bool | None = None,
        max_in_flight: int = 5,
        retry_backoff_max_ms: int = 1_000,
        delivery_timeout_ms: int = 120_000,
        **unknown: Any,
    ) -> None:
        options = given(locals(), unknown)  # an unknown keyword: refused by name
        if not isinstance(cluster, Cluster):
            raise ConfigurationError("cluster must be a grete Cluster (client.cluster)")
        if not isinstance(topic, Topic):
            raise ConfigurationError("topic must be a grete Topic (client.topics[name])")
        config = resolve("Producer", options)
        self._batch_size = config.batch_size
        self._max_request_size = config.max_request_size
        self._cluster = cluster
        self._topic = topic
        assert config.partitioner is not None  # the Producer's default is random_partitioner
        self._partitioner: Partitioner = config.partitioner
        self._on_new_batch = getattr(config.partitioner, "on_new_batch", None)
        # Java's murmur2 when the partitioner is one of grete's own Java-compatible
        # ones: lists of (key, value) tuples then take the _produce_keyed path.
        self._key_hash = java_key_hash(config.partitioner)
        self._lock = threading.Lock()
        self._closed = False
        self._done: list[_Done] = []
        self._failures: list[MessageFailure] = []
        self._engine = engine_for(config, self._batch_done)
        self._driver = Driver(self._engine, cluster)

    def __repr__(self) -> str:
        return f"<grete.Producer topic={self._topic.name!r}>"

    # -- the seed's API ----------------------------------------------------

    def produce(self, messages: Iterable[Any]) -> Sequence[DeliveryResult]:
        """Produce ``messages`` and wait until every one is acknowledged.

        Each message is ``bytes``/``str`` (a value), a ``(key, value)`` tuple,
        or a :class:`~grete.Message`; ``messages`` may be any iterable (an
        iterator such as ``zip(keys, values)`` is read once, without a copy).
        Returns one :class:`~grete.DeliveryResult` per message, in input order.
        Raises :class:`~grete.ProduceFailureError` (which carries the results
        of the others) when any message failed, and
        :class:`~grete.InvalidMessageError` before sending anything when a
        message is malformed.
        """
        with self._lock:
            if self._closed:
                raise ProducerClosedError("produce() on a closed producer")
            if isinstance(messages, (bytes, str)):
                raise InvalidMessageError(
                    "produce() takes an iterable of messages, not one message"
                )
            if (
                isinstance(messages, list)
                and messages
                and type(messages[0]) is bytes
                and self._partitioner is random_partitioner
                and set(map(type, messages)) == {bytes}
            ):
                return self._produce_values(messages)
            if self._key_hash is not None and (messages or not isinstance(messages, list)):
                chunks, rest = _keyed_columns(messages)
                if rest is None:
                    keyed = self._produce_keyed(chunks, self._key_hash)
                    if keyed is not None:
                        return keyed
                    messages = _pairs(chunks)
                else:
                    messages = rest
            # Lazily: a sticky partitioner must see each batch close before it
            # places the next message, and an iterator (say zip(keys, values))
            # is read once without a copy. Nothing is sent before the loop ends.
            return self._produce_all(self._normalise(messages))

    def _partition_messages(
        self, messages: Iterable[Any]
    ) -> Iterator[tuple[tuple[bytes | None, bytes | None], int]]:
        """Assign messages to partitions with the partitioner: yields
        ``((key, value), partition_id)`` in input order."""
        for key, value, _headers, _ts, partition in self._normalise(messages):
            yield (key, value), partition

    def _produce(
        self,
        message_partition_tups: Iterable[tuple[tuple[bytes | None, bytes | None], int]],
        attempt: int = 1,
    ) -> Sequence[DeliveryResult]:
        """Publish messages whose partitions are already assigned (the output of
        :meth:`_partition_messages`); retries happen inside, up to ``max_retries``."""
        now = int(time.time() * 1000)
        return self._produce_all([(k, v, None, now, p) for (k, v), p in message_partition_tups])

    def _send_request(self, broker: int, req: Plan, attempt: int = 1) -> None:
        """Send one Produce request to ``broker``; its answer is handled by the
        engine as it arrives (retries are requeued there)."""
        self._driver._send_request(req)

    # -- internals ---------------------------------------------------------

    def _normalise(
        self, messages: Iterable[Any]
    ) -> Iterator[tuple[bytes | None, bytes | None, Headers | None, int, int]]:
        """Validate each message and pick its partition, before anything is sent."""
        topic = self._topic
        if not topic.partitions:
            topic = self._cluster.topics[topic.name]
        partitions = topic.partition_list()
        partitioner = self._partitioner
        now = int(time.time() * 1000)
        for index, msg in enumerate(messages):
            headers: Headers | None = None
            timestamp = now
            explicit: int | None = None
            key: bytes | None
            value: bytes | None
            if type(msg) is bytes:
                key, value = None, msg
            elif isinstance(msg, tuple):
                if len(msg) != 2:
                    raise InvalidMessageError(
                        f"message {index}: a tuple must be (key, value), got {len(msg)} items"
                    )
                key = to_bytes(msg[0], "key", index)
                value = to_bytes(msg[1], "value", index)
            elif isinstance(msg, Message):
                key = to_bytes(msg.key, "key", index)
                value = to_bytes(msg.value, "value", index)
                headers = to_headers(msg.headers, index)
                if msg.timestamp is not None:
                    if (
                        not isinstance(msg.timestamp, int)
                        or isinstance(msg.timestamp, bool)
                        or not 0 <= msg.timestamp < 2**63
                    ):
                        raise InvalidMessageError(
                            f"message {index}: timestamp must be a non-negative int (ms), "
                            f"not {msg.timestamp!r}"
                        )
                    timestamp = msg.timestamp
                explicit = msg.partition
            else:
                key, value = None, to_bytes(msg, "value", index)
            if explicit is not None:
                if type(explicit) is not int or explicit not in topic.partitions:
                    raise InvalidMessageError(
                        f"message {index}: topic {topic.name!r} has no partition {explicit!r}"
                    )
                partition = explicit
            else:
                partition = partitioner(partitions, key).id
            yield key, value, headers, timestamp, partition

    def _produce_all(
        self, messages: Iterable[tuple[bytes | None, bytes | None, Headers | None, int, int]]
    ) -> Sequence[DeliveryResult]:
        """Batch normalised messages per partition and send them."""
        failures: list[MessageFailure] = []
        max_bytes = self._max_request_size - BATCH_OVERHEAD
        acc = Accumulator(
            self._topic.name,
            max_records=self._batch_size,
            max_bytes=max_bytes,
            on_new_batch=self._partition_done,
            int_handles=True,
        )
        now = time.monotonic()
        count = 0
        for index, (key, value, headers, timestamp, partition) in enumerate(messages):
            count += 1
            size = record_size(key, value, headers)
            if size > max_bytes:
                failures.append(MessageFailure(index, self._too_large(index, size), False))
                continue
            acc.append(partition, key, value, headers, timestamp, index, size, now)
        return self._send_batches(count, acc.drain(now, force=True), failures)

    def _partition_done(self, partition: int) -> None:
        if self._on_new_batch is not None:
            self._on_new_batch(self._sorted_partitions(), partition)

    def _chunks(self, sizes: list[int]) -> Iterator[tuple[int, int, int]]:
        """This producer's batch bounds over one partition's records."""
        return cut_batches(sizes, self._batch_size, self._max_request_size - BATCH_OVERHEAD)

    def _produce_keyed(
        self, chunks: _Chunks, key_hash: Callable[[bytes], int]
    ) -> Sequence[DeliveryResult] | None:
        """The keyed fast path: ``(key, value)`` tuples of ``bytes`` (split
        into columns by :func:`_keyed_columns`, which checked them all) with a
        Java-compatible partitioner, grouped by partition with C-level passes,
        so Python runs per batch, not per message. None: the topic's partition
        ids are not 0..n-1, take the general path."""
        topic = self._topic if self._topic.partitions else self._cluster.topics[self._topic.name]
        count = len(topic.partitions)
        if not count or set(topic.partitions) != set(range(count)):
            return None  # ids not 0..n-1: the partitioner's own lookup decides
        # Murmur2: every key's partition at once, no Python call per key.
        ids_of = java_ids if key_hash is unsigned_murmur2_bytes else hashed_ids(key_hash)
        failures: list[MessageFailure] = []
        total = sum(len(keys) for keys, _ in chunks)
        batches = self._keyed_batches(chunks, ids_of, count, failures)
        return self._send_batches(total, batches, failures)

    def _keyed_batches(
        self,
        chunks: _Chunks,
        ids_of: KeyIds,
        count: int,
        failures: list[MessageFailure],
    ) -> Iterator[ProducerBatch]:
        """The batches of :meth:`_produce_keyed`, each holding messages of one
        partition in input order: grouped a chunk at a time, a batch is
        yielded (and can be sent) as soon as it is full; a partition's
        remainder waits for the next chunk (``rest``). Each chunk is taken out
        of ``chunks`` as it is grouped, so its columns are freed then."""
        chunks.reverse()  # popped from the end, in input order
        # Input indexes, kept until the call returns (results need them): 4
        # bytes each rather than 8 when they fit.
        typecode = "i" if sum(len(keys) for keys, _ in chunks) < 2**31 else "q"
        now_ms, created = int(time.time() * 1000), time.monotonic()
        max_bytes = self._max_request_size - BATCH_OVERHEAD
        rest: dict[int, tuple[array[int], list[bytes], list[bytes]]] = {}

        def cut(
            pid: int, indexes: array[int], pkeys: list[bytes], pvalues: list[bytes], hold: bool
        ) -> Iterator[ProducerBatch]:
            sizes = list(keyed_record_sizes(pkeys, pvalues))
            cuts = list(self._chunks(sizes))
            if hold:  # the last cut may fill up with the next chunk's messages
                start, _, _ = cuts.pop()
                rest[pid] = (indexes[start:], pkeys[start:], pvalues[start:])
            for start, end, total in cuts:
                if total > max_bytes:
                    index = indexes[start]
                    failures.append(MessageFailure(index, self._too_large(index, total), False))
                    continue
                batch = ProducerBatch(self._topic.name, pid, created)
                batch.fill(
                    pvalues[start:end], indexes[start:end], now_ms, total, keys=pkeys[start:end]
                )
                yield batch

        first = 0
        while chunks:
            keys, values = chunks.pop()
            hold = bool(chunks)
            for pid, indexes, pkeys, pvalues in _by_partition(
                keys, values, ids_of, count, first, typecode
            ):
                held = rest.pop(pid, None)
                if held is not None:
                    indexes, pkeys, pvalues = held[0] + indexes, held[1] + pkeys, held[2] + pvalues
                yield from cut(pid, indexes, pkeys, pvalues, hold)
            first += len(keys)
            del keys, values
        # Partitions the last chunk had no message for still hold their remainder.
        for pid, (indexes, pkeys, pvalues) in sorted(rest.items()):
            yield from cut(pid, indexes, pkeys, pvalues, False)

    def _produce_values(self, values: list[bytes]) -> Sequence[DeliveryResult]:
        """The fast path: unkeyed ``bytes`` values with the random partitioner.

        Consecutive values fill a batch for one randomly chosen partition
        (the "sticky" strategy of KIP-794): the same uniform spread as a random
        pick per message, with fewer, fuller batches and no per-message work
        in Python beyond measuring sizes.
        """
        failures: list[MessageFailure] = []
        batches: list[ProducerBatch] = []
        partitions = self._sorted_partitions()
        now_ms, created = int(time.time() * 1000), time.monotonic()
        sizes = list(map(add, map(len, values), _OVERHEADS))
        for start, end, total in self._chunks(sizes):
            if total > self._max_request_size - BATCH_OVERHEAD:
                failures.append(MessageFailure(start, self._too_large(start, total), False))
            else:
                batch = ProducerBatch(self._topic.name, random_partitioner(partitions).id, created)
                batch.fill(values[start:end], range(start, end), now_ms, total)
                batches.append(batch)
        return self._send_batches(len(values), batches, failures)

    def _too_large(self, index: int, size: int) -> KafkaError:
        from grete.errors import MessageSizeTooLarge

        return MessageSizeTooLarge(
            f"message {index} is {size} bytes encoded, over max_request_size "
            f"({self._max_request_size}); it was not sent"
        )

    def _sorted_partitions(self) -> list[Partition]:
        return self._topic.partition_list()

    def _send_batches(
        self, count: int, batches: Iterable[ProducerBatch], failures: list[MessageFailure]
    ) -> Sequence[DeliveryResult]:
        """Hand batches to the engine and drive it until all are answered.
        ``batches`` may be a generator still building them (its failures land
        in ``failures`` as it goes): what is ready is sent meanwhile."""
        self._drain_leftovers()
        engine, driver = self._engine, self._driver
        done: list[_Done] = []
        self._done = done
        self._failures = failures
        try:
            for i, batch in enumerate(batches, 1):
                engine.add(batch)
                if not i % _STEP_EVERY:
                    driver.step(0)  # the brokers work on these while we build more
                    while engine.queued > _AHEAD_MAX:
                        driver.step(0.05)
            while not engine.idle:
                driver.step(0.05)
        except BaseException as exc:
            # Don't leave this call's batches queued for the next call to send
            # (and to report into its results), nor its requests counted in
            # flight: one interrupted while being sent is answered by nobody,
            # and the next call would wait for it for ever.
            error = exc if isinstance(exc, KafkaError) else KafkaError(repr(exc))
            engine.fail_all(error)
            driver.abandon_in_flight(error)
            raise
        results = ProduceResults(count, done, self._topic.name)
        if failures:
            failures.sort(key=lambda f: f.index)
            raise ProduceFailureError(results, failures)
        return results

    def _drain_leftovers(self) -> None:
        """Requests left in flight by an interrupted call: let them land first,
        so that their outcomes don't land in the next call's results."""
        self._done, self._failures = [], []
        while not self._engine.idle:
            self._driver.step(0.05)

    def _batch_done(
        self, batch: ProducerBatch, base_offset: int, append_time: int, error: KafkaError | None
    ) -> None:
        handles = batch.handles
        assert handles is not None  # this producer's batches all have them
        if error is not None:
            self._failures.extend(MessageFailure(i, error, batch.maybe_written) for i in handles)
        else:
            # Not the batch: its key and value columns can go now, results
            # need only where each message went and when.
            stamps: int | Sequence[int] = batch.timestamps or batch.base_timestamp
            if append_time >= 0:
                stamps = append_time
            self._done.append((batch.partition, handles, base_offset, stamps))

    def close(self) -> None:
        """Stop accepting messages. (Nothing is buffered between calls.)"""
        self._closed = True

    def stop(self) -> None:
        """pykafka's name for :meth:`close`."""
        self.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProduceResults(Sequence[DeliveryResult]):
    """The results of one ``produce()`` call, one per message in input order.

    Built lazily from the acknowledged batches: a caller who only needs to
    know that everything was written pays nothing per message. Failed
    messages (inside :class:`ProduceFailureError`) read as None.
    """

    def __init__(self, count: int, done: list[_Done], topic: str = "") -> None:
        self._count = count
        self._topic = topic
        self._done = done
        self._items: list[DeliveryResult | None] | None = None

    def _materialise(self) -> list[DeliveryResult | None]:
        items: list[DeliveryResult | None] = [None] * self._count
        topic = self._topic
        for p, handles, base, stamps in self._done:
            n = len(handles)
            times = repeat(stamps, n) if isinstance(stamps, int) else stamps
            offsets = range(base, base + n) if base >= 0 else repeat(-1, n)
            for i, off, ts in zip(handles, offsets, times, strict=True):
                items[i] = DeliveryResult(p, off, ts, topic)
        self._done = []
        return items

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> DeliveryResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[DeliveryResult]: ...
    def __getitem__(self, i: int | slice) -> DeliveryResult | list[DeliveryResult]:
        if self._items is None:
            self._items = self._materialise()
        return self._items[i]  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"<ProduceResults {self._count} messages>"
