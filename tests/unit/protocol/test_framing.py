"""Framing: headers, pipelining, chunking, correlation ids, acks=0."""

from __future__ import annotations

import pytest

from grete.errors import ProtocolError
from grete.protocol import messages as m
from grete.protocol.framing import (
    CorrelationIdMismatch,
    InvalidFrameSize,
    ProtocolConnection,
    Request,
    decode_request_frame,
    encode_response_frame,
    request_header_version,
    response_header_version,
)
from grete.protocol.primitives import INT32

API_VERSIONS_V0_BODY = {
    "error_code": 0,
    "api_keys": [{"api_key": 0, "min_version": 3, "max_version": 12}],
}


def _api_versions_request() -> Request:
    return Request(
        m.API_VERSIONS, 3, {"client_software_name": "grete", "client_software_version": "1.0"}
    )


def test_api_versions_v3_request_frame_bytes() -> None:
    conn = ProtocolConnection(client_id="grete")
    cid, frame = conn.send(_api_versions_request())
    assert cid == 0
    assert frame == (
        b"\x00\x00\x00\x1b"  # size 27
        b"\x00\x12\x00\x03\x00\x00\x00\x00"  # key 18, v3, correlation id 0
        b"\x00\x05grete"  # client id: classic nullable string even in header v2
        b"\x00"  # header tagged fields
        b"\x06grete\x041.0"  # compact strings
        b"\x00"  # body tagged fields
    )
    assert conn.in_flight == 1


def test_header_versions() -> None:
    assert request_header_version(m.PRODUCE, 8) == 1
    assert request_header_version(m.PRODUCE, 9) == 2
    assert response_header_version(m.PRODUCE, 9) == 1
    assert response_header_version(m.API_VERSIONS, 3) == 0  # always v0
    assert response_header_version(m.SASL_HANDSHAKE, 1) == 0


def test_api_versions_response_uses_header_v0() -> None:
    conn = ProtocolConnection()
    cid, _ = conn.send(_api_versions_request())
    body = {"error_code": 0, "api_keys": [], "throttle_time_ms": 0}
    frame = encode_response_frame(cid, m.API_VERSIONS, 3, body)
    # size, correlation id, then the body directly: no header tagged fields.
    assert frame[8:] == m.API_VERSIONS.encode_response(3, body)
    (resp,) = conn.receive_data(frame)
    assert resp.correlation_id == cid and resp.body["api_keys"] == []


def test_api_versions_fallback_to_v0_body() -> None:
    # A broker that does not know our ApiVersions version answers in v0.
    conn = ProtocolConnection()
    cid, _ = conn.send(_api_versions_request())
    body = {"error_code": 35, "api_keys": API_VERSIONS_V0_BODY["api_keys"]}
    (resp,) = conn.receive_data(encode_response_frame(cid, m.API_VERSIONS, 0, body))
    assert resp.version == 0
    assert resp.body["error_code"] == 35
    assert resp.body["api_keys"][0]["max_version"] == 12


def _metadata_response(cid: int, version: int, host: str) -> bytes:
    body = {"brokers": [{"node_id": 1, "host": host, "port": 9092}], "topics": []}
    return encode_response_frame(cid, m.METADATA, version, body)


def test_pipelining_and_chunking() -> None:
    conn = ProtocolConnection()
    ids = [conn.send(Request(m.METADATA, v, {"topics": None}))[0] for v in (1, 9, 12)]
    assert ids == [0, 1, 2] and conn.in_flight == 3
    stream = b"".join(
        _metadata_response(cid, v, f"h{cid}") for cid, v in zip(ids, (1, 9, 12), strict=True)
    )
    # Byte-by-byte, then everything merged: same responses.
    got = []
    for i in range(len(stream)):
        got.extend(conn.receive_data(stream[i : i + 1]))
    assert [r.correlation_id for r in got] == ids
    assert [r.body["brokers"][0]["host"] for r in got] == ["h0", "h1", "h2"]
    assert conn.in_flight == 0 and conn.buffered == 0

    ids = [conn.send(Request(m.METADATA, 12, {"topics": None}))[0] for _ in range(3)]
    stream = b"".join(_metadata_response(cid, 12, "x") for cid in ids)
    first = conn.receive_data(stream[:10])
    rest = conn.receive_data(stream[10:])
    assert first == [] and [r.correlation_id for r in rest] == ids


