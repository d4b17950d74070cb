"""Partitioners: which partition of a topic a message goes to.

A partitioner is anything called as ``partitioner(partitions, key)`` that returns
one element of ``partitions``:

* ``partitions`` is a sequence of partition objects of one topic; all a
  partitioner needs is their ``.id`` (:class:`HasId`), so grete's own
  ``grete.cluster.Partition``, pykafka-style objects and test doubles all work;
* ``key`` is the message key, ``bytes`` or ``None``.

Producers accept instances of :class:`BasePartitioner` and plain callables with
that signature alike (the :data:`Partitioner` type).

What is here, and whose behaviour it reproduces:

============================== ===============================================
:func:`random_partitioner`     pykafka's default: a uniformly random partition,
                               key ignored.
:class:`RoundRobinPartitioner` each partition in turn, key ignored.
:class:`HashingPartitioner`    keyed messages exactly where the Java client puts
                               them: ``toPositive(murmur2(key)) % numPartitions``.
:class:`StickyPartitioner`     the Java client's default (KIP-480/KIP-794,
                               simplified): keyed messages hashed as above,
                               unkeyed ones stick to one partition until its
                               batch is full, so batches fill up.
============================== ===============================================

:class:`DefaultPartitioner` is :class:`StickyPartitioner`; the pykafka-compatible
producer keeps :func:`random_partitioner` as its default instead.
"""

from __future__ import annotations

import itertools
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from operator import attrgetter
from typing import Final, Protocol, TypeAlias, TypeVar

from grete._murmur2 import positive_murmur2, to_positive, unsigned_murmur2_bytes

__all__ = [
    "BasePartitioner",
    "DefaultPartitioner",
    "HasId",
    "HashingPartitioner",
    "Partitioner",
    "RoundRobinPartitioner",
    "StickyPartitioner",
    "hashing_partitioner",
    "java_key_hash",
    "partition_id_for_key",
    "random_partitioner",
]

_POSITIVE: Final = 0x7FFFFFFF


class HasId(Protocol):
    """Anything with an integer partition id; a read-only property suffices."""

    @property
    def id(self) -> int: ...


P = TypeVar("P", bound=HasId)

#: The type producers accept: ``partitioner(partitions, key) -> one of partitions``.
#: Generic in the partition class, e.g. ``Partitioner[grete.cluster.Partition]``.
Partitioner: TypeAlias = Callable[[Sequence[P], bytes | None], P]


def _no_partitions() -> ValueError:
    return ValueError("cannot choose a partition: the topic has no partitions")


class BasePartitioner(ABC):
    """Base class of grete's partitioners (subclassing is optional: any callable will do)."""

    @abstractmethod
    def __call__(self, partitions: Sequence[P], key: bytes | None = None) -> P:
        """Return the element of ``partitions`` the message with ``key`` should go to."""


def random_partitioner(partitions: Sequence[P], key: bytes | None = None) -> P:
    """A uniformly random partition, whatever the key (pykafka's default partitioner)."""
    if not partitions:
        raise _no_partitions()
    return random.choice(partitions)


class RoundRobinPartitioner(BasePartitioner):
    """Each partition in turn, in the order given, ignoring keys.

    The position is an :func:`itertools.count`, whose ``next`` is a single C call
    and therefore atomic under the GIL: concurrent producers never hand out the same
    position twice without taking a lock per message.  There is one counter for all
    topics, so a producer interleaving topics spreads each topic evenly only in the
    long run, as pykafka's did.
    """

    def __init__(self, start: int = 0) -> None:
        self._counter = itertools.count(start)

    def __call__(self, partitions: Sequence[P], key: bytes | None = None) -> P:
        n = len(partitions)
        if not n:
            raise _no_partitions()
        return partitions[next(self._counter) % n]


def partition_id_for_key(key: bytes, num_partitions: int) -> int:
    """The partition id the Java client's default partitioner gives ``key``.

    ``Utils.toPositive(Utils.murmur2(key)) % numPartitions``, as in Kafka's
    ``BuiltInPartitioner.partitionForKey``.
    """
    if num_partitions <= 0:
        raise _no_partitions()
    return positive_murmur2(key) % num_partitions


