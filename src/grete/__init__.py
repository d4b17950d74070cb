"""grete: a fast, pure-Python Apache Kafka producer client."""

from grete._version import __version__
from grete.errors import (
    ConfigurationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProtocolError,
    UnsupportedCodecError,
)

__all__ = [
    "ConfigurationError",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaTimeoutError",
    "ProtocolError",
    "UnsupportedCodecError",
    "__version__",
]
