"""What users hand to a producer, and what they get back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from grete.producer.errors import InvalidMessageError

Headers = list[tuple[str, bytes | None]]


class Message:
    """One message with everything Kafka can carry.

    ``value``/``key``: bytes, str (UTF-8) or None (a None value is a tombstone).
    ``headers``: a list of ``(str, bytes | None)`` pairs, or a dict.
    ``timestamp``: milliseconds since the epoch (None: the producer's clock).
    ``partition``: send to this partition id instead of asking the partitioner.
    """

    __slots__ = ("headers", "key", "partition", "timestamp", "value")

    def __init__(
        self,
        value: bytes | str | None,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes | str | None]]
        | dict[str, bytes | str | None]
        | None = None,
        timestamp: int | None = None,
        partition: int | None = None,
    ) -> None:
        self.value = value
        self.key = key
        self.headers = headers
        self.timestamp = timestamp
        self.partition = partition

    def __repr__(self) -> str:
        return (
            f"Message(value={_preview(self.value)}, key={_preview(self.key)}, "
            f"partition={self.partition})"
        )


class DeliveryResult(NamedTuple):
    """Where a message was written: ``topic``, ``partition``, ``offset``
    and ``timestamp`` (ms). ``offset`` is -1 when the broker did not say
    (acks=0, or a duplicate acknowledged without its offset). The topic comes
    last, so ``partition, offset, timestamp = result[:3]`` reads as before."""

    partition: int
    offset: int
    timestamp: int
    topic: str = ""


def _preview(data: object) -> str:
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


def to_bytes(data: object, what: str, index: int) -> bytes | None:
    """bytes/bytearray/memoryview pass, str is UTF-8, None stays None; anything
    else is refused before anything is sent (no silent str() of objects)."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise InvalidMessageError(
        f"message {index}: {what} must be bytes, str or None, not {type(data).__name__} "
        f"(serialize it first)"
    )


def to_headers(headers: Any, index: int) -> Headers | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    out: Headers = []
    try:
        for name, value in items:
            if not isinstance(name, str):
                raise InvalidMessageError(
                    f"message {index}: header names must be str, not {name!r}"
                )
            out.append((name, to_bytes(value, f"header {name!r}", index)))
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(
            f"message {index}: headers must be (str, bytes) pairs or a dict"
        ) from exc
    return out or None
