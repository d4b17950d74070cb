"""One connection to one broker: socket, TLS, SASL, version negotiation.

A :class:`BrokerConnection` drives the sans-I/O
:class:`~grete.protocol.framing.ProtocolConnection` over a socket. The handshake
(:meth:`BrokerConnection.connect`: TCP connect, TLS, ApiVersions, SASL) is done
blocking but bounded by the connect timeout, on a thread of its own that
:class:`~grete.network.Network` starts per attempt. After it the socket is
non-blocking and requests are pipelined: :meth:`BrokerConnection.send` queues a
frame and returns a :class:`Pending` at once, and the client's
:class:`~grete.network.Network` drives reads and writes of every connection
together with one selector (:meth:`~grete.network.Network.poll` calls
:meth:`BrokerConnection.on_writable` and :meth:`BrokerConnection.on_readable`),
so one slow broker never stalls traffic to the others.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, cast

from grete import _version
from grete.errors import (
    AuthenticationError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProtocolError,
    error_for_code,
)
from grete.protocol import messages as m
from grete.protocol.framing import ProtocolConnection, Request, Response
from grete.protocol.schema import Api
from grete.protocol.versions import parse_api_versions, pick_version
from grete.security import SaslMechanism

# ssl is imported by whoever made the context (see security.py: PLAINTEXT users
# never load OpenSSL); a connection without one never meets its types.
if TYPE_CHECKING:
    import ssl

log = logging.getLogger("grete.connection")

# Error codes the handshake reacts to by number (see protocol/errors.py).
_UNSUPPORTED_VERSION = 35
_ILLEGAL_SASL_STATE = 34
_UNSUPPORTED_SASL_MECHANISM = 33

_RECV_SIZE = 1 << 18
# Pieces handed to one sendmsg, under Linux's IOV_MAX (1024; a Produce frame has a
# few dozen); more go by the next sendmsg.
_IOV_MAX = 512


@dataclass(frozen=True)
class ConnectionConfig:
    """What every connection of a client shares. Validated by the client."""

    client_id: str = "grete"
    request_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    ssl_context: ssl.SSLContext | None = None
    sasl: SaslMechanism | None = None
    max_response_size: int = 100 * 1024 * 1024


class Pending:
    """A request on the wire: done once its response (or failure) is known.

    Kept tiny and lock-free: it is completed by whoever polls the connection.
    """

    __slots__ = (
        "api",
        "callbacks",
        "correlation_id",
        "deadline",
        "done",
        "error",
        "response",
        "timeout",
    )

    def __init__(self, api: Api, correlation_id: int, deadline: float, timeout: float) -> None:
        # The API only, not the request: its body (a Produce request's record
        # batches) can go as soon as it is framed, not when the answer comes.
        self.api = api
        self.correlation_id = correlation_id
        self.deadline = deadline
        self.timeout = timeout  # (for the error message)
        self.response: Response | None = None
        self.error: KafkaError | None = None
        self.callbacks: list[Callable[[Pending], None]] | None = None
        # Set on completion; a request that expects no answer (acks=0) is
        # done, with neither response nor error, once it is written.
        self.done = False

    def add_callback(self, fn: Callable[[Pending], None]) -> None:
        """Call ``fn(self)`` once done (now, if done already). Not atomic
        against :meth:`_finish` on another thread: attach it under the
        network's lock (``Network.send(callback=)``) when others may poll."""
        if self.done:
            fn(self)
        elif self.callbacks is None:
            self.callbacks = [fn]
        else:
            self.callbacks.append(fn)

    def _finish(self, response: Response | None, error: KafkaError | None) -> None:
        if self.done:
            return
        # The outcome first, then done: another thread reading done (a waiter
        # in Network.wait, a driver's metadata check) reads the outcome next.
        self.response, self.error = response, error
        self.done = True
        callbacks, self.callbacks = self.callbacks, None
        for fn in callbacks or ():
            fn(self)

    def result(self) -> dict[str, Any]:
        """The response body, or the failure raised."""
        if self.error is not None:
            raise self.error
        if not self.done:
            raise KafkaError("request not completed yet")
        return {} if self.response is None else self.response.body


