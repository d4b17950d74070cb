"""Kafka request/response framing, sans I/O.

Every message on the wire is an INT32 size followed by a header and a body
(https://kafka.apache.org/protocol#protocol_messages):

* request header v1: api_key INT16, api_version INT16, correlation_id INT32,
  client_id NULLABLE_STRING; v2 (flexible APIs) adds a tagged-field section.
  The client id stays a classic (non-compact) string even in v2.
* response header v0: correlation_id INT32; v1 (flexible APIs) adds a
  tagged-field section - except for ApiVersions, whose responses always use
  v0 so that a client can parse them before it knows what the broker supports.

:class:`ProtocolConnection` turns requests into frames and received bytes into
:class:`Response` objects; the caller owns the socket.  Kafka answers the
requests of one connection in order, so responses are matched against a FIFO
of outstanding requests and anything else is a :class:`CorrelationIdMismatch`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grete.errors import ProtocolError
from grete.protocol.primitives import (
    INT16,
    INT32,
    Buffer,
    Reader,
    encode_nullable_string,
)
from grete.protocol.produce_fast import MAX_VERSION as _PRODUCE_MAX
from grete.protocol.produce_fast import MIN_VERSION as _PRODUCE_MIN
from grete.protocol.produce_fast import encode_produce_into
from grete.protocol.schema import Api

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "CorrelationIdMismatch",
    "InvalidFrameSize",
    "ProtocolConnection",
    "Request",
    "Response",
    "decode_request_frame",
    "encode_response_frame",
    "request_header_version",
    "response_header_version",
]

#: Largest response frame accepted by default (matches the broker's default
#: ``socket.request.max.bytes``).
DEFAULT_MAX_FRAME_SIZE = 100 * 1024 * 1024

_API_VERSIONS_KEY = 18
_INT32_MAX = (1 << 31) - 1


class CorrelationIdMismatch(ProtocolError):
    """A response whose correlation id is not the oldest outstanding request's."""


class InvalidFrameSize(ProtocolError):
    """A frame size prefix that is negative or above the configured maximum."""


@dataclass(frozen=True)
class Request:
    api: Api
    version: int
    body: Mapping[str, Any]


@dataclass(frozen=True)
class Response:
    correlation_id: int
    api: Api
    version: int
    body: dict[str, Any]


def request_header_version(api: Api, version: int) -> int:
    return 2 if api.is_flexible(version) else 1


def response_header_version(api: Api, version: int) -> int:
    if api.key == _API_VERSIONS_KEY:
        return 0
    return 1 if api.is_flexible(version) else 0


_PRODUCE_KEY = 0


def _encode_frame_parts(
    api: Api, version: int, correlation_id: int, client_id: str | None, body: Mapping[str, Any]
) -> tuple[list[Buffer], int]:
    """The frame in pieces, size prefix first (the records blobs among them
    as they are), and its length."""
    parts: list[Buffer] = [
        b"",  # size prefix, filled in below
        INT16.pack(api.key) + INT16.pack(version) + INT32.pack(correlation_id),
        encode_nullable_string(client_id),
    ]
    if api.is_flexible(version):
        parts.append(b"\x00")  # header tagged fields
    if api.key == _PRODUCE_KEY and _PRODUCE_MIN <= version <= _PRODUCE_MAX:
        encode_produce_into(version, body, parts)  # the hot path, hand-written
    else:
        api.encode_request_into(version, body, parts)
    size = 0
    for part in parts:
        size += part.nbytes if isinstance(part, memoryview) else len(part)
    parts[0] = INT32.pack(size)
    return parts, size + 4


