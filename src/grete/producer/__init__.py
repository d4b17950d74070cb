"""Producers: the synchronous seed ``Producer``, the ``BackgroundProducer``, and
the send engine they share."""

from grete.producer.background import BackgroundProducer, DeliveryFuture
from grete.producer.errors import (
    DeliveryTimeoutError,
    InvalidMessageError,
    MessageFailure,
    OutcomeUnknownError,
    ProduceFailureError,
    ProducerClosedError,
    ProducerQueueFullError,
)
from grete.producer.message import DeliveryResult, Message
from grete.producer.sync import Producer

__all__ = [
    "BackgroundProducer",
    "DeliveryFuture",
    "DeliveryResult",
    "DeliveryTimeoutError",
    "InvalidMessageError",
    "Message",
    "MessageFailure",
    "OutcomeUnknownError",
    "ProduceFailureError",
    "Producer",
    "ProducerClosedError",
    "ProducerQueueFullError",
]
