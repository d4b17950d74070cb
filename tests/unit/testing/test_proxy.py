"""FaultProxy against a local echo server (no Kafka).

Timing checks assert lower bounds only (a busy machine is only ever slower), and
every wait is bounded in time: socket timeouts, joins and deadlines.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from grete.testing import FaultProxy, ProxyClosedError

WAIT_S = 10.0  # bound on anything that should happen "soon"


class EchoServer:
    """Echoes every byte back on 127.0.0.1; records what each connection received."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.received: list[bytearray] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, name="echo-accept", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = bytearray()
            with self._lock:
                self.received.append(record)
            t = threading.Thread(target=self._echo, args=(conn, record), daemon=True)
            self._threads.append(t)
            t.start()

    def _echo(self, conn: socket.socket, record: bytearray) -> None:
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    record.extend(data)
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def total_received(self) -> int:
        with self._lock:
            return sum(len(r) for r in self.received)

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(WAIT_S)
        for t in self._threads:
            t.join(WAIT_S)
        self._listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port, seed=1234) as p:
        yield p


def _connect(proxy: FaultProxy, timeout: float = WAIT_S) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(65536, n - len(out)))
        if not chunk:
            raise AssertionError(f"EOF after {len(out)} of {n} bytes")
        out.extend(chunk)
    return bytes(out)


def _wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def _sees_closed(sock: socket.socket) -> bool:
    """The peer closed or reset the connection (EOF or ECONNRESET) within WAIT_S."""
    sock.settimeout(WAIT_S)
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return True
    return data == b""


