"""Fixtures shared by the broker-less producer tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from grete.cluster import Broker, Cluster, Partition, Topic
from grete.connection import ConnectionConfig
from grete.network import Network


def _dead_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A Cluster filled by hand, no metadata request: topic ``t`` with 3
    partitions, all led by broker 1, which (like the bootstrap address) is a
    closed port, so every connection attempt fails fast."""
    port = _dead_port()
    network = Network([("127.0.0.1", port)], ConnectionConfig(connect_timeout_s=0.5))
    c = Cluster(network)
    broker = Broker(1, "127.0.0.1", port)
    c.brokers = {1: broker}
    network.set_brokers({1: ("127.0.0.1", port)})
    topic = Topic(c, "t")
    for i in range(3):
        part = Partition(topic, i)
        part.leader = broker
        topic.partitions[i] = part
    c._topics["t"] = topic
    yield c
    network.close()
