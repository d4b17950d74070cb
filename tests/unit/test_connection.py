"""BrokerConnection's pipelined writes, on a socket pair: a plaintext socket
writes each frame's pieces with sendmsg (the records blobs never copied into
one frame buffer), through partial writes, and the peer reads exactly the
frames ProtocolConnection joins."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from grete.connection import BrokerConnection, ConnectionConfig
from grete.protocol import messages as m
from grete.protocol.framing import ProtocolConnection, Request


def _produce(rnd: random.Random, version: int, sizes: list[int]) -> Request:
    body = {
        "transactional_id": None,
        "acks": 1,
        "timeout_ms": 5000,
        "topic_data": [
            {
                "name": "t",
                "partition_data": [
                    {"index": i, "records": rnd.randbytes(size)} for i, size in enumerate(sizes)
                ],
            }
        ],
    }
    return Request(m.PRODUCE, version, body)


@pytest.mark.skipif(not hasattr(socket.socket, "sendmsg"), reason="no sendmsg here")
def test_frames_written_in_pieces_arrive_whole_and_in_order() -> None:
    rnd = random.Random(5)
    # Big blobs fill the socket's buffer (partial writes, mid-piece and at piece
    # boundaries), small ones and an empty one make pieces of every size.
    requests = [
        _produce(rnd, version, sizes)
        for version, sizes in [
            (3, [3_000_000, 10, 0]),
            (9, [1, 2, 3]),
            (12, [700_000, 1_500_000]),
            (7, [65_536] * 40),
        ]
    ]
    reference = ProtocolConnection("grete")
    expected = b"".join(reference.send(r)[1] for r in requests)

    mine, peer = socket.socketpair()
    mine.setblocking(False)
    conn = BrokerConnection("127.0.0.1", 0, ConnectionConfig(client_id="grete"))
    assert conn._gather
    conn._sock = mine
    received = bytearray()

    def read() -> None:
        peer.settimeout(10.0)
        while len(received) < len(expected):
            chunk = peer.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)
            time.sleep(0.0005)  # slower than the writer: its writes come out partial

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for request in requests:
            conn.send(request)
        # Megabytes the socket could not take at once: the rest waits, partly
        # written (else this test would not see a partial write at all).
        assert conn.wants_write and 0 < conn._written < len(expected)
        deadline = time.monotonic() + 20.0
        while conn.wants_write and time.monotonic() < deadline:
            conn.on_writable()
            time.sleep(0.001)
        reader.join(20.0)
        assert not conn.wants_write
        assert bytes(received) == expected
        assert conn._written == conn._queued == len(expected)
        assert conn.in_flight == len(requests)
    finally:
        mine.close()
        peer.close()
