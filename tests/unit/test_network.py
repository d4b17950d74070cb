"""Bootstrap host parsing and reconnect backoff of grete.network, without Kafka.

Sockets only ever go to 127.0.0.1: a port that was just closed (connection
refused at once) or a tiny fake broker thread that answers ApiVersions.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import grete.network as network_module
from grete._backoff import backoff_ceiling
from grete.connection import ConnectionConfig
from grete.errors import ConfigurationError, KafkaConnectionError
from grete.network import Network, _Backoff, parse_hosts
from grete.protocol import messages as m
from grete.protocol.framing import decode_request_frame, encode_response_frame
from grete.security import make_ssl_context
from grete.testing.tls import generate_tls_files

# ---------------------------------------------------------------- parse_hosts


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ("127.0.0.1:9092", [("127.0.0.1", 9092)]),
        ("a:1,b:2", [("a", 1), ("b", 2)]),
        (" a:1 , b:2 ,", [("a", 1), ("b", 2)]),
        (["a:1", " b:65535 "], [("a", 1), ("b", 65535)]),
        ("[::1]:9092", [("::1", 9092)]),
        ("kafka-0.kafka.svc.cluster.local:9093", [("kafka-0.kafka.svc.cluster.local", 9093)]),
    ],
)
def test_parse_hosts_accepts(hosts: str | list[str], expected: list[tuple[str, int]]) -> None:
    assert parse_hosts(hosts) == expected


@pytest.mark.parametrize(
    "hosts",
    [
        "",
        " , ",
        [],
        "localhost",
        "localhost:",
        ":9092",
        "h:0",
        "h:65536",
        "h:-1",
        "h:+1",
        "h:port",
        "h:²",  # a digit to str.isdigit(), not to int()
        "::1",  # bare IPv6 without a port
        "[]:9092",
    ],
)
def test_parse_hosts_refuses(hosts: str | list[str]) -> None:
    with pytest.raises(ConfigurationError):
        parse_hosts(hosts)


# ---------------------------------------------------------------- helpers


def _closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connect is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _network(port: int, base: float = 0.01, ceiling: float = 0.16) -> Network:
    return Network(
        [("127.0.0.1", port)],
        ConnectionConfig(connect_timeout_s=2.0, request_timeout_s=2.0),
        reconnect_backoff_s=base,
        reconnect_backoff_max_s=ceiling,
    )


def _wait_backoff_over(net: Network, node_id: int, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while net.backing_off(node_id):
        assert time.monotonic() < deadline, "backoff did not end"
        time.sleep(0.005)


# ---------------------------------------------------------------- backoff


def test_second_attempt_fails_at_once_while_backing_off() -> None:
    net = _network(_closed_port(), base=5.0, ceiling=10.0)
    try:
        with pytest.raises(KafkaConnectionError, match="cannot connect"):
            net.connection(-1)
        assert net.backing_off(-1)
        t0 = time.monotonic()
        with pytest.raises(KafkaConnectionError, match="backing off after 1 failure"):
            net.connection(-1)
        assert time.monotonic() - t0 < 0.1
        assert not net.is_ready(-1)
    finally:
        net.close()


def test_backoff_grows_exponentially_up_to_the_maximum() -> None:
    port = _closed_port()
    base, ceiling = 0.01, 0.16
    net = _network(port, base, ceiling)
    delays: list[float] = []
    try:
        for attempt in range(1, 8):
            _wait_backoff_over(net, -1)
            with pytest.raises(KafkaConnectionError, match="cannot connect"):
                net.connection(-1)
            state = net._backoff[("127.0.0.1", port)]
            assert state.failures == attempt
            delays.append(state.not_before - time.monotonic())
    finally:
        net.close()
    for attempt, delay in enumerate(delays, start=1):
        cap = min(ceiling, base * 2 ** (attempt - 1))
        # Jitter keeps each delay in [cap/2, cap]; a little slack for the clock
        # read between setting not_before and measuring it.
        assert cap / 2 - 0.01 <= delay <= cap, (attempt, delay, cap)
    # Exponential growth: the 5th delay's floor (0.08) is above the 1st's cap (0.01).
    assert delays[4] > delays[0] * 4
    # Capped: never past the maximum.
    assert max(delays) <= ceiling


def test_a_long_outage_keeps_the_backoff_at_its_maximum() -> None:
    # Thousands of failures (a broker down for hours): 2 ** 1024 no longer fits
    # a float, which once killed the connect thread with an OverflowError.
    port = _closed_port()
    net = _network(port, base=0.01, ceiling=0.05)
    try:
        net._backoff.setdefault(("127.0.0.1", port), _Backoff()).failures = 5000
        with pytest.raises(KafkaConnectionError, match="cannot connect"):
            net.connection(-1)
        state = net._backoff[("127.0.0.1", port)]
        assert state.failures == 5001
        assert 0.0 < state.not_before - time.monotonic() <= 0.05
    finally:
        net.close()


def test_backoff_ceiling_doubles_up_to_its_maximum_for_any_count() -> None:
    assert [backoff_ceiling(0.1, 1.0, n) for n in range(6)] == [0.1, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff_ceiling(0.1, 1.0, 10**9) == 1.0
    assert backoff_ceiling(1e-12, float("inf"), 10**9) == 1e-12 * 2**32


def test_backoff_is_jittered() -> None:
    port = _closed_port()
    delays = []
    for _ in range(12):
        net = _network(port, base=1.0, ceiling=1.0)
        try:
            with pytest.raises(KafkaConnectionError):
                net.connection(-1)
            delays.append(net._backoff[("127.0.0.1", port)].not_before - time.monotonic())
        finally:
            net.close()
    assert all(0.5 - 0.05 <= d <= 1.0 for d in delays), delays
    # Twelve independent draws in [0.5, 1.0] s: without jitter they would coincide.
    assert max(delays) - min(delays) > 0.02, delays


def test_closed_network_refuses_connections() -> None:
    net = _network(_closed_port())
    net.close()
    with pytest.raises(KafkaConnectionError, match="closed"):
        net.connection(-1)


def test_unknown_node_is_a_connection_error() -> None:
    net = _network(_closed_port())
    try:
        with pytest.raises(KafkaConnectionError, match="not in the cluster metadata"):
            net.connection(42)
        assert not net.backing_off(42)
    finally:
        net.close()


# ---------------------------------------------------------------- the lock


def _wait_until(cond: object, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_lock_is_taken_promptly_while_another_thread_sits_in_poll() -> None:
    net = _network(_closed_port())
    stop = threading.Event()

    def poller() -> None:
        # Bounded in time, not only in rounds: after a claim the poller's sleeps
        # are short for a while, and a round count alone could run out before
        # the test's five claims (the thread gone, _selecting never true again).
        deadline = time.monotonic() + 60
        for _ in range(1_000_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            net.poll(10.0)

    thread = threading.Thread(target=poller, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            _wait_until(lambda: net._selecting)
            started = time.monotonic()
            net.discard(7, "test")  # takes the lock (no such connection: a no-op)
            assert time.monotonic() - started < 2.0
    finally:
        stop.set()
        net.wakeup()
        thread.join(5.0)
        net.close()
    assert not thread.is_alive()


def test_claim_made_before_the_poller_sleeps_shortens_its_sleeps_for_a_while() -> None:
    """The handshake's other half: the claim lands before select(), so the
    poller must not sleep its whole timeout; and a claim ages out."""
    net = _network(_closed_port())
    try:
        claimer = threading.Thread(target=net._claim)
        claimer.start()
        claimer.join()
        started = time.monotonic()
        net.poll(10.0)
        assert time.monotonic() - started < 0.1
        time.sleep(0.25)
        started = time.monotonic()
        net.poll(0.2)
        assert time.monotonic() - started >= 0.15
    finally:
        net.close()


def test_poller_thread_claims_without_flagging_itself() -> None:
    net = _network(_closed_port())
    try:
        net.poll(0)
        net._claim()
        started = time.monotonic()
        net.poll(0.2)
        assert time.monotonic() - started >= 0.15
    finally:
        net.close()


def test_interrupt_inside_the_lock_releases_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt raised while Network.send holds the lock leaves it
    free for other threads (it used to be acquired before its try)."""
    net = _network(_closed_port())
    calls = {"n": 0}

    def connection(node_id: int, wait: bool = True) -> object:
        calls["n"] += 1
        if calls["n"] == 2:  # the call made under the lock
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(net, "connection", connection)
    try:
        with pytest.raises(KeyboardInterrupt):
            net.send(1, m.API_VERSIONS, {})
        got: list[bool] = []

        def take() -> None:
            got.append(net.lock.acquire(timeout=2.0))
            if got[0]:
                net.lock.release()

        other = threading.Thread(target=take)
        other.start()
        other.join(5.0)
        assert got == [True]
    finally:
        net.close()


