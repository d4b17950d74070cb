"""A scripted broker on 127.0.0.1 for producer tests that need answers, not a
cluster: ApiVersions, Metadata (the topics of :func:`cluster_of`), Produce
(every batch accepted, offsets counted per partition; left unanswered with
``answer_produce=False``) and InitProducerId (answered, or left unanswered
with ``answer_init_pid=False``). Nothing else is answered."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from grete.cluster import Broker, Cluster, Partition, Topic
from grete.connection import ConnectionConfig
from grete.network import Network
from grete.protocol import messages as m
from grete.protocol.framing import decode_request_frame, encode_response_frame


class FakeBroker:
    def __init__(
        self, *, answer_init_pid: bool = True, answer_produce: bool = True, lifetime_s: float = 60.0
    ) -> None:
        self.answer_init_pid = answer_init_pid
        self.answer_produce = answer_produce
        self.topics: list[str] = []  # for Metadata answers (set by cluster_of)
        self.requests: Counter[str] = Counter()
        self._offsets: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + lifetime_s  # bounded, whatever the test does
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _live(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _accept(self) -> None:
        while self._live():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        buf = b""
        with conn:
            while self._live():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4 and len(buf) >= 4 + (size := int.from_bytes(buf[:4], "big")):
                    frame, buf = buf[4 : 4 + size], buf[4 + size :]
                    answer = self._answer(frame)
                    if answer is not None:
                        conn.sendall(answer)

    def _answer(self, frame: bytes) -> bytes | None:
        cid, _, request = decode_request_frame(frame, m.APIS_BY_KEY)
        with self._lock:
            self.requests[request.api.name] += 1
        body: dict[str, Any]
        if request.api is m.API_VERSIONS:
            body = {
                "error_code": 0,
                "api_keys": [
                    {"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
                    for a in m.ALL_APIS
                ],
            }
        elif request.api is m.METADATA:
            # The topics cluster_of made: one partition each, led by us.
            # (Unanswered, it broke the order of answers on the connection.)
            body = {
                "brokers": [{"node_id": 1, "host": "127.0.0.1", "port": self.port}],
                "cluster_id": "fake",
                "controller_id": 1,
                "topics": [
                    {
                        "error_code": 0,
                        "name": name,
                        "is_internal": False,
                        "partitions": [
                            {
                                "error_code": 0,
                                "partition_index": 0,
                                "leader_id": 1,
                                "leader_epoch": 0,
                                "replica_nodes": [1],
                                "isr_nodes": [1],
                                "offline_replicas": [],
                            }
                        ],
                    }
                    for name in self.topics
                ],
            }
        elif request.api is m.INIT_PRODUCER_ID:
            if not self.answer_init_pid:
                return None
            body = {"error_code": 0, "producer_id": 7, "producer_epoch": 0}
        elif request.api is m.PRODUCE:
            if not self.answer_produce:
                return None
            responses = []
            for topic in request.body["topic_data"]:
                parts = []
                for p in topic["partition_data"]:
                    key = (topic["name"], p["index"])
                    with self._lock:
                        offset = self._offsets[key]
                        self._offsets[key] += 1000  # room for every record of a batch
                    parts.append({"index": p["index"], "error_code": 0, "base_offset": offset})
                responses.append({"name": topic["name"], "partition_responses": parts})
            body = {"responses": responses}
        else:
            return None
        return encode_response_frame(cid, request.api, request.version, body)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.listener.close()


def cluster_of(broker: FakeBroker, topics: list[str], **config: Any) -> Cluster:
    """A Cluster filled by hand (no Metadata request): each topic has one
    partition, led by ``broker``."""
    broker.topics = list(topics)
    network = Network([("127.0.0.1", broker.port)], ConnectionConfig(**config))
    cluster = Cluster(network)
    leader = Broker(1, "127.0.0.1", broker.port)
    cluster.brokers = {1: leader}
    network.set_brokers({1: ("127.0.0.1", broker.port)})
    for name in topics:
        topic = Topic(cluster, name)
        part = Partition(topic, 0)
        part.leader = leader
        topic.partitions[0] = part
        cluster._topics[name] = topic
    # No periodic metadata refresh: nothing here answers one.
    cluster.last_update = time.monotonic() + 3600
    return cluster


def serving(**kw: Any) -> Iterator[FakeBroker]:
    broker = FakeBroker(**kw)
    try:
        yield broker
    finally:
        broker.close()
