"""A real Apache Kafka cluster for tests, shipped with grete so users can test their code too.

    from grete.testing import KafkaCluster

    with KafkaCluster(num_brokers=3) as cluster:
        cluster.create_topic("events")
        produce_to(cluster.bootstrap_servers)

Needs Java 17+ and, the first time (per Kafka version), Maven to fetch the jars.
pytest users: ``pytest_plugins = ["grete.testing.pytest_plugin"]`` gives the
``kafka_cluster``, ``kafka_bootstrap`` and ``topic`` fixtures.

Fault proxy: ``FaultProxy(host, port)`` relays TCP connections to one broker (or any
server) on a free 127.0.0.1 port and injects faults switched at run time: latency
and jitter, a bandwidth cap, resets (now, or at random points, mid-frame
included, from a logged seed), a black hole, half-open connections (answers
dropped) and a partition; ``clear()`` lifts them. Clients must connect to
``proxy.address``; brokers still advertise their own ports in metadata, so only
the bootstrap connection goes through the proxy unless the client is pinned to it.
"""

from .admin import TopicError
from .cluster import (
    CLIENT_PROTOCOLS,
    DEFAULT_USERS,
    SASL_MECHANISMS,
    Broker,
    KafkaCluster,
    KafkaStartError,
    PortInUseError,
)
from .external import ExternalKafkaCluster, UnsupportedOperation
from .jars import DEFAULT_KAFKA_VERSION, HarnessSetupError, default_jars_dir, ensure_kafka_jars
from .proxy import FaultProxy, ProxyClosedError

__all__ = [
    "CLIENT_PROTOCOLS",
    "DEFAULT_KAFKA_VERSION",
    "DEFAULT_USERS",
    "SASL_MECHANISMS",
    "Broker",
    "ExternalKafkaCluster",
    "FaultProxy",
    "HarnessSetupError",
    "KafkaCluster",
    "KafkaStartError",
    "PortInUseError",
    "ProxyClosedError",
    "TopicError",
    "UnsupportedOperation",
    "default_jars_dir",
    "ensure_kafka_jars",
]
