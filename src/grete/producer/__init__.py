"""Producers: the synchronous seed ``Producer`` and the shared send engine."""

from grete.producer.errors import (
    DeliveryTimeoutError,
    InvalidMessageError,
    MessageFailure,
    ProduceFailureError,
    ProducerClosedError,
)
from grete.producer.message import DeliveryResult, Message
from grete.producer.sync import Producer

__all__ = [
    "DeliveryResult",
    "DeliveryTimeoutError",
    "InvalidMessageError",
    "Message",
    "MessageFailure",
    "ProduceFailureError",
    "Producer",
    "ProducerClosedError",
]
