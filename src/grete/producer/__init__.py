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
    TransactionAbortableError,
    TransactionAbortedError,
    TransactionError,
    TransactionFatalError,
    TransactionStateError,
)
from grete.producer.futures import DeliveryFuture
from grete.producer.kafka_producer import KafkaProducer
from grete.producer.message import DeliveryResult, Message
from grete.producer.sync import Producer
from grete.producer.transactions import TransactionState

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
    "TransactionAbortableError",
    "TransactionAbortedError",
    "TransactionError",
    "TransactionFatalError",
    "TransactionState",
    "TransactionStateError",
]