# ---------------------------------------------------------------- waiting on time


def _timed_polls(net: Network, timeout: float, rounds: int) -> list[float]:
    elapsed = []
    for _ in range(rounds):
        started = time.perf_counter()
        net.poll(timeout)
        elapsed.append(time.perf_counter() - started)
    return elapsed


def test_short_waits_end_on_time_to_the_microsecond() -> None:
    """epoll sleeps whole milliseconds, rounded up: a 1.3 ms wait took 2 ms,
    and a batch waiting out its linger_ms left up to 1 ms late. select(2)
    sleeps to the microsecond. The fastest of 20 waits shows it (a loaded
    machine may stretch some, never shorten them)."""
    net = _network(_closed_port())
    try:
        elapsed = _timed_polls(net, 0.0013, 20)
    finally:
        net.close()
    assert min(elapsed) >= 0.0013
    assert min(elapsed) < 0.0019, elapsed


def test_long_waits_end_up_to_a_millisecond_early_never_late() -> None:
    """Past _FINE_WAIT_S the wait is epoll's, a millisecond short (its rounding
    up then ends it by the timeout): the caller's next poll waits out the rest."""
    net = _network(_closed_port())
    try:
        elapsed = _timed_polls(net, 0.0105, 5)
    finally:
        net.close()
    assert min(elapsed) >= 0.0085, elapsed
    assert min(elapsed) < 0.0105, elapsed