def test_large_response_in_small_chunks() -> None:
    conn = ProtocolConnection()
    cid, _ = conn.send(Request(m.METADATA, 12, {"topics": None}))
    frame = _metadata_response(cid, 12, "h" * 30000)
    out = []
    for i in range(0, len(frame), 7):
        out.extend(conn.receive_data(memoryview(frame)[i : i + 7]))
    assert len(out) == 1 and out[0].body["brokers"][0]["host"] == "h" * 30000


def test_unknown_correlation_id() -> None:
    conn = ProtocolConnection()
    conn.send(Request(m.METADATA, 12, {}))
    with pytest.raises(CorrelationIdMismatch, match="never sent"):
        conn.receive_data(_metadata_response(99, 12, "h"))
    # The stream is now untrustworthy: the connection stays failed.
    with pytest.raises(CorrelationIdMismatch):
        conn.send(Request(m.METADATA, 12, {}))


def test_out_of_order_response() -> None:
    conn = ProtocolConnection()
    conn.send(Request(m.METADATA, 12, {}))
    cid, _ = conn.send(Request(m.METADATA, 12, {}))
    with pytest.raises(CorrelationIdMismatch, match="out of order"):
        conn.receive_data(_metadata_response(cid, 12, "h"))


def test_response_without_request() -> None:
    with pytest.raises(CorrelationIdMismatch):
        ProtocolConnection().receive_data(_metadata_response(0, 12, "h"))


@pytest.mark.parametrize("size", [-1, 1001])
def test_invalid_frame_size(size: int) -> None:
    conn = ProtocolConnection(max_frame_size=1000)
    conn.send(Request(m.METADATA, 12, {}))
    with pytest.raises(InvalidFrameSize):
        conn.receive_data(INT32.pack(size))


def test_truncated_body_in_complete_frame() -> None:
    conn = ProtocolConnection()
    cid, _ = conn.send(Request(m.METADATA, 12, {}))
    frame = _metadata_response(cid, 12, "h")
    bad = INT32.pack(len(frame) - 8) + frame[4:-4]
    with pytest.raises(ProtocolError):
        conn.receive_data(bad)


def test_acks_zero_expects_no_response() -> None:
    conn = ProtocolConnection()
    body = {
        "acks": 0,
        "timeout_ms": 1000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"rec"}]}],
    }
    cid0, _ = conn.send(Request(m.PRODUCE, 9, body), expect_response=False)
    assert conn.in_flight == 0
    cid1, _ = conn.send(Request(m.METADATA, 12, {}))
    assert cid1 == cid0 + 1
    (resp,) = conn.receive_data(_metadata_response(cid1, 12, "h"))
    assert resp.api is m.METADATA


def test_correlation_ids_wrap() -> None:
    conn = ProtocolConnection()
    conn._next_id = 2**31 - 1
    assert conn.send(Request(m.METADATA, 12, {}))[0] == 2**31 - 1
    assert conn.send(Request(m.METADATA, 12, {}))[0] == 0


def test_broker_side_round_trip() -> None:
    conn = ProtocolConnection(client_id=None)
    body = {
        "transactional_id": "tx",
        "acks": -1,
        "timeout_ms": 5,
        "topic_data": [
            {"name": "t", "partition_data": [{"index": 3, "records": memoryview(b"batch")}]}
        ],
    }
    cid, frame = conn.send(Request(m.PRODUCE, 11, body))
    assert INT32.unpack_from(frame)[0] == len(frame) - 4
    got_cid, client_id, req = decode_request_frame(frame[4:], m.APIS_BY_KEY)
    assert (got_cid, client_id, req.api, req.version) == (cid, None, m.PRODUCE, 11)
    assert req.body["topic_data"][0]["partition_data"][0]["records"] == b"batch"
    resp_body = {
        "responses": [
            {"name": "t", "partition_responses": [{"index": 3, "error_code": 0, "base_offset": 42}]}
        ]
    }
    (resp,) = conn.receive_data(encode_response_frame(cid, m.PRODUCE, 11, resp_body))
    part = resp.body["responses"][0]["partition_responses"][0]
    assert part["base_offset"] == 42 and part["current_leader"] == {
        "leader_id": -1,
        "leader_epoch": -1,
    }


def test_decode_request_frame_rejects_unknown() -> None:
    with pytest.raises(ProtocolError, match="unknown api key"):
        decode_request_frame(b"\x03\xe7\x00\x00\x00\x00\x00\x00\xff\xff", m.APIS_BY_KEY)
    with pytest.raises(ProtocolError, match="not supported"):
        decode_request_frame(b"\x00\x00\x00\x01\x00\x00\x00\x00\xff\xff", m.APIS_BY_KEY)
