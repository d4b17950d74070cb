"""A real Apache Kafka cluster for tests, shipped with grete so users can test their code too.

    from grete.testing import KafkaCluster

    with KafkaCluster(num_brokers=3) as cluster:
        cluster.create_topic("events")
        produce_to(cluster.bootstrap_servers)

Needs Java 17+ and, the first time (per Kafka version), Maven to fetch the jars.
pytest users: ``pytest_plugins = ["grete.testing.pytest_plugin"]`` gives the
``kafka_cluster``, ``kafka_bootstrap`` and ``topic`` fixtures.
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

__all__ = [
    "CLIENT_PROTOCOLS",
    "DEFAULT_KAFKA_VERSION",
    "DEFAULT_USERS",
    "SASL_MECHANISMS",
    "Broker",
    "ExternalKafkaCluster",
    "HarnessSetupError",
    "KafkaCluster",
    "KafkaStartError",
    "PortInUseError",
    "TopicError",
    "UnsupportedOperation",
    "default_jars_dir",
    "ensure_kafka_jars",
]
