"""A fault-injecting TCP proxy for tests: put it between a client and one broker
(or any TCP server) and switch faults on and off while the test runs.

    from grete.testing import FaultProxy

    with FaultProxy("127.0.0.1", broker.port()) as proxy:
        client = KafkaClient(proxy.address)
        proxy.set_latency(50, jitter_ms=5)   # each chunk waits 45-55 ms, in order
        proxy.half_open()                    # requests reach the broker, answers vanish
        proxy.clear()                        # back to a plain relay

Each accepted client connection gets its own upstream connection. "up" is client ->
server, "down" is server -> client. Faults:

- ``set_latency(ms, jitter_ms=0, direction="both")``: every chunk read is held
  ``ms`` +- ``jitter_ms`` (uniform, never negative) before it is written; order is
  kept (a chunk never overtakes the one before it).
- ``set_bandwidth(bytes_per_s, direction="both")``: a cap per connection and
  direction (``None`` removes it).
- ``reset_connections()``: every open connection is reset now (RST to both sides);
  ``set_reset_probability(p, seed=None, direction="both")``: each chunk read resets
  its connection with probability ``p``, after forwarding a random prefix of it
  (so mid-frame).
- ``black_hole(on=True)``: connections are still accepted, nothing is forwarded
  either way; bytes wait (as TCP would retransmit them) and flow again once it
  is lifted.
- ``half_open(on=True)``: bytes up pass, bytes down are read and dropped (lost
  for good: a framed protocol's stream is cut mid-frame; such a client must
  reconnect).
- ``partition(on=True)``: open connections are reset, new ones are accepted and
  reset at once.
- ``clear()``: all of the above off (the random generator keeps its state).

Every change is logged on the ``grete.testing.proxy`` logger (INFO) with the seed
of the random generator (jitter, random resets), so a run can be replayed; random
resets depend on how the kernel splits the stream into chunks too, so a replay
is close, not byte-exact. Counters: ``connections`` (accepted and forwarded),
``refused`` (reset by a partition or an unreachable target), ``active_connections``,
``bytes_up`` and ``bytes_down`` (bytes written to the other side).

One thread per proxy runs a selector loop over nonblocking sockets; buffers are
bounded (reading stops while a direction holds 256 KiB), setters return once the
loop applied them, and ``close()`` joins the thread within a bound and closes
every socket. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["Direction", "FaultProxy", "ProxyClosedError"]

log = logging.getLogger("grete.testing.proxy")

Direction = Literal["up", "down", "both"]

_LISTEN_HOST = "127.0.0.1"
_RECV_SIZE = 65536
_BUFFER_LIMIT = 256 * 1024  # per connection and direction, plus one recv
_COMMAND_TIMEOUT_S = 10.0  # bounded wait for the loop to apply a change
_JOIN_TIMEOUT_S = 10.0
_MAX_SELECT_S = 1.0  # idle wakeups: cheap, and never a busy loop
_MIN_SELECT_S = 0.001
_LINGER_RST = struct.pack("ii", 1, 0)
_IN_PROGRESS = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)


class ProxyClosedError(RuntimeError):
    """The proxy was closed (or its loop died): no more changes."""


def _directions(direction: str) -> tuple[str, ...]:
    if direction == "both":
        return ("up", "down")
    if direction in ("up", "down"):
        return (direction,)
    raise ValueError(f"direction must be 'up', 'down' or 'both', not {direction!r}")


def _reset_close(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees ECONNRESET, not a clean EOF."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Faults:
    """Fault settings per direction; only the loop thread touches them."""

    latency_s: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})
    jitter_s: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})
    rate: dict[str, float | None] = field(default_factory=lambda: {"up": None, "down": None})
    reset_p: dict[str, float] = field(default_factory=lambda: {"up": 0.0, "down": 0.0})
    black_hole: bool = False
    half_open: bool = False
    partition: bool = False


class _Pipe:
    """One direction of one connection: bytes read from ``src`` wait here
    (with the time they may leave) until written to ``dst``."""

    def __init__(self, name: str, src: socket.socket, dst: socket.socket) -> None:
        self.name = name
        self.src = src
        self.dst = dst
        self.buf: collections.deque[tuple[float, memoryview]] = collections.deque()
        self.buffered = 0
        self.last_release = 0.0
        self.next_free = 0.0  # bandwidth: when the next byte may leave
        self.eof = False  # src sent FIN
        self.shut = False  # FIN passed on to dst
        self.reset_after = False  # a random reset: reset once the prefix is out
        self.blocked = False  # dst's send buffer is full: wait for EVENT_WRITE


class _Link:
    """A client connection and its upstream connection."""

    def __init__(self, ident: int, client: socket.socket, upstream: socket.socket) -> None:
        self.ident = ident
        self.client = client
        self.upstream = upstream
        self.connected = False  # upstream connect finished
        self.up = _Pipe("up", client, upstream)
        self.down = _Pipe("down", upstream, client)
        self.masks: dict[socket.socket, int] = {client: 0, upstream: 0}
        self.closed = False


class _Command:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.ran = False
        self.error: BaseException | None = None


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` (127.0.0.1, a free port by
    default) to ``target_host:target_port`` with faults switchable at run time;
    see the module docstring. Starts at once; use as a context manager or call
    :meth:`close`.

    :param seed: seed of the random generator (jitter, random resets); by default
        a random one, logged and kept in :attr:`seed`.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = _LISTEN_HOST,
        listen_port: int = 0,
        *,
        seed: int | None = None,
    ) -> None:
        if listen_host not in (_LISTEN_HOST, "localhost"):
            raise ValueError(f"FaultProxy listens on 127.0.0.1 only, not {listen_host!r}")
        self.target = (target_host, int(target_port))
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self._rng = random.Random(self.seed)
        self._faults = _Faults()
        self._links: dict[int, _Link] = {}
        self._next_ident = 0
        self._lock = threading.Lock()
        self._commands: list[_Command] = []
        self._closing = False
        self._dead = False
        self.connections = 0
        self.refused = 0
        self.bytes_up = 0
        self.bytes_down = 0

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((_LISTEN_HOST, listen_port))
            self._listener.listen(128)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._run, name=f"grete-fault-proxy-{self.port}", daemon=True
        )
        self._thread.start()
        log.info("proxy %s -> %s:%d started (seed %d)", self.address, *self.target, self.seed)

    # -- public API ------------------------------------------------------------

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``: what to give a client instead of the target."""
        return f"{_LISTEN_HOST}:{self.port}"

    @property
    def active_connections(self) -> int:
        return len(self._links)

    def __repr__(self) -> str:
        return f"<FaultProxy {self.address} -> {self.target[0]}:{self.target[1]}>"

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def set_latency(self, ms: float, jitter_ms: float = 0, direction: Direction = "both") -> None:
        """Hold every chunk ``ms`` +- ``jitter_ms`` milliseconds (order kept)."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must be >= 0")
        dirs = _directions(direction)

        def apply() -> None:
            for d in dirs:
                self._faults.latency_s[d] = ms / 1000
                self._faults.jitter_s[d] = jitter_ms / 1000

        self._change(f"latency {ms} ms +- {jitter_ms} ms {direction}", apply)

    def set_bandwidth(self, bytes_per_s: float | None, direction: Direction = "both") -> None:
        """Cap each connection's throughput per direction; ``None`` removes the cap."""
        if bytes_per_s is not None and bytes_per_s <= 0:
            raise ValueError("bytes_per_s must be > 0 (or None for no cap)")
        dirs = _directions(direction)

        def apply() -> None:
            for d in dirs:
                self._faults.rate[d] = None if bytes_per_s is None else float(bytes_per_s)

        self._change(f"bandwidth {bytes_per_s} B/s {direction}", apply)

    def set_reset_probability(
        self, p_per_chunk: float, seed: int | None = None, direction: Direction = "both"
    ) -> None:
        """Reset a connection, after a random prefix of the chunk, with
        probability ``p_per_chunk`` for each chunk read. ``seed`` reseeds the
        random generator (logged either way)."""
        if not 0.0 <= p_per_chunk <= 1.0:
            raise ValueError("p_per_chunk must be within [0, 1]")
        dirs = _directions(direction)

        def apply() -> None:
            if seed is not None:
                self.seed = seed
                self._rng.seed(seed)
            for d in dirs:
                self._faults.reset_p[d] = p_per_chunk

        self._change(f"reset probability {p_per_chunk} per chunk {direction}", apply)

    def reset_connections(self) -> None:
        """Reset every open connection now (both sides see a RST)."""
        self._change("reset all connections", lambda: self._reset_all("reset_connections()"))

    def black_hole(self, on: bool = True) -> None:
        """Accept connections but forward nothing either way while on."""

        def apply() -> None:
            self._faults.black_hole = on

        self._change(f"black hole {'on' if on else 'off'}", apply)

    def half_open(self, on: bool = True) -> None:
        """Forward bytes up; drop every byte coming down while on."""

        def apply() -> None:
            self._faults.half_open = on

        self._change(f"half-open {'on' if on else 'off'}", apply)

    def partition(self, on: bool = True) -> None:
        """Reset open connections and every new one while on."""

        def apply() -> None:
            self._faults.partition = on
            if on:
                self._reset_all("partition")

        self._change(f"partition {'on' if on else 'off'}", apply)

    def clear(self) -> None:
        """Remove every fault (open connections stay open)."""

        def apply() -> None:
            self._faults = _Faults()

        self._change("clear all faults", apply)

    def close(self) -> None:
        """Stop the loop, join its thread (bounded) and close every socket. Idempotent."""
        with self._lock:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
        if not already:
            self._wake()
        self._thread.join(_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError(f"{self!r}: its thread did not stop within {_JOIN_TIMEOUT_S}s")
        with contextlib.suppress(OSError):
            self._wake_w.close()
        if not already:
            log.info(
                "proxy %s closed: %d connections, %d refused, %d bytes up, %d bytes down",
                self.address,
                self.connections,
                self.refused,
                self.bytes_up,
                self.bytes_down,
            )

    # -- commands from other threads -------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wakeup is pending) or closed
            self._wake_w.send(b"\0")

    def _change(self, what: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread and wait until it did (bounded)."""
        command = _Command(fn)
        with self._lock:
            if self._closing or self._dead:
                raise ProxyClosedError(f"{self!r} is closed")
            self._commands.append(command)
        self._wake()
        if not command.done.wait(_COMMAND_TIMEOUT_S):
            raise RuntimeError(f"{self!r}: the proxy loop did not apply {what!r}")
        if command.error is not None:
            raise command.error
        if not command.ran:
            raise ProxyClosedError(f"{self!r} closed before applying {what!r}")
        log.info("proxy %s: %s (seed %d)", self.address, what, self.seed)

    # -- the loop (its thread only) --------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                timeout = self._pump_all()
                for key, mask in self._selector.select(timeout):
                    self._on_event(key, mask)
                self._run_commands()
        except Exception:
            log.exception("proxy %s: loop failed; closing", self.address)
        finally:
            with self._lock:
                self._dead = True
                pending, self._commands = self._commands, []
            for command in pending:
                command.done.set()
            for link in list(self._links.values()):
                self._close_link(link, reset=True)
            with contextlib.suppress(OSError):
                self._selector.close()
            for sock in (self._listener, self._wake_r):
                with contextlib.suppress(OSError):
                    sock.close()

    def _run_commands(self) -> None:
        with self._lock:
            commands, self._commands = self._commands, []
        for command in commands:
            try:
                command.fn()
                command.ran = True
            except Exception as exc:  # report to the caller, keep the loop
                command.error = exc
            command.done.set()

    def _on_event(self, key: selectors.SelectorKey, mask: int) -> None:
        data = key.data
        if data == "wake":
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        elif data == "listen":
            self._accept()
        else:
            link, sock = data
            if link.closed:
                return
            if mask & selectors.EVENT_WRITE:
                if sock is link.upstream and not link.connected:
                    self._finish_connect(link)
                    if link.closed:
                        return
                pipe = link.up if sock is link.upstream else link.down
                pipe.blocked = False
            if mask & selectors.EVENT_READ and not link.closed:
                self._read(link, link.up if sock is link.client else link.down)

    def _accept(self) -> None:
        for _ in range(64):  # bounded: the rest wait for the next round
            try:
                client, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: try again later
                log.warning("proxy %s: accept failed: %s", self.address, exc)
                return
            if self._faults.partition:
                self.refused += 1
                _reset_close(client)
                continue
            client.setblocking(False)
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            upstream.setblocking(False)
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._next_ident += 1
            link = _Link(self._next_ident, client, upstream)
            self._links[link.ident] = link
            err = upstream.connect_ex(self.target)
            if err not in (0, *_IN_PROGRESS):
                self._refuse(link, f"connect error {err}")
                continue
            self.connections += 1
            self._update_masks(link)

    def _finish_connect(self, link: _Link) -> None:
        err = link.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.connections -= 1
            self._refuse(link, f"connect error {err}")
        else:
            link.connected = True

    def _refuse(self, link: _Link, why: str) -> None:
        log.info("proxy %s: connection %d to the target failed (%s)", self.address, link.ident, why)
        self.refused += 1
        self._close_link(link, reset=True)

    def _reset_all(self, why: str) -> None:
        for link in list(self._links.values()):
            log.debug("proxy %s: connection %d reset (%s)", self.address, link.ident, why)
            self._close_link(link, reset=True)

    def _read(self, link: _Link, pipe: _Pipe) -> None:
        try:
            chunk = pipe.src.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_link(link, reset=True)
            return
        if not chunk:
            pipe.eof = True
            return
        if pipe is link.down and self._faults.half_open:
            return  # the answer is lost
        faults = self._faults
        d = pipe.name
        view = memoryview(chunk)
        if faults.reset_p[d] and self._rng.random() < faults.reset_p[d]:
            cut = self._rng.randrange(len(chunk))
            log.info(
                "proxy %s: connection %d will reset after %d of %d bytes %s (seed %d)",
                self.address,
                link.ident,
                cut,
                len(chunk),
                d,
                self.seed,
            )
            view = view[:cut]
            pipe.reset_after = True
        now = time.monotonic()
        delay = faults.latency_s[d]
        if faults.jitter_s[d]:
            delay = max(0.0, delay + self._rng.uniform(-faults.jitter_s[d], faults.jitter_s[d]))
        release = max(now + delay, pipe.last_release)
        pipe.last_release = release
        if len(view):
            pipe.buf.append((release, view))
            pipe.buffered += len(view)

    def _pump_all(self) -> float | None:
        """Write what is due on every connection, update the selector; the
        time until the next chunk is due (the select timeout)."""
        now = time.monotonic()
        next_due: float | None = None
        for link in list(self._links.values()):
            for pipe in (link.up, link.down):
                if link.closed:
                    break
                due = self._pump(link, pipe, now)
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            if not link.closed:
                if link.up.shut and link.down.shut:
                    self._close_link(link, reset=False)
                else:
                    self._update_masks(link)
        if next_due is None:
            return _MAX_SELECT_S
        return min(_MAX_SELECT_S, max(_MIN_SELECT_S, next_due - now))

    def _pump(self, link: _Link, pipe: _Pipe, now: float) -> float | None:
        if self._faults.black_hole or pipe.blocked:
            return None
        if pipe is link.up and not link.connected:
            return None
        rate = self._faults.rate[pipe.name]
        while pipe.buf:
            release, data = pipe.buf[0]
            if release > now:
                return release
            n = len(data)
            if rate is not None:
                if pipe.next_free > now:
                    return pipe.next_free
                n = min(n, max(1, int(rate / 20)))  # bursts of at most 50 ms' worth
            try:
                sent = pipe.dst.send(data[:n])
            except (BlockingIOError, InterruptedError):
                pipe.blocked = True
                return None
            except OSError:
                self._close_link(link, reset=True)
                return None
            if pipe is link.up:
                self.bytes_up += sent
            else:
                self.bytes_down += sent
            pipe.buffered -= sent
            if rate is not None:
                pipe.next_free = max(now, pipe.next_free) + sent / rate
            if sent == len(data):
                pipe.buf.popleft()
            else:
                pipe.buf[0] = (release, data[sent:])
            if sent < n:
                pipe.blocked = True
                return None
        if pipe.reset_after:
            self._close_link(link, reset=True)
        elif pipe.eof and not pipe.shut:
            pipe.shut = True
            with contextlib.suppress(OSError):
                pipe.dst.shutdown(socket.SHUT_WR)
        return None

    def _wants_read(self, link: _Link, pipe: _Pipe) -> bool:
        if self._faults.black_hole or pipe.eof or pipe.reset_after:
            return False
        if pipe is link.down and not link.connected:
            return False
        return pipe.buffered < _BUFFER_LIMIT

    def _update_masks(self, link: _Link) -> None:
        up, down = link.up, link.down
        client_mask = (selectors.EVENT_READ if self._wants_read(link, up) else 0) | (
            selectors.EVENT_WRITE if down.blocked else 0
        )
        upstream_mask = (selectors.EVENT_READ if self._wants_read(link, down) else 0) | (
            selectors.EVENT_WRITE if up.blocked or not link.connected else 0
        )
        for sock, mask in ((link.client, client_mask), (link.upstream, upstream_mask)):
            old = link.masks[sock]
            if mask == old:
                continue
            if old == 0:
                self._selector.register(sock, mask, (link, sock))
            elif mask == 0:
                self._selector.unregister(sock)
            else:
                self._selector.modify(sock, mask, (link, sock))
            link.masks[sock] = mask

    def _close_link(self, link: _Link, *, reset: bool) -> None:
        if link.closed:
            return
        link.closed = True
        self._links.pop(link.ident, None)
        for sock in (link.client, link.upstream):
            if link.masks[sock]:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(sock)
                link.masks[sock] = 0
            if reset:
                _reset_close(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
