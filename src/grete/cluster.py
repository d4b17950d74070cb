"""Cluster metadata: brokers, topics, partitions and their leaders.

:class:`Topic` and :class:`Partition` objects are long-lived: a metadata
refresh updates them in place, so a producer holding a ``Topic`` sees leader
changes and broker restarts without being rebuilt (pykafka users had to
recreate their producers after a broker restart).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grete.connection import Pending
from grete.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailable,
    UnknownTopicOrPartition,
    error_for_code,
)
from grete.network import Network
from grete.protocol import messages as m

if TYPE_CHECKING:
    from grete.producer import BackgroundProducer, Producer

log = logging.getLogger("grete.cluster")

# Codes that mean "the topic exists but is not ready yet" (being created, or
# its leader is being elected): worth waiting for a moment.
_LEADER_NOT_AVAILABLE = 5
_UNKNOWN_TOPIC_OR_PARTITION = 3
_AUTO_CREATE_GRACE_S = 1.5


def _metadata_body(topics: list[str] | None, auto_create: bool) -> dict[str, Any]:
    return {
        "topics": None if topics is None else [{"name": t} for t in topics],
        "allow_auto_topic_creation": auto_create,
    }


@dataclass(frozen=True)
class Broker:
    """A broker as the cluster metadata describes it."""

    id: int
    host: str
    port: int
    rack: str | None = None


class Partition:
    """One partition of a topic; updated in place by metadata refreshes."""

    __slots__ = ("id", "isr", "leader", "leader_epoch", "replicas", "topic")

    def __init__(self, topic: Topic, id: int) -> None:
        self.topic = topic
        self.id = id
        self.leader: Broker | None = None
        self.leader_epoch = -1
        self.replicas: list[Broker] = []
        self.isr: list[Broker] = []

    def __repr__(self) -> str:
        leader = self.leader.id if self.leader else None
        return f"<Partition {self.topic.name}/{self.id} leader={leader}>"


class Topic:
    """A topic and its partitions (``partitions`` maps id -> :class:`Partition`)."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.partitions: dict[int, Partition] = {}
        self.is_internal = False
        self.topic_id: Any = None

    def __repr__(self) -> str:
        return f"<Topic {self.name!r} partitions={len(self.partitions)}>"

    def partition_list(self) -> list[Partition]:
        """The partitions ordered by id, as partitioners index them."""
        parts = self.partitions
        return [parts[i] for i in sorted(parts)]

    def latest_available_offsets(self) -> dict[int, int]:
        """Partition id -> the offset the next message will get (the end offset)."""
        return self._list_offsets(-1)

    def earliest_available_offsets(self) -> dict[int, int]:
        """Partition id -> the first offset still in the log."""
        return self._list_offsets(-2)

    def _list_offsets(self, timestamp: int) -> dict[int, int]:
        """One ListOffsets request per leader, sent together."""
        by_leader: dict[int, list[int]] = {}
        for p in self.partitions.values():
            if p.leader is None:
                raise LeaderNotAvailable(f"{self.name}/{p.id} has no leader")
            by_leader.setdefault(p.leader.id, []).append(p.id)
        network = self.cluster.network
        pendings = [
            network.send(
                node,
                m.LIST_OFFSETS,
                {
                    "replica_id": -1,
                    "timeout_ms": int(network.config.request_timeout_s * 1000),
                    "topics": [
                        {
                            "name": self.name,
                            "partitions": [
                                {"partition_index": i, "timestamp": timestamp} for i in ids
                            ],
                        }
                    ],
                },
            )
            for node, ids in by_leader.items()
        ]
        network.wait(pendings, network.config.request_timeout_s + 1.0)
        out: dict[int, int] = {}
        for pending in pendings:
            for t in pending.result()["topics"]:
                for p in t["partitions"]:
                    if p["error_code"] != 0:
                        raise error_for_code(p["error_code"], f"{self.name}/{p['partition_index']}")
                    out[p["partition_index"]] = p["offset"]
        return dict(sorted(out.items()))

    def get_sync_producer(self, **kwargs: Any) -> Producer:
        """A synchronous :class:`grete.Producer` for this topic."""
        from grete.producer import Producer

        return Producer(self.cluster, self, **kwargs)

    def get_producer(self, **kwargs: Any) -> BackgroundProducer:
        """A :class:`grete.BackgroundProducer` for this topic (``produce()``
        returns at once; a sender thread delivers)."""
        from grete.producer import BackgroundProducer

        return BackgroundProducer(self.cluster, self, **kwargs)