def test_a_fine_wait_reports_what_is_ready() -> None:
    net = _network(_closed_port())
    ours, theirs = socket.socketpair()
    try:
        net._selector.register(ours, selectors.EVENT_READ | selectors.EVENT_WRITE, "conn")
        # Writable, not readable: one event, the write.
        assert [(key.data, mask) for key, mask in net._select(0.001)] == [
            ("conn", selectors.EVENT_WRITE)
        ]
        theirs.send(b"x")
        net.wakeup()
        ready = {key.data: mask for key, mask in net._select(0.001)}
        assert ready == {
            "conn": selectors.EVENT_READ | selectors.EVENT_WRITE,
            None: selectors.EVENT_READ,  # the wake-up pipe
        }
    finally:
        net._selector.unregister(ours)
        ours.close()
        theirs.close()
        net.close()


@pytest.mark.parametrize(
    "error", [ValueError("filedescriptor out of range in select()"), OSError(9, "bad")]
)
def test_a_fine_wait_falls_back_to_the_selector(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """select(2) takes no descriptor from FD_SETSIZE (1024) on: an application
    with many files open gives the sockets such numbers. The selector copes."""

    def refuse(*args: object) -> None:
        raise error

    monkeypatch.setattr(network_module.select, "select", refuse)
    net = _network(_closed_port())
    try:
        assert net._select(0.001) == []
        net.wakeup()
        assert [(key.data, mask) for key, mask in net._select(0.001)] == [
            (None, selectors.EVENT_READ)
        ]
    finally:
        net.close()


# ---------------------------------------------------------------- with a fake broker


class _FakeBroker:
    """Accepts connections on 127.0.0.1 (over TLS with ``tls``) and answers
    ApiVersions requests, nothing else, until the client goes."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.settimeout(2.0)
            try:
                if self.tls is not None:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                with conn:
                    while True:  # until the client goes (or 2 s of silence)
                        self._answer_api_versions(conn)
            except OSError:
                conn.close()

    @staticmethod
    def _answer_api_versions(conn: socket.socket) -> None:
        size = int.from_bytes(_recv_exact(conn, 4), "big")
        cid, _, request = decode_request_frame(_recv_exact(conn, size), m.APIS_BY_KEY)
        body = {
            "error_code": 0,
            "api_keys": [
                {"api_key": a.key, "min_version": a.min_version, "max_version": a.max_version}
                for a in m.ALL_APIS
            ],
        }
        conn.sendall(encode_response_frame(cid, request.api, request.version, body))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    for _ in range(10_000):
        if len(buf) >= n:
            break
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise OSError("peer closed")
        buf += chunk
    return buf


@pytest.fixture
def fake_broker() -> Iterator[_FakeBroker]:
    broker = _FakeBroker()
    yield broker
    broker.close()


def test_connect_negotiates_versions_and_resets_backoff(fake_broker: _FakeBroker) -> None:
    net = _network(fake_broker.port)
    try:
        # Pretend earlier attempts failed, and their backoff is over.
        state = net._backoff[("127.0.0.1", fake_broker.port)] = _Backoff()
        state.failures = 3
        conn = net.connection(-1)
        assert conn.connected
        assert conn.version(m.METADATA) == m.METADATA.max_version
        assert state.failures == 0
        # The ready connection is reused, not reopened.
        assert net.connection(-1) is conn
        assert fake_broker.accepted == 1
    finally:
        net.close()
    assert not conn.connected


def test_tls_connection_handshakes_and_polls(tmp_path: Path) -> None:
    # Both the blocking handshake and the non-blocking poll loop over TLS
    # (ssl is imported lazily: see connection.py and security.py).
    files = generate_tls_files(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.broker_keystore_file)
    broker = _FakeBroker(tls=server)
    config = ConnectionConfig(
        connect_timeout_s=5.0,
        request_timeout_s=5.0,
        ssl_context=make_ssl_context(str(files.ca_file)),
    )
    net = Network([("127.0.0.1", broker.port)], config)
    try:
        conn = net.connection(-1)
        assert conn.version(m.METADATA) == m.METADATA.max_version
        body = {"client_software_name": "t", "client_software_version": "1"}
        for _ in range(3):
            assert net.request(-1, m.API_VERSIONS, body)["error_code"] == 0
        assert broker.accepted == 1
    finally:
        net.close()
        broker.close()


# ---------------------------------------------------------------- wakeup


def _pipe_bytes(net: Network) -> int:
    """Bytes waiting in the wakeup pipe (read off, without a poll)."""
    try:
        return len(net._wake_r.recv(4096))
    except BlockingIOError:
        return 0


def test_wakeups_between_two_polls_write_one_byte() -> None:
    """A producer calls wakeup() every few hundred microseconds; one byte per
    wake-up of the poller is enough, and each byte more cost the poller a read
    that let go of the GIL (it drained wake-ups instead of sending)."""
    net = _network(_closed_port())
    try:
        for _ in range(50):
            net.wakeup()
        assert _pipe_bytes(net) == 1
        net.poll(0.0)  # the poller woke: the next wakeup() writes again
        net.wakeup()
        net.wakeup()
        assert _pipe_bytes(net) == 1
    finally:
        net.close()


def test_a_wakeup_pending_makes_the_next_poll_return_at_once_and_is_drained() -> None:
    net = _network(_closed_port())
    try:
        for _ in range(3):
            net.wakeup()
        started = time.monotonic()
        net.poll(5.0)
        assert time.monotonic() - started < 1.0
        assert _pipe_bytes(net) == 0  # drained by that poll
        started = time.monotonic()
        net.poll(0.05)  # nothing pending: sleeps its timeout
        assert time.monotonic() - started >= 0.04
    finally:
        net.close()


def test_a_pending_flag_left_without_its_byte_lasts_one_poll() -> None:
    """wakeup() interrupted between setting its flag and writing: the flag must
    not silence every later wakeup (the poller would then sleep its whole
    timeout each time). The next poll clears it."""
    net = _network(_closed_port())
    try:
        net._wake_pending = True  # as an interrupted wakeup() leaves it
        net.wakeup()
        assert _pipe_bytes(net) == 0
        net.poll(0.0)
        net.wakeup()
        assert _pipe_bytes(net) == 1
    finally:
        net.close()


def test_a_wakeup_from_another_thread_ends_a_long_poll() -> None:
    net = _network(_closed_port())
    done = threading.Event()

    def poller() -> None:
        net.poll(10.0)
        done.set()

    thread = threading.Thread(target=poller, daemon=True)
    try:
        thread.start()
        _wait_until(lambda: net._selecting)
        net.wakeup()
        assert done.wait(2.0)
    finally:
        net.wakeup()
        thread.join(5.0)
        net.close()