def _find_id(partitions: Sequence[P], pid: int) -> P | None:
    """The element whose id is ``pid``, or None.

    Metadata normally lists a topic's partitions as ids ``0..n-1`` in order, so
    position ``pid`` is tried first and the scan only runs for shuffled sequences.
    """
    if pid < len(partitions):
        candidate = partitions[pid]
        if candidate.id == pid:
            return candidate
    for candidate in partitions:
        if candidate.id == pid:
            return candidate
    return None


def _by_hash(partitions: Sequence[P], key: bytes) -> P:
    """The partition the Java client would pick for ``key`` among ``partitions``.

    Java takes the modulo over the topic's partition *count* and uses the result as
    the partition *number*; so the answer here is the element whose id is the
    modulo, not the element at that position of a possibly shuffled sequence.
    """
    n = len(partitions)
    if not n:
        raise _no_partitions()
    try:
        h = unsigned_murmur2_bytes(key)
    except TypeError:
        # The C extension takes exactly ``bytes``; bytearray/memoryview keys go the slow way.
        h = positive_murmur2(key)
    target = (h & _POSITIVE) % n
    candidate = partitions[target]
    if candidate.id == target:
        return candidate
    found = _find_id(partitions, target)
    if found is not None:
        return found
    # Ids are not 0..n-1 (the caller passed a subset of the topic, say): there is no
    # Java answer to match, so stay deterministic and take the target-th smallest id.
    return sorted(partitions, key=attrgetter("id"))[target]


class HashingPartitioner(BasePartitioner):
    """Keyed messages to ``toPositive(hash_func(key)) % len(partitions)``, by partition id.

    With the default ``hash_func`` (Kafka's murmur2) this is bit-compatible with the
    Java client's default partitioner and librdkafka's ``murmur2_random``, *provided
    ``partitions`` holds all partitions of the topic* (ids ``0..n-1``, in any order).
    Any ``Callable[[bytes], int]`` can replace the hash, as in pykafka.

    Messages without a key go to a random partition.  pykafka raised instead, and the
    Java client sticks to one partition (see :class:`StickyPartitioner`); random is the
    stateless choice that still spreads load, which is what a function-like
    partitioner can offer.
    """

    def __init__(self, hash_func: Callable[[bytes], int] | None = None) -> None:
        self._hash_func = hash_func

    def __call__(self, partitions: Sequence[P], key: bytes | None = None) -> P:
        if key is None:
            return random_partitioner(partitions)
        if self._hash_func is None:
            return _by_hash(partitions, key)
        n = len(partitions)
        if not n:
            raise _no_partitions()
        target = to_positive(self._hash_func(key)) % n
        found = _find_id(partitions, target)
        if found is not None:
            return found
        return sorted(partitions, key=attrgetter("id"))[target]


#: A ready-made Java-compatible :class:`HashingPartitioner` (it is stateless, so shareable).
hashing_partitioner: Final = HashingPartitioner()


def _topic_key(partitions: Sequence[HasId]) -> Hashable:
    # The call signature carries no topic, yet stickiness must be per topic (or a
    # producer alternating two topics would hop partitions on every switch).  Partition
    # objects that know their topic (pykafka's and grete's do) give one slot per topic;
    # objects that do not share a single slot, which is right for one-topic use.
    topic: Hashable = getattr(partitions[0], "topic", None)
    return topic