class TopicDict(Mapping[str, Topic]):
    """``client.topics["name"]`` or ``client.topics[b"name"]``: a known topic, or
    one looked up (and auto-created where the broker allows it) on first use."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def __getitem__(self, name: str | bytes) -> Topic:
        key = name.decode() if isinstance(name, bytes) else name
        topic = self._cluster._topics.get(key)
        if topic is None or not topic.partitions:
            topic = self._cluster.fetch_topic(key)
        return topic

    def __contains__(self, name: object) -> bool:
        key = name.decode() if isinstance(name, bytes) else name
        return key in self._cluster._topics

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._cluster._topics))

    def __len__(self) -> int:
        return len(self._cluster._topics)


class Cluster:
    """The metadata snapshot of a cluster and its refresh."""

    def __init__(
        self,
        network: Network,
        *,
        metadata_max_age_s: float = 300.0,
        topic_wait_s: float = 10.0,
        allow_auto_create_topics: bool = True,
    ) -> None:
        self.network = network
        self.brokers: dict[int, Broker] = {}
        self._topics: dict[str, Topic] = {}
        self.topics = TopicDict(self)
        self.cluster_id: str | None = None
        self.controller_id = -1
        self.metadata_max_age_s = metadata_max_age_s
        self.topic_wait_s = topic_wait_s
        self.allow_auto_create_topics = allow_auto_create_topics
        self.last_update = 0.0
        self._update_lock = threading.Lock()
        # topic -> the error code of the last metadata answer that named it
        # with an error (cleared when one lists it): why a topic is missing.
        self._topic_errors: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<Cluster id={self.cluster_id} brokers={sorted(self.brokers)}>"

    # -- refresh ---------------------------------------------------------------

    def _candidates(self) -> list[int]:
        """Brokers to ask for metadata: known ones first (connected, then not
        backing off), then the bootstrap list, so a cluster whose every known
        broker was replaced is found again ("rebootstrap")."""
        candidates = sorted(
            self.network.known_nodes,
            key=lambda n: (not self.network.is_ready(n), self.network.backing_off(n)),
        )
        return candidates + [-(i + 1) for i in range(len(self.network.bootstrap))]

    def _metadata(self, topics: list[str] | None, auto_create: bool) -> dict[str, Any]:
        """One blocking Metadata request to any broker that answers."""
        body = _metadata_body(topics, auto_create)
        errors: list[KafkaError] = []
        for node_id in self._candidates():
            try:
                return self.network.request(node_id, m.METADATA, body)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                errors.append(exc)
        why = "no broker answered a metadata request: " + "; ".join(map(str, errors[-4:]))
        # Brokers that accepted connections but never answered are a timeout,
        # not a refusal: keep the type callers catch for it.
        if errors and all(isinstance(e, KafkaTimeoutError) for e in errors):
            raise KafkaTimeoutError(why)
        raise KafkaConnectionError(why)

    # -- lookups without I/O (for producers) ----------------------------------

    def known_topic(self, name: str) -> Topic | None:
        """The topic if the metadata lists it (no request made)."""
        return self._topics.get(name)

    def topic_error(self, name: str) -> int:
        """The error code the last metadata answer naming ``name`` gave for
        it (0: none, or it is listed)."""
        return self._topic_errors.get(name, 0)

    def leader_id(self, topic: str, partition: int) -> int | None:
        """The node id leading ``topic/partition``, or None when unknown."""
        t = self._topics.get(topic)
        p = None if t is None else t.partitions.get(partition)
        return None if p is None or p.leader is None else p.leader.id

    def request_update(self, topics: list[str], *, auto_create: bool = False) -> Pending | None:
        """A refresh that never blocks: one Metadata request to the first
        broker that can take it now; ``apply`` its answer once it is done. None
        when no broker is connected yet (connections are being made).

        Producers refresh this way, so a broker that never answers costs them
        a request timeout in the background, not a stall."""
        body = _metadata_body(topics, auto_create)
        for node_id in self._candidates():
            try:
                return self.network.send(node_id, m.METADATA, body, wait_connect=False)
            except KafkaError as exc:
                if not exc.retriable:
                    raise
        return None

    def apply(self, body: dict[str, Any]) -> None:
        """Adopt a Metadata answer obtained by :meth:`request_update`."""
        with self._update_lock:
            self._apply(body, full=False)

    def update(self, topics: list[str] | None = None, *, auto_create: bool = False) -> None:
        """Refresh brokers and the given topics (all topics when None)."""
        with self._update_lock:
            body = self._metadata(topics, auto_create)
            self._apply(body, full=topics is None)

    def _apply(self, body: dict[str, Any], full: bool) -> None:
        brokers = {
            b["node_id"]: Broker(b["node_id"], b["host"], b["port"], b.get("rack"))
            for b in body["brokers"]
        }
        self.brokers = brokers
        self.network.set_brokers({b.id: (b.host, b.port) for b in brokers.values()})
        self.cluster_id = body.get("cluster_id")
        self.controller_id = body.get("controller_id", -1)
        seen = set()
        for t in body["topics"]:
            name = t["name"]
            if t["error_code"] != 0:
                # The caller asked for it by name: fetch_topic (or a
                # producer, through topic_error) reports the error.
                self._topic_errors[name] = t["error_code"]
                continue
            self._topic_errors.pop(name, None)
            seen.add(name)
            topic = self._topics.get(name)
            if topic is None:
                topic = self._topics[name] = Topic(self, name)
            topic.is_internal = bool(t.get("is_internal"))
            topic.topic_id = t.get("topic_id")
            for p in t["partitions"]:
                part = topic.partitions.get(p["partition_index"])
                if part is None:
                    part = topic.partitions[p["partition_index"]] = Partition(
                        topic, p["partition_index"]
                    )
                part.leader = brokers.get(p["leader_id"])
                part.leader_epoch = p.get("leader_epoch", -1)
                part.replicas = [brokers[r] for r in p["replica_nodes"] if r in brokers]
                part.isr = [brokers[r] for r in p["isr_nodes"] if r in brokers]
        if full:
            for name in [n for n in self._topics if n not in seen]:
                self._topics[name].partitions.clear()
                del self._topics[name]
        self.last_update = time.monotonic()

    def fetch_topic(self, name: str) -> Topic:
        """Look ``name`` up, creating it where the broker auto-creates topics,
        and wait (bounded) until its partitions have leaders."""
        deadline = time.monotonic() + self.topic_wait_s
        unknown_deadline = time.monotonic() + min(self.topic_wait_s, _AUTO_CREATE_GRACE_S)
        while True:
            with self._update_lock:
                body = self._metadata([name], self.allow_auto_create_topics)
                self._apply(body, full=False)
            entry = next((t for t in body["topics"] if t["name"] == name), None)
            code = entry["error_code"] if entry is not None else _UNKNOWN_TOPIC_OR_PARTITION
            topic = self._topics.get(name)
            if code == 0 and topic is not None and topic.partitions:
                if all(p.leader is not None for p in topic.partitions.values()):
                    return topic
            elif code == _UNKNOWN_TOPIC_OR_PARTITION and (
                not self.allow_auto_create_topics or time.monotonic() >= unknown_deadline
            ):
                # KRaft brokers that auto-create topics still answer UNKNOWN at
                # first, so when we asked for creation it gets a short grace.
                why = " (and the brokers did not auto-create it)"
                raise UnknownTopicOrPartition(
                    f"topic {name!r} does not exist"
                    + (why if self.allow_auto_create_topics else "")
                )
            elif code not in (_LEADER_NOT_AVAILABLE, _UNKNOWN_TOPIC_OR_PARTITION):
                raise error_for_code(code, f"topic {name!r}")
            if time.monotonic() >= deadline:
                raise KafkaTimeoutError(
                    f"topic {name!r} still has partitions without a leader "
                    f"after {self.topic_wait_s}s"
                )
            time.sleep(0.1)