def _echo_roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` from a thread while reading the echo here (both directions
    stream at once, so neither side's buffers need to hold it all)."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            view = memoryview(payload)
            for i in range(0, len(payload), 7919):  # odd-sized pieces
                sock.sendall(view[i : i + 7919])
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        got = _recv_exactly(sock, len(payload))
    finally:
        sender.join(WAIT_S * 3)
    assert not sender.is_alive()
    assert not errors, errors
    return got


# ---------------------------------------------------------------- forwarding


def test_bytes_pass_both_ways_unchanged(proxy: FaultProxy, echo: EchoServer) -> None:
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    with _connect(proxy) as sock:
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5) == b"hello"
        payload = bytes(range(256)) * 8192 + b"tail"  # 2 MiB and a bit: many chunks
        assert _echo_roundtrip(sock, payload) == payload
    total = 5 + len(payload)
    assert echo.received[0] == b"hello" + payload
    _wait_for("the counters", lambda: proxy.bytes_up == total and proxy.bytes_down == total)
    assert proxy.connections == 1


def test_each_client_gets_its_own_upstream(proxy: FaultProxy, echo: EchoServer) -> None:
    with _connect(proxy) as a, _connect(proxy) as b:
        a.sendall(b"from a")
        b.sendall(b"from b")
        assert _recv_exactly(a, 6) == b"from a"
        assert _recv_exactly(b, 6) == b"from b"
        assert proxy.connections == 2
        assert proxy.active_connections == 2
    assert sorted(bytes(r) for r in echo.received) == [b"from a", b"from b"]


def test_half_close_is_passed_on(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)
        # The echo server sees EOF, closes; its FIN comes back after the echo.
        got = bytearray()
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got.extend(chunk)
        assert got == b"last words"
    _wait_for("the link to close", lambda: proxy.active_connections == 0)


# ---------------------------------------------------------------- faults


def test_latency_adds_at_least_the_delay(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"warm")
        _recv_exactly(sock, 4)
        proxy.set_latency(100)  # both directions: a round trip waits >= 200 ms
        start = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - start >= 0.2
        proxy.set_latency(150, direction="down")
        proxy.set_latency(0, direction="up")
        start = time.monotonic()
        sock.sendall(b"pong")
        assert _recv_exactly(sock, 4) == b"pong"
        assert time.monotonic() - start >= 0.15


def test_waiting_bytes_do_not_spin_the_loop(proxy: FaultProxy) -> None:
    proxy.set_latency(1500, direction="down")
    proxy.set_bandwidth(100_000, direction="down")
    with _connect(proxy) as sock:
        sock.sendall(b"q" * 1000)
        start_cpu, start = time.process_time(), time.monotonic()
        time.sleep(1.0)  # the echo waits in the proxy meanwhile
        cpu = time.process_time() - start_cpu
        assert _recv_exactly(sock, 1000) == b"q" * 1000
        assert time.monotonic() - start >= 0.3
    # A busy loop would burn about a whole second of CPU.
    assert cpu < 0.5


def test_jitter_keeps_order(proxy: FaultProxy) -> None:
    proxy.set_latency(20, jitter_ms=15)
    with _connect(proxy) as sock:
        payload = b"".join(b"%05d" % i for i in range(2000))
        for i in range(0, len(payload), 50):
            sock.sendall(payload[i : i + 50])
        assert _recv_exactly(sock, len(payload)) == payload


def test_bandwidth_cap_bounds_throughput(proxy: FaultProxy) -> None:
    proxy.set_bandwidth(500_000, direction="up")
    payload = b"x" * 1_000_000
    with _connect(proxy, timeout=30) as sock:
        start = time.monotonic()
        assert _echo_roundtrip(sock, payload) == payload
        assert time.monotonic() - start >= 1.5


def test_reset_connections_resets_the_client(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"abc")
        assert _recv_exactly(sock, 3) == b"abc"
        proxy.reset_connections()
        assert proxy.active_connections == 0
        assert _sees_closed(sock)
    with _connect(proxy) as sock:  # new connections are not affected
        sock.sendall(b"again")
        assert _recv_exactly(sock, 5) == b"again"


def test_random_reset_cuts_mid_stream(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.set_reset_probability(1.0, seed=7, direction="up")
    assert proxy.seed == 7
    with _connect(proxy) as sock:
        sock.sendall(b"y" * 1000)
        assert _sees_closed(sock)
    # Only a prefix of the first chunk reached the server (maybe nothing).
    assert echo.total_received() < 1000
    assert proxy.bytes_up < 1000
    proxy.clear()
    with _connect(proxy) as sock:
        sock.sendall(b"whole")
        assert _recv_exactly(sock, 5) == b"whole"


def test_black_hole_forwards_nothing_until_lifted(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.black_hole()
    with _connect(proxy) as sock:  # connect succeeds
        sock.sendall(b"anyone there?")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert echo.total_received() == 0
        proxy.clear()
        # The bytes waited (as TCP would retransmit them) and now flow.
        sock.settimeout(WAIT_S)
        assert _recv_exactly(sock, 13) == b"anyone there?"


def test_half_open_drops_answers(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.half_open()
    with _connect(proxy) as sock:
        sock.sendall(b"request")
        _wait_for("the server to receive", lambda: echo.total_received() == 7)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    assert proxy.bytes_up == 7
    proxy.clear()
    with _connect(proxy) as sock:
        sock.sendall(b"answered")
        assert _recv_exactly(sock, 8) == b"answered"


def test_partition_closes_open_and_new_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hi")
        assert _recv_exactly(sock, 2) == b"hi"
        proxy.partition()
        assert _sees_closed(sock)
    for _ in range(3):
        try:
            sock = _connect(proxy)
        except (ConnectionRefusedError, ConnectionResetError):
            continue
        with sock:
            with contextlib.suppress(OSError):
                sock.sendall(b"blocked")
            assert _sees_closed(sock)
    _wait_for("the refusals", lambda: proxy.refused >= 3)
    assert proxy.active_connections == 0
    proxy.partition(on=False)
    with _connect(proxy) as sock:
        sock.sendall(b"healed")
        assert _recv_exactly(sock, 6) == b"healed"


def test_clear_removes_every_fault(proxy: FaultProxy) -> None:
    proxy.set_latency(5000)
    proxy.set_bandwidth(10)
    proxy.set_reset_probability(1.0)
    proxy.half_open()
    proxy.black_hole()
    proxy.partition()
    proxy.clear()
    with _connect(proxy) as sock:
        start = time.monotonic()
        sock.sendall(b"z" * 1000)
        assert _recv_exactly(sock, 1000) == b"z" * 1000
        assert time.monotonic() - start < 8  # not 2 x 5 s of latency, not 100 s at 10 B/s


def test_unreachable_target_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with FaultProxy("127.0.0.1", closed_port) as proxy:
        try:
            sock = _connect(proxy)
        except ConnectionResetError:
            pass  # the reset came before connect() returned
        else:
            with sock:
                assert _sees_closed(sock)
        _wait_for("the refusal", lambda: proxy.refused == 1)
        assert proxy.connections == 0


def test_arguments_are_checked(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.set_latency(10, direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        proxy.set_latency(-1)
    with pytest.raises(ValueError):
        proxy.set_bandwidth(0)
    with pytest.raises(ValueError):
        proxy.set_reset_probability(1.5)
    with pytest.raises(ValueError):
        FaultProxy("127.0.0.1", 1, listen_host="0.0.0.0")


def test_fault_changes_are_logged_with_the_seed(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="grete.testing.proxy"):
        proxy.set_latency(20, jitter_ms=5, direction="down")
        proxy.set_reset_probability(0.01, seed=99)
        proxy.clear()
    messages = [r.getMessage() for r in caplog.records]
    assert any("latency 20 ms +- 5 ms down" in msg and "seed 1234" in msg for msg in messages)
    assert any("reset probability 0.01" in msg and "seed 99" in msg for msg in messages)
    assert any("clear" in msg for msg in messages)


# ---------------------------------------------------------------- close


def test_close_leaves_no_thread_and_no_socket(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.port)
    name = f"grete-fault-proxy-{proxy.port}"
    assert name in {t.name for t in threading.enumerate()}
    with _connect(proxy) as open_conn:
        open_conn.sendall(b"x")
        assert _recv_exactly(open_conn, 1) == b"x"
        start = time.monotonic()
        proxy.close()
        assert time.monotonic() - start < WAIT_S
        assert name not in {t.name for t in threading.enumerate()}
        assert _sees_closed(open_conn)  # its connections were closed too
    with pytest.raises(ConnectionRefusedError), socket.socket() as s:
        s.settimeout(WAIT_S)
        s.connect(("127.0.0.1", proxy.port))
    with pytest.raises(ProxyClosedError):
        proxy.set_latency(1)
    proxy.close()  # idempotent


def test_context_manager_closes(echo: EchoServer) -> None:
    with FaultProxy("127.0.0.1", echo.port) as proxy:
        port = proxy.port
    assert f"grete-fault-proxy-{port}" not in {t.name for t in threading.enumerate()}