class StickyPartitioner(BasePartitioner):
    """The Java client's default partitioner, in a simple form.

    * Keyed messages: murmur2, exactly like :class:`HashingPartitioner`.
    * Unkeyed messages (KIP-480, and KIP-794's "uniform sticky"): every message goes
      to the same partition of its topic until the producer says that partition's
      batch is done, by calling :meth:`on_new_batch`; then another partition is
      picked at random.  Sending unkeyed messages in few full batches rather than
      many tiny ones is what makes this faster than random or round robin.

    Unlike Java's ``BuiltInPartitioner`` the switch is not driven by a byte count nor
    weighted by queue sizes: the accumulator decides when a batch is done and says so.

    The hook, for the producer's record accumulator: when the batch of partition
    ``previous`` of a topic becomes full (or is drained for sending) and was filled by
    unkeyed messages, call ``partitioner.on_new_batch(candidates, previous)`` where
    ``candidates`` are the topic's partitions new unkeyed messages may go to (normally
    those with a leader).  Passing ``previous`` makes concurrent calls safe: only the
    first caller that finishes the current sticky partition moves it.

    State is one partition id per topic, at most ``max_topics`` of them (the oldest
    entry is dropped beyond that), so it stays bounded even for producers writing to
    endlessly many topics.
    """

    def __init__(self, *, max_topics: int = 10_000, rng: random.Random | None = None) -> None:
        if max_topics < 1:
            raise ValueError("max_topics must be at least 1")
        self._max_topics = max_topics
        self._rng = rng if rng is not None else random.Random()
        self._sticky: dict[Hashable, int] = {}
        # Only switches take the lock; the per-message read is a single dict.get,
        # atomic under the GIL.
        self._lock = threading.Lock()

    def __call__(self, partitions: Sequence[P], key: bytes | None = None) -> P:
        if key is not None:
            return _by_hash(partitions, key)
        if not partitions:
            raise _no_partitions()
        topic = _topic_key(partitions)
        current = self._sticky.get(topic)
        if current is not None:
            found = _find_id(partitions, current)
            if found is not None:
                return found
        # First unkeyed message for this topic, or its sticky partition is gone
        # (metadata shrank): pick one, as Java does when it has no sticky partition.
        chosen = self._switch(topic, partitions, expected=current)
        found = _find_id(partitions, chosen)
        # _switch picked from these very partitions, unless another thread just
        # switched to one of a different (newer) list; fall back to any partition then.
        return found if found is not None else self._rng.choice(partitions)

    def on_new_batch(self, partitions: Sequence[HasId], previous: int | None = None) -> int:
        """The batch of ``previous`` is done: stick to another of ``partitions`` from now on.

        ``partitions`` are the topic's candidate partitions (e.g. those with a leader).
        With ``previous`` given, nothing changes unless it is still the sticky partition
        (someone else already moved on).  Returns the sticky partition id now in use.
        """
        if not partitions:
            raise _no_partitions()
        topic = _topic_key(partitions)
        if previous is None:
            previous = self._sticky.get(topic)
        return self._switch(topic, partitions, expected=previous)

    def current(self, partitions: Sequence[HasId]) -> int | None:
        """The sticky partition id of the topic of ``partitions``, if any (for tests, metrics)."""
        if not partitions:
            return None
        return self._sticky.get(_topic_key(partitions))

    def _switch(self, topic: Hashable, partitions: Sequence[HasId], expected: int | None) -> int:
        with self._lock:
            current = self._sticky.get(topic)
            if current != expected and current is not None:
                # Another thread switched since the caller looked: keep its choice.
                return current
            ids = [p.id for p in partitions]
            if current is not None and len(ids) > 1:
                # Moving on means a different partition whenever there is one.
                ids = [pid for pid in ids if pid != current] or ids
            chosen = self._rng.choice(ids)
            self._sticky.pop(topic, None)
            self._sticky[topic] = chosen  # re-inserted last: the dict doubles as an LRU
            while len(self._sticky) > self._max_topics:
                del self._sticky[next(iter(self._sticky))]
            return chosen


#: Java's default: sticky for unkeyed messages, murmur2 for keyed ones.
DefaultPartitioner = StickyPartitioner


def java_key_hash(partitioner: object) -> Callable[[bytes], int] | None:
    """The hash ``partitioner`` puts a ``bytes`` key through, when it is one of
    grete's Java-compatible partitioners (keyed message to partition id
    ``(hash(key) & 0x7fffffff) % partition count``), else None.

    Lets a producer place keyed messages without calling the partitioner per
    message. Subclasses may override ``__call__``, so only the exact classes count.
    The C-backed hash when installed, although it releases the GIL on every
    call (see :mod:`grete._murmur2`): beside the background producer's mostly
    idle sender thread it is still faster than the pure one.
    """
    if type(partitioner) is StickyPartitioner or (
        type(partitioner) is HashingPartitioner and partitioner._hash_func is None
    ):
        return unsigned_murmur2_bytes
    return None
