"""The exception hierarchy of grete, rooted at :class:`KafkaError`.

Each layer raises its own kind of error and the layer above translates it at
the boundary (as httpcore does): the protocol core raises :class:`ProtocolError`
for bytes it cannot trust, connections raise :class:`KafkaConnectionError` and
:class:`KafkaTimeoutError`, and brokers' error codes become subclasses of
:class:`BrokerResponseError` (one class per code, looked up through
:func:`error_for_code`).
"""

from __future__ import annotations


class KafkaError(Exception):
    """Root of every error grete raises on purpose."""

    #: True when trying the same operation again may succeed.
    retriable: bool = False


class ProtocolError(KafkaError):
    """Bytes from the network (or handed to a decoder) that break the Kafka protocol:
    truncated data, impossible lengths, over-long varints, bad CRCs, unexpected
    correlation ids."""


class ConfigurationError(KafkaError, ValueError):
    """An argument or a combination of arguments that cannot work."""


class KafkaConnectionError(KafkaError):
    """A broker could not be reached, or its connection broke."""

    retriable = True


class KafkaTimeoutError(KafkaError, TimeoutError):
    """A bounded wait ran out."""

    retriable = True


class UnsupportedCodecError(KafkaError):
    """A compression codec whose library is not installed; the message names the extra."""
