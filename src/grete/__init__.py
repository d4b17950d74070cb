"""grete: a fast, pure-Python Apache Kafka producer client.

The names pykafka users know are here: ``KafkaClient``, ``Producer`` (the
synchronous producer of pykafka's documentation), ``BackgroundProducer``,
``KafkaProducer`` (any topic per message, from ``client.producer()``),
``CompressionType``, the partitioners, and the errors rooted at ``KafkaError``.
"""

from grete._version import __version__
from grete.client import KafkaClient
from grete.cluster import Broker, Cluster, Partition, Topic
from grete.errors import (
    AuthenticationError,
    BrokerResponseError,
    ClientClosedError,
    ConfigurationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailable,
    MessageSizeTooLarge,
    NotEnoughReplicas,
    NotLeaderForPartition,
    ProtocolError,
    RequestTimedOut,
    UnknownTopicOrPartition,
    UnsupportedCodecError,
)
from grete.partitioners import (
    BasePartitioner,
    DefaultPartitioner,
    HashingPartitioner,
    RoundRobinPartitioner,
    StickyPartitioner,
    hashing_partitioner,
    random_partitioner,
)
from grete.producer import (
    BackgroundProducer,
    DeliveryFuture,
    DeliveryResult,
    DeliveryTimeoutError,
    InvalidMessageError,
    KafkaProducer,
    Message,
    MessageFailure,
    OutcomeUnknownError,
    ProduceFailureError,
    Producer,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.protocol.compression import CompressionType
from grete.security import SaslOAuthBearer, SaslPlain, SaslScram, make_ssl_context

__all__ = [
    "AuthenticationError",
    "BackgroundProducer",
    "BasePartitioner",
    "Broker",
    "BrokerResponseError",
    "ClientClosedError",
    "Cluster",
    "CompressionType",
    "ConfigurationError",
    "DefaultPartitioner",
    "DeliveryFuture",
    "DeliveryResult",
    "DeliveryTimeoutError",
    "HashingPartitioner",
    "InvalidMessageError",
    "KafkaClient",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaProducer",
    "KafkaTimeoutError",
    "LeaderNotAvailable",
    "Message",
    "MessageFailure",
    "MessageSizeTooLarge",
    "NotEnoughReplicas",
    "NotLeaderForPartition",
    "OutcomeUnknownError",
    "Partition",
    "ProduceFailureError",
    "Producer",
    "ProducerClosedError",
    "ProducerQueueFullError",
    "ProtocolError",
    "RequestTimedOut",
    "RoundRobinPartitioner",
    "SaslOAuthBearer",
    "SaslPlain",
    "SaslScram",
    "StickyPartitioner",
    "Topic",
    "UnknownTopicOrPartition",
    "UnsupportedCodecError",
    "__version__",
    "hashing_partitioner",
    "make_ssl_context",
    "random_partitioner",
]