class ProtocolConnection:
    """Client side of one Kafka connection, without the socket.

    ``send`` returns the bytes to write; ``receive_data`` takes whatever the
    socket produced (any chunking) and returns the complete responses.  After
    a :class:`~grete.errors.ProtocolError` the stream cannot be trusted any
    more: every later call raises it again and the connection must be closed.
    """

    def __init__(
        self, client_id: str | None = "grete", max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.client_id = client_id
        self.max_frame_size = max_frame_size
        self._next_id = 0
        self._pending: deque[tuple[int, Api, int]] = deque()
        self._buf = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def in_flight(self) -> int:
        """Requests sent that still expect a response."""
        return len(self._pending)

    @property
    def buffered(self) -> int:
        """Bytes received that do not form a complete frame yet."""
        return len(self._buf)

    def send(self, request: Request, expect_response: bool = True) -> tuple[int, bytes]:
        """Frame ``request``; returns its correlation id and the bytes to write.

        ``expect_response=False`` is for Produce with ``acks=0``, which the
        broker never answers: nothing is queued for it.
        """
        correlation_id, parts, _ = self.send_parts(request, expect_response)
        return correlation_id, b"".join(parts)

    def send_parts(
        self, request: Request, expect_response: bool = True
    ) -> tuple[int, list[Buffer], int]:
        """:meth:`send`, the frame left in pieces to write in order (its
        records blobs not copied into one buffer), and its length: for a
        socket that writes many buffers at once (``sendmsg``)."""
        if self._failed is not None:
            raise self._failed
        correlation_id = self._next_id
        # Correlation ids are INT32 on the wire: wrap rather than overflow.
        self._next_id = 0 if correlation_id == _INT32_MAX else correlation_id + 1
        parts, size = _encode_frame_parts(
            request.api, request.version, correlation_id, self.client_id, request.body
        )
        if expect_response:
            self._pending.append((correlation_id, request.api, request.version))
        return correlation_id, parts, size

    def receive_data(self, data: Buffer) -> list[Response]:
        """Feed received bytes; return the responses completed by them, in order."""
        if self._failed is not None:
            raise self._failed
        try:
            return self._receive(data)
        except ProtocolError as exc:
            self._failed = exc
            raise

    def _receive(self, data: Buffer) -> list[Response]:
        buf = self._buf
        # bytearray append and front deletion are both amortised O(1) per byte,
        # so a large frame trickling in small chunks costs linear time.
        buf += data
        responses: list[Response] = []
        start = 0
        available = len(buf)
        while available - start >= 4:
            size = INT32.unpack_from(buf, start)[0]
            if size < 0 or size > self.max_frame_size:
                raise InvalidFrameSize(f"frame size {size} is outside [0, {self.max_frame_size}]")
            if available - start - 4 < size:
                break
            frame = bytes(buf[start + 4 : start + 4 + size])
            start += 4 + size
            responses.append(self._decode_frame(frame))
        if start:
            del buf[:start]
        return responses

    def _decode_frame(self, frame: bytes) -> Response:
        reader = Reader(frame)
        correlation_id = reader.read_int32()
        if not self._pending:
            raise CorrelationIdMismatch(
                f"response with correlation id {correlation_id} but no request is in flight"
            )
        expected, api, version = self._pending[0]
        if correlation_id != expected:
            known = any(cid == correlation_id for cid, _, _ in self._pending)
            raise CorrelationIdMismatch(
                f"response with correlation id {correlation_id} while expecting {expected}"
                + (" (out of order)" if known else " (never sent)")
            )
        self._pending.popleft()
        if response_header_version(api, version) >= 1:
            reader.skip_tagged_fields()
        body_start = reader.pos
        try:
            body = api.decode_response(version, reader)
        except ProtocolError:
            if api.key != _API_VERSIONS_KEY or version == 0:
                raise
            # A broker that does not support our ApiVersions version answers in
            # v0 (with UNSUPPORTED_VERSION and its own ranges), whatever we sent.
            body = api.decode_response(0, Reader(frame, body_start))
            version = 0
        return Response(correlation_id, api, version, body)


# -- the broker's side (fake brokers and tests) ----------------------------------------


def decode_request_frame(frame: Buffer, apis: Mapping[int, Api]) -> tuple[int, str | None, Request]:
    """Decode one request frame *without* its size prefix.

    Returns ``(correlation_id, client_id, request)``; raises ``ProtocolError``
    for an unknown api key or version.
    """
    reader = Reader(frame)
    api_key = reader.read_int16()
    version = reader.read_int16()
    correlation_id = reader.read_int32()
    client_id = reader.read_nullable_string()
    api = apis.get(api_key)
    if api is None:
        raise ProtocolError(f"unknown api key {api_key}")
    if not api.min_version <= version <= api.max_version:
        raise ProtocolError(f"{api.name} v{version} is not supported")
    if api.is_flexible(version):
        reader.skip_tagged_fields()
    body = api.decode_request(version, reader)
    return correlation_id, client_id, Request(api, version, body)


def encode_response_frame(
    correlation_id: int, api: Api, version: int, body: Mapping[str, Any]
) -> bytes:
    """A complete size-prefixed response frame, as a broker would send it."""
    parts: list[Buffer] = [b"", INT32.pack(correlation_id)]
    if response_header_version(api, version) >= 1:
        parts.append(b"\x00")
    api.encode_response_into(version, body, parts)
    size = sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in parts)
    parts[0] = INT32.pack(size)
    return b"".join(parts)