class BrokerConnection:
    """A connection to the broker at ``host:port``; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        config: ConnectionConfig,
        node_id: int = -1,
        before_close: Callable[[BrokerConnection], None] | None = None,
    ) -> None:
        self.host, self.port, self.node_id = host, port, node_id
        # Lets the poller unregister the socket before its file descriptor is
        # freed (and possibly reused by the next connection).
        self._before_close = before_close
        self.config = config
        self._sock: socket.socket | None = None
        # What a non-blocking send or recv raises when it cannot go on now.
        self._would_block: tuple[type[OSError], ...] = (BlockingIOError,)
        if config.ssl_context is not None:
            import ssl  # imported already: the context is one of its objects

            self._would_block += (ssl.SSLWantReadError, ssl.SSLWantWriteError)
        self._proto = ProtocolConnection(
            client_id=config.client_id, max_frame_size=config.max_response_size
        )
        self._out: deque[memoryview] = deque()
        # Plaintext sockets write a frame's pieces with one sendmsg (scatter/
        # gather): the records are copied into no frame buffer first. TLS
        # sockets have no sendmsg: their frames are joined.
        self._gather = config.ssl_context is None and hasattr(socket.socket, "sendmsg")
        self._in_flight: dict[int, Pending] = {}
        # Pending requests that expect no response (acks=0 Produce): done once written.
        self._unanswered: deque[tuple[int, Pending]] = deque()
        self._written = 0
        self._queued = 0
        self.api_versions: dict[int, tuple[int, int]] = {}
        # Feature levels the cluster finalized (ApiVersions v3+), e.g.
        # "transaction.version" -> 2.
        self.features: dict[str, int] = {}
        self.closed_error: KafkaError | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<BrokerConnection node={self.node_id} {self.host}:{self.port} {state}>"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + len(self._unanswered)

    def fileno(self) -> int:
        return -1 if self._sock is None else self._sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self._out)

    # -- handshake ---------------------------------------------------------

    def connect(self) -> None:
        """Connect, negotiate versions and authenticate; blocking, bounded by
        ``connect_timeout_s``. Raises KafkaConnectionError, KafkaTimeoutError or
        AuthenticationError (at once, never retried here)."""
        deadline = time.monotonic() + self.config.connect_timeout_s
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=self.config.connect_timeout_s
            )
        except TimeoutError as exc:
            raise KafkaTimeoutError(f"connecting to {where} timed out") from exc
        except OSError as exc:
            raise KafkaConnectionError(f"cannot connect to {where}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.config.ssl_context is not None:
                sock = self._tls(sock, deadline)
            self._sock = sock
            self._negotiate(deadline)
            if self.config.sasl is not None:
                self._authenticate(self.config.sasl, deadline)
        except BaseException:
            self._sock = None
            sock.close()
            raise
        sock.setblocking(False)
        log.debug("connected to %s (node %s)", where, self.node_id)

    def _tls(self, sock: socket.socket, deadline: float) -> socket.socket:
        assert self.config.ssl_context is not None
        import ssl  # imported already: the context is one of its objects

        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            return self.config.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            raise AuthenticationError(
                f"TLS certificate of {self.host}:{self.port} not trusted: {exc.verify_message}"
            ) from exc
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise KafkaTimeoutError(
                    f"TLS handshake with {self.host}:{self.port} timed out"
                ) from exc
            raise KafkaConnectionError(
                f"TLS handshake with {self.host}:{self.port}: {exc}"
            ) from exc

    def _roundtrip(self, api: Api, version: int, body: dict[str, Any], deadline: float) -> Response:
        """One blocking request/response, used only during the handshake."""
        assert self._sock is not None
        _, frame = self._proto.send(Request(api, version, body))
        try:
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            self._sock.sendall(frame)
            while True:
                self._sock.settimeout(max(0.001, deadline - time.monotonic()))
                data = self._sock.recv(_RECV_SIZE)
                if not data:
                    raise KafkaConnectionError(
                        f"{self.host}:{self.port} closed the connection during {api.name}"
                    )
                responses = self._proto.receive_data(data)
                if responses:
                    return responses[0]
        except TimeoutError as exc:
            raise KafkaTimeoutError(
                f"{self.host}:{self.port} did not answer {api.name} in time"
            ) from exc
        except OSError as exc:
            raise KafkaConnectionError(
                f"connection to {self.host}:{self.port} broke during {api.name}: {exc}"
            ) from exc

    def _negotiate(self, deadline: float) -> None:
        version = m.API_VERSIONS.max_version
        body = {"client_software_name": "grete", "client_software_version": _version.__version__}
        response = self._roundtrip(m.API_VERSIONS, version, body, deadline)
        if response.body["error_code"] == _UNSUPPORTED_VERSION:
            # The broker answers with a v0 body listing what it supports; retry
            # with the highest ApiVersions version it knows.
            broker = parse_api_versions(response.body)
            _, hi = broker.get(m.API_VERSIONS.key, (0, 0))
            response = self._roundtrip(m.API_VERSIONS, min(hi, version), body, deadline)
        if response.body["error_code"] != 0:
            raise error_for_code(response.body["error_code"], "ApiVersions")
        self.api_versions = parse_api_versions(response.body)
        self.features = {
            f["name"]: f["max_version_level"] for f in response.body.get("finalized_features") or ()
        }

    def version(self, api: Api, cap: int | None = None) -> int:
        """The highest version of ``api`` both sides speak (at most ``cap``)."""
        return pick_version(api, self.api_versions, cap)

    def _authenticate(self, sasl: SaslMechanism, deadline: float) -> None:
        exchange = sasl.exchange()
        mech = exchange.mechanism
        hs = self._roundtrip(
            m.SASL_HANDSHAKE, self.version(m.SASL_HANDSHAKE, 1), {"mechanism": mech}, deadline
        )
        if hs.body["error_code"] != 0:
            enabled = ", ".join(hs.body.get("mechanisms") or []) or "none"
            raise AuthenticationError(
                f"SASL {mech} refused by {self.host}:{self.port} (enabled there: {enabled})"
            )
        version = self.version(m.SASL_AUTHENTICATE)
        message: bytes | None = exchange.first()
        while message is not None:
            resp = self._roundtrip(m.SASL_AUTHENTICATE, version, {"auth_bytes": message}, deadline)
            if resp.body["error_code"] != 0:
                detail = resp.body.get("error_message") or "authentication failed"
                raise AuthenticationError(f"SASL {mech} authentication failed: {detail}")
            message = exchange.step(bytes(resp.body.get("auth_bytes") or b""))

    # -- pipelined traffic -------------------------------------------------

    def send(
        self, request: Request, expect_response: bool = True, timeout: float | None = None
    ) -> Pending:
        """Queue ``request``; its frame goes out as the socket takes it. It
        must be answered within ``timeout`` seconds (at most, and by default,
        the request timeout), or the connection closes (see check_timeouts)."""
        if self._sock is None:
            raise self.closed_error or KafkaConnectionError(
                f"connection to {self.host}:{self.port} is closed"
            )
        if self._gather:
            cid, parts, size = self._proto.send_parts(request, expect_response=expect_response)
            views = [memoryview(part) for part in parts if len(part)]
        else:
            cid, frame = self._proto.send(request, expect_response=expect_response)
            views, size = [memoryview(frame)], len(frame)
        limit = self.config.request_timeout_s
        if timeout is not None and timeout < limit:
            limit = timeout
        pending = Pending(request.api, cid, time.monotonic() + limit, limit)
        self._out.extend(views)  # one C call: a frame is queued whole or not at all
        self._queued += size
        if expect_response:
            self._in_flight[cid] = pending
        else:
            self._unanswered.append((self._queued, pending))
        self.on_writable()
        return pending

    def on_writable(self) -> None:
        sock, out = self._sock, self._out
        if sock is None:
            return
        try:
            if self._gather:
                while out:
                    sent = sock.sendmsg(list(islice(out, _IOV_MAX)))
                    self._written += sent
                    if not sent:
                        break
                    while out and sent >= len(out[0]):
                        sent -= len(out.popleft())
                    if sent:  # the socket took part of a piece: it is full
                        out[0] = out[0][sent:]
                        break
            else:
                while out:
                    sent = sock.send(out[0])
                    self._written += sent
                    if sent == len(out[0]):
                        out.popleft()
                    else:
                        out[0] = out[0][sent:]
                        break
        except self._would_block:
            pass
        except OSError as exc:
            self.close(KafkaConnectionError(f"write to {self.host}:{self.port} failed: {exc}"))
            return
        while self._unanswered and self._unanswered[0][0] <= self._written:
            self._unanswered.popleft()[1]._finish(None, None)

    def on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data = sock.recv(_RECV_SIZE)
            except self._would_block:
                return
            except OSError as exc:
                self.close(KafkaConnectionError(f"read from {self.host}:{self.port} failed: {exc}"))
                return
            if not data:
                self.close(KafkaConnectionError(f"{self.host}:{self.port} closed the connection"))
                return
            try:
                responses = self._proto.receive_data(data)
            except ProtocolError as exc:
                self.close(exc)
                return
            for response in responses:
                pending = self._in_flight.pop(response.correlation_id, None)
                if pending is not None:
                    pending._finish(response, None)
            if len(data) < _RECV_SIZE and not (
                self.config.ssl_context is not None and cast("ssl.SSLSocket", sock).pending()
            ):
                return

    def check_timeouts(self, now: float) -> None:
        """A timed-out request leaves the stream unusable, as in the Java
        client: the connection closes. Every request is looked at, not only
        the oldest: a later one may have a shorter timeout (a produce request
        bounded by its batches' delivery timeout). A few at most per
        connection (max_in_flight)."""
        for pending in self._in_flight.values():
            if pending.deadline <= now:
                self.close(
                    KafkaTimeoutError(
                        f"{self.host}:{self.port} did not answer {pending.api.name} "
                        f"within {pending.timeout:.1f}s"
                    )
                )
                return

    def close(self, error: KafkaError | None = None) -> None:
        """Close the socket and fail every request still waiting."""
        if self._sock is not None and self._before_close is not None:
            self._before_close(self)
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.closed_error = error or KafkaConnectionError(
            f"connection to {self.host}:{self.port} was closed"
        )
        if error is not None:
            log.info("connection to %s:%s lost: %s", self.host, self.port, error)
        waiting = list(self._in_flight.values()) + [p for _, p in self._unanswered]
        self._in_flight.clear()
        self._unanswered.clear()
        self._out.clear()
        for pending in waiting:
            pending._finish(None, self.closed_error)
