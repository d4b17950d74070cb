"""Producers: the multi-topic ``KafkaProducer``, the synchronous seed
``Producer`` and the ``BackgroundProducer``, over one producer core."""

from grete.producer.background import BackgroundProducer
from grete.producer.errors import (
    DeliveryTimeoutError,
    InvalidMessageError,
    MessageFailure,
    OutcomeUnknownError,
    ProduceFailureError,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.producer.futures import DeliveryFuture
from grete.producer.kafka_producer import KafkaProducer
from grete.producer.message import DeliveryResult, Message
from grete.producer.sync import Producer

__all__ = [
    "BackgroundProducer",
    "DeliveryFuture",
    "DeliveryResult",
    "DeliveryTimeoutError",
    "InvalidMessageError",
    "KafkaProducer",
    "Message",
    "MessageFailure",
    "OutcomeUnknownError",
    "ProduceFailureError",
    "Producer",
    "ProducerClosedError",
    "ProducerQueueFullError",
]
