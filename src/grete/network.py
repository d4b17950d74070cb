"""Every connection of a client, and the loop that drives them together.

The :class:`Network` knows brokers only as node ids with addresses (the
cluster layer tells it which), keeps one :class:`BrokerConnection` per broker,
reconnects with exponential backoff and jitter, and multiplexes reads and
writes of all connections with one selector, in :meth:`Network.poll`.

Producers never block on it: ``grete.producer.driver.Driver.step`` drives
:meth:`Network.poll`, and sends with ``Network.send(..., wait_connect=False)``
(a broker still connecting raises :class:`StillConnecting` at once): Produce
requests with a ``callback=`` that queues each answer for the driver,
InitProducerId and metadata refreshes (``Cluster.request_update``) as a
:class:`Pending` a later step looks at. Blocking callers (the cluster's metadata
fetches, ListOffsets, the test cluster's admin calls) use :meth:`Network.request`,
or send and then :meth:`Network.wait`, which polls until their answers come.
Whichever thread polls completes every request that lands.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import selectors
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from grete._backoff import backoff_ceiling
from grete.connection import BrokerConnection, ConnectionConfig, Pending
from grete.errors import (
    AuthenticationError,
    ClientClosedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    StillConnecting,
)
from grete.protocol.framing import Request
from grete.protocol.schema import Api

log = logging.getLogger("grete.network")

Address = tuple[str, int]


def parse_hosts(hosts: str | Iterable[str]) -> list[Address]:
    """``"h1:9092,h2:9093"`` (or a list of ``"host:port"``) -> addresses."""
    from grete.errors import ConfigurationError

    items = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    out: list[Address] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip().strip("[]")
        # isascii(): str.isdigit() is also true for "²", which int() refuses.
        ok_port = port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if not sep or not host or host.strip(":") == "" or not ok_port:
            raise ConfigurationError(f"bad host {item!r}: expected host:port")
        out.append((host, int(port)))
    if not out:
        raise ConfigurationError("no bootstrap hosts given")
    return out


class _Backoff:
    """Exponential reconnect backoff with jitter, per address."""

    __slots__ = ("failures", "last_error", "not_before")

    def __init__(self) -> None:
        self.failures = 0
        self.not_before = 0.0
        self.last_error = ""


class _Connecting:
    """One connect attempt in flight on its own thread."""

    __slots__ = ("conn", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.conn: BrokerConnection | None = None
        self.error: KafkaError | None = None


# Network._claim: how long a claim shortens the poller's sleeps, and to what.
_CLAIM_S = 0.2
_CLAIM_POLL_S = 0.001

# Network._select: the selector (epoll) sleeps whole milliseconds, rounded up,
# so a wait for a linger deadline would end up to 1 ms late. Waits shorter than
# this go through select(2), which sleeps to the microsecond; longer ones end
# a millisecond early on epoll, and the caller's next poll waits out the rest.
_FINE_WAIT_S = 0.002
_TICK_S = 0.001


_FORKED = "this client was created in another process (fork); create a new KafkaClient here"

# Networks of this process: a child after fork() shares their sockets with the
# parent, and must not write a byte on them (its frames would interleave with
# the parent's), so they are closed to it there.
_live_networks: weakref.WeakSet[Network] = weakref.WeakSet()


def _close_forked() -> None:
    for network in list(_live_networks):
        network._closed = _FORKED
        # A lock the parent's poller held at the fork stays held here for ever.
        network.lock = threading.RLock()


os.register_at_fork(after_in_child=_close_forked)


class Network:
    """Connections by node id; see the module docstring. Thread-safe: one lock
    guards the sockets, held for one short poll round at a time."""

    def __init__(
        self,
        bootstrap: list[Address],
        config: ConnectionConfig,
        *,
        reconnect_backoff_s: float = 0.05,
        reconnect_backoff_max_s: float = 1.0,
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self._addresses: dict[int, Address] = {}
        self._conns: dict[int, BrokerConnection] = {}
        self._backoff: dict[Address, _Backoff] = {}
        self._connecting: dict[int, _Connecting] = {}
        self._auth_errors: dict[int, KafkaError] = {}
        self._backoff_base = reconnect_backoff_s
        self._backoff_max = reconnect_backoff_max_s
        self._selector = selectors.DefaultSelector()
        self._registered: dict[BrokerConnection, int] = {}
        self.lock = threading.RLock()
        # For _claim (see there): when another thread last wanted the lock; the
        # poller is in select(); the poller's thread (its own claims need no wakeup).
        self._claimed_at = -_CLAIM_S
        self._selecting = False
        self._poller: int | None = None
        # Why nothing can go through it any more (None: open).
        self._closed: str | None = None
        # Self-pipe: lets another thread interrupt a poll() sleeping in select().
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        # A wakeup was written since the poller last woke up: no need for another
        # (see wakeup()).
        self._wake_pending = False
        _live_networks.add(self)

    # -- addresses ---------------------------------------------------------

    def set_brokers(self, addresses: Mapping[int, Address]) -> None:
        """Adopt the brokers of a fresh metadata response. A broker whose
        address changed gets a new connection; a removed broker's connection is
        closed (its in-flight requests fail and are retried by their owners)."""
        with self.lock:
            for node_id, conn in list(self._conns.items()):
                if node_id >= 0 and addresses.get(node_id) != (conn.host, conn.port):
                    self._drop(node_id, KafkaConnectionError(f"broker {node_id} left the cluster"))
            self._addresses = {n: a for n, a in addresses.items()}

    @property
    def known_nodes(self) -> list[int]:
        return list(self._addresses)

    def address(self, node_id: int) -> Address:
        if node_id < 0:
            return self.bootstrap[-node_id - 1]
        try:
            return self._addresses[node_id]
        except KeyError:
            raise KafkaConnectionError(f"broker {node_id} is not in the cluster metadata") from None

    # -- connections -------------------------------------------------------

    def connection(self, node_id: int, *, wait: bool = True) -> BrokerConnection:
        """A ready connection to ``node_id`` (bootstrap hosts are -1, -2, ...).

        Connecting (TCP, TLS, ApiVersions, SASL) happens on a short-lived
        thread of its own, so a slow or dead broker never holds up traffic to
        the others. ``wait=False`` raises :class:`StillConnecting` at once while
        the handshake runs; ``wait=True`` waits for it (bounded by the connect
        timeout). Raises at once while the broker is backing off. Never call
        with ``wait=True`` while holding :attr:`lock`.
        """
        with self.lock:
            if self._closed is not None:
                raise ClientClosedError(self._closed)
            conn = self._conns.get(node_id)
            if conn is not None and conn.connected:
                return conn
            host, port = self.address(node_id)
            auth_error = self._auth_errors.pop(node_id, None)
            if auth_error is not None:
                raise auth_error
            attempt = self._connecting.get(node_id)
            if attempt is None:
                backoff = self._backoff.setdefault((host, port), _Backoff())
                if time.monotonic() < backoff.not_before:
                    raise KafkaConnectionError(
                        f"broker {host}:{port} is backing off after {backoff.failures} "
                        f"failure(s): {backoff.last_error}"
                    )
                attempt = self._connecting[node_id] = _Connecting()
                threading.Thread(
                    target=self._connect,
                    args=(node_id, host, port, attempt),
                    name=f"grete-connect-{host}:{port}",
                    daemon=True,
                ).start()
        if not wait:
            raise StillConnecting(f"still connecting to {host}:{port}")
        if not attempt.done.wait(self.config.connect_timeout_s + 1.0):
            raise KafkaTimeoutError(f"connecting to {host}:{port} timed out")
        if attempt.error is not None:
            if isinstance(attempt.error, AuthenticationError):
                with self.lock:
                    self._auth_errors.pop(node_id, None)  # reported here, not twice
            raise attempt.error
        assert attempt.conn is not None
        return attempt.conn

    def _connect(self, node_id: int, host: str, port: int, attempt: _Connecting) -> None:
        """The connect thread: handshake, then install the connection (or the
        failure and its backoff) under the lock."""
        conn = BrokerConnection(host, port, self.config, node_id, self._unregister)
        error: KafkaError | None = None
        try:
            conn.connect()
        except KafkaError as exc:
            error = exc
        except Exception as exc:  # a bug must not leave waiters hanging
            error = KafkaConnectionError(f"connecting to {host}:{port} failed: {exc!r}")
        self._claim()
        with self.lock:
            self._connecting.pop(node_id, None)
            backoff = self._backoff.setdefault((host, port), _Backoff())
            if error is None and self._closed is not None:
                conn.close()
                error = KafkaConnectionError("client closed")
            if error is None:
                backoff.failures = 0
                self._conns[node_id] = conn
                attempt.conn = conn
            else:
                attempt.error = error
                if isinstance(error, AuthenticationError):
                    # Not retried: the next user of this broker hears of it.
                    self._auth_errors[node_id] = error
                else:
                    backoff.failures += 1
                    backoff.last_error = str(error)
                    ceiling = backoff_ceiling(
                        self._backoff_base, self._backoff_max, backoff.failures
                    )
                    backoff.not_before = time.monotonic() + random.uniform(ceiling / 2, ceiling)
        attempt.done.set()
        self.wakeup()  # a sender waiting for this broker may go on

    def is_ready(self, node_id: int) -> bool:
        conn = self._conns.get(node_id)
        return conn is not None and conn.connected

    def backing_off(self, node_id: int) -> bool:
        try:
            address = self.address(node_id)
        except KafkaConnectionError:
            return False
        b = self._backoff.get(address)
        return b is not None and time.monotonic() < b.not_before

    def _drop(self, node_id: int, error: KafkaError) -> None:
        conn = self._conns.pop(node_id, None)
        if conn is not None:
            self._unregister(conn)
            conn.close(error)

    def discard(self, node_id: int, reason: str) -> None:
        """Close the connection to ``node_id`` (its requests in flight fail
        with :class:`KafkaConnectionError`); the next request reconnects."""
        self._claim()
        with self.lock:
            self._drop(node_id, KafkaConnectionError(reason))

    def _poison(self, conn: BrokerConnection, exc: BaseException) -> None:
        """Drop ``conn`` after an exception escaped its I/O (lock held)."""
        for node_id, c in list(self._conns.items()):
            if c is conn:
                self._drop(node_id, KafkaConnectionError(f"interrupted during I/O: {exc!r}"))
                return
        self._unregister(conn)
        conn.close(KafkaConnectionError(f"interrupted during I/O: {exc!r}"))

    def _unregister(self, conn: BrokerConnection) -> None:
        if self._closed is _FORKED:
            return  # the parent's registration (see close)
        if conn in self._registered:
            del self._registered[conn]
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(conn)

    # -- requests ----------------------------------------------------------

    def send(
        self,
        node_id: int,
        api: Api,
        body: Mapping[str, Any],
        *,
        cap: int | None = None,
        expect_response: bool = True,
        wait_connect: bool = True,
        callback: Callable[[Pending], None] | None = None,
        timeout: float | None = None,
    ) -> Pending:
        """Send ``api`` at the best version the broker speaks (at most ``cap``).
        ``wait_connect=False``: raise :class:`StillConnecting` rather than wait
        for a handshake. ``callback(pending)`` runs once it is done, on
        whichever thread completes it (any thread polling this network).
        ``timeout``: answered within it, or the connection closes (default and
        longest: the request timeout)."""
        self.connection(node_id, wait=wait_connect)
        self._claim()
        with self.lock:
            # Under the lock: the connection may have broken in between.
            conn = self.connection(node_id, wait=False)
            version = conn.version(api, cap)
            pending = conn.send(
                Request(api, version, body), expect_response=expect_response, timeout=timeout
            )
            if callback is not None:
                # Under the lock too: only a poller (holding it) completes a
                # request, so the callback is never missed.
                pending.add_callback(callback)
            return pending

    def request(
        self, node_id: int, api: Api, body: Mapping[str, Any], *, cap: int | None = None
    ) -> dict[str, Any]:
        """Blocking send + wait; raises the connection's failure."""
        pending = self.send(node_id, api, body, cap=cap)
        self.wait([pending], self.config.request_timeout_s + 1.0)
        return pending.result()

    def wait(self, pendings: Iterable[Pending], timeout: float) -> None:
        """Drive all connections until every one of ``pendings`` is done, or
        raise KafkaTimeoutError after ``timeout`` seconds (the requests stay
        in flight; their connections' own timeouts will fail them)."""
        todo = [p for p in pendings if not p.done]
        deadline = time.monotonic() + timeout
        while todo:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(f"{len(todo)} request(s) still unanswered after {timeout}s")
            self.poll(min(left, 0.1))
            todo = [p for p in todo if not p.done]

    def poll(self, timeout: float, inbox: Sized = ()) -> None:
        """One round of I/O over every connection with work to do; returns
        after ``timeout`` seconds at most, or at once after :meth:`wakeup`.

        ``inbox``: where the caller's request callbacks leave answers (see
        ``Driver``). Another thread's poll may have completed the caller's
        requests since it last looked; a non-empty inbox makes this poll
        sleep not at all. Checked under the lock: from then until the
        select() returns, nobody else can complete a request.
        """
        with self.lock:
            if self._closed is not None:
                raise ClientClosedError(self._closed)
            if inbox:
                timeout = 0.0
            active = [
                c for c in self._conns.values() if c.connected and (c.in_flight or c.wants_write)
            ]
            for conn in active:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.wants_write else 0)
                old = self._registered.get(conn)
                if old is None:
                    self._selector.register(conn, events, conn)
                elif old != events:
                    self._selector.modify(conn, events, conn)
                self._registered[conn] = events
            for conn in [c for c in self._registered if c not in active]:
                self._unregister(conn)
            self._poller = threading.get_ident()
            self._selecting = True
            try:
                if timeout > _CLAIM_POLL_S and time.monotonic() - self._claimed_at < _CLAIM_S:
                    timeout = _CLAIM_POLL_S  # see _claim
                ready = self._select(timeout)
            finally:
                self._selecting = False
            # Awake: whatever a wakeup() before this point was for is seen by the
            # caller's next look, so later ones must write again. Cleared whether
            # or not the pipe is readable, so a flag a wakeup() left set without
            # writing (interrupted in between) lasts one poll at most.
            self._wake_pending = False
            for key, mask in ready:
                conn = key.data
                if conn is None:
                    self._drain_wakeups()
                    continue
                try:
                    if mask & selectors.EVENT_WRITE:
                        conn.on_writable()
                    if mask & selectors.EVENT_READ:
                        conn.on_readable()
                except BaseException as exc:
                    # Interrupted mid-read or mid-write (KeyboardInterrupt, a
                    # callback's error): the stream's framing state is unknown,
                    # and a half-written frame would corrupt the next request.
                    self._poison(conn, exc)
                    raise
            now = time.monotonic()
            for conn in active:
                conn.check_timeouts(now)

    def _select(self, timeout: float) -> list[tuple[selectors.SelectorKey, int]]:
        """The selector's ``select(timeout)``, on time to the microsecond, not
        the millisecond: see ``_FINE_WAIT_S``. Returning early is allowed
        (``poll`` promises at most ``timeout``); returning late would delay a
        batch waiting out its ``linger_ms``."""
        if timeout >= _FINE_WAIT_S:
            return self._selector.select(timeout - _TICK_S)
        if timeout <= 0:
            return self._selector.select(0)
        keys = list(self._selector.get_map().values())
        readers = [key.fileobj for key in keys if key.events & selectors.EVENT_READ]
        writers = [key.fileobj for key in keys if key.events & selectors.EVENT_WRITE]
        try:
            readable, writable, _ = select.select(readers, writers, [], timeout)
        except (ValueError, OSError):
            # A descriptor select(2) cannot take (from FD_SETSIZE, 1024, on)
            # or one closed under us: the selector copes with both.
            return self._selector.select(timeout)
        masks: dict[Any, int] = {}
        for fileobj in readable:
            masks[fileobj] = selectors.EVENT_READ
        for fileobj in writable:
            masks[fileobj] = masks.get(fileobj, 0) | selectors.EVENT_WRITE
        return [(self._selector.get_key(fileobj), mask) for fileobj, mask in masks.items()]

    def wakeup(self) -> None:
        """Make a poll() in progress (in another thread) return now, or the next
        one return at once.

        One byte per wake-up of the poller, not one per call: every read of the
        pipe lets go of the GIL, which a producing thread then holds for the
        interpreter's switch interval (5 ms), so a byte per call from a
        producer calling this often would leave the sender thread draining
        wake-ups a byte at a time instead of sending."""
        if self._wake_pending:
            return
        self._wake_pending = True
        # A full buffer means it is awake already; a closed one, that we are done.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _drain_wakeups(self) -> None:
        # One read: bytes left over only make the next select() return at once,
        # while every read more would let go of the GIL (see wakeup()).
        with contextlib.suppress(OSError):  # BlockingIOError included
            self._wake_r.recv(4096)

    def _claim(self) -> None:
        """Call just before ``with self.lock``: makes a poll() sitting in
        select() in another thread give the lock up promptly.

        Not a context manager that acquires the lock itself: a KeyboardInterrupt
        landing between an ``acquire()`` and its ``try`` would leak the lock, and
        every other thread would block on it for ever; ``with self.lock`` leaves
        no such window.

        The poller holds the lock through select(), so a claim does two things.
        It wakes a select() in progress (the GIL orders these plain attribute
        accesses: we write ``_claimed_at`` then read ``_selecting``, the poller
        writes ``_selecting`` then reads ``_claimed_at``, so at least one of us
        sees the other). And for ``_CLAIM_S`` the poller sleeps at most
        ``_CLAIM_POLL_S`` per round: it releases the lock between rounds, and a
        poller that re-took it at once and slept its whole timeout again could
        starve us round after round. No flag to clear, so an interrupted claim
        leaves nothing stale behind.
        """
        if threading.get_ident() != self._poller:
            self._claimed_at = time.monotonic()
            if self._selecting:
                self.wakeup()

    def close(self) -> None:
        if self._closed is _FORKED:
            # The sockets and the epoll instance are the parent's too: an
            # unregister here (epoll_ctl DEL) would silence the parent's
            # connections. The child's descriptors go when it exits.
            return
        with self.lock:
            self._closed = "client is closed"
            for node_id in list(self._conns):
                self._drop(node_id, KafkaConnectionError("client closed"))
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
