"""The schema engine: round trips of every Api version, defaults, tagged
fields, encode errors and hostile input."""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grete.errors import ProtocolError
from grete.protocol import messages as m
from grete.protocol.primitives import Reader, encode_tagged_fields
from grete.protocol.schema import Api, Field, SchemaError, VersionRange, snake_case

from .._effort import effort

# -- generating bodies from the schema itself ---------------------------------------
_INTS = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
}


def _scalar(type_: str) -> st.SearchStrategy[Any]:
    if type_ in _INTS:
        return st.integers(*_INTS[type_])
    if type_ == "bool":
        return st.booleans()
    if type_ == "float64":
        return st.floats(allow_nan=False)
    if type_ == "string":
        return st.text(max_size=8)
    if type_ in ("bytes", "records"):
        return st.binary(max_size=12)
    if type_ == "uuid":
        return st.uuids()
    raise AssertionError(type_)


def _value(f: Field, version: int, flexible: bool) -> st.SearchStrategy[Any]:
    if f.is_struct:
        elem: st.SearchStrategy[Any] = struct_strategy(f.fields, version, flexible)
    else:
        elem = _scalar(f.element_type)
    value = st.lists(elem, max_size=2) if f.is_array else elem
    if f.nullable_in(version):
        value = st.none() | value
    return value


def struct_strategy(
    fields: Sequence[Field], version: int, flexible: bool
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {f.name: _value(f, version, flexible) for f in fields if f.present_in(version)}
    )


def body_strategy(api: Api, version: int, response: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = api.response_fields if response else api.request_fields
    return struct_strategy(fields, version, api.is_flexible(version))


def with_defaults(fields: Sequence[Field], version: int, body: dict[str, Any]) -> dict[str, Any]:
    """What decoding ``body`` must give: absent fields filled with defaults."""
    out: dict[str, Any] = {}
    for f in fields:
        if not f.present_in(version):
            out[f.name] = f.default_value()
            continue
        v = body[f.name]
        if f.is_struct and v is not None:
            if f.is_array:
                v = [with_defaults(f.fields, version, item) for item in v]
            else:
                v = with_defaults(f.fields, version, v)
        out[f.name] = v
    return out


def cases(apis: Sequence[Api]) -> list[tuple[Api, int, bool]]:
    return [(a, v, resp) for a in apis for v in a.versions for resp in (False, True)]


def case_id(case: object) -> str:
    if isinstance(case, Api):
        return case.name
    return str(case)


def random_body(
    rnd: Any, fields: Sequence[Field], version: int, flexible: bool, depth: int = 0
) -> dict[str, Any]:
    """A random valid body without Hypothesis (cheap enough to fuzz every version)."""
    body: dict[str, Any] = {}
    for f in fields:
        if not f.present_in(version):
            continue
        if f.nullable_in(version) and rnd.random() < 0.2:
            body[f.name] = None
            continue

        def one(f: Field = f) -> Any:
            if f.is_struct:
                return random_body(rnd, f.fields, version, flexible, depth + 1)
            t = f.element_type
            if t in _INTS:
                return rnd.randint(*_INTS[t])
            if t == "bool":
                return rnd.random() < 0.5
            if t == "float64":
                return rnd.uniform(-1e9, 1e9)
            if t == "string":
                return "".join(rnd.choice("abcé€") for _ in range(rnd.randint(0, 6)))
            if t in ("bytes", "records"):
                return rnd.randbytes(rnd.randint(0, 10))
            return uuid.UUID(int=rnd.getrandbits(128))

        body[f.name] = [one() for _ in range(rnd.randint(0, 3))] if f.is_array else one()
    return body


CASES = cases(m.ALL_APIS)
FAST = settings(
    max_examples=effort(10, 3), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _fields(api: Api, response: bool) -> tuple[Field, ...]:
    return api.response_fields if response else api.request_fields


def _encode(api: Api, version: int, body: dict[str, Any], response: bool) -> bytes:
    return (api.encode_response if response else api.encode_request)(version, body)


def _decode(api: Api, version: int, data: bytes, response: bool) -> dict[str, Any]:
    return (api.decode_response if response else api.decode_request)(version, data)


@pytest.mark.parametrize(("api", "version", "response"), CASES, ids=case_id)
def test_round_trip(api: Api, version: int, response: bool) -> None:
    @FAST
    @given(body_strategy(api, version, response))
    def check(body: dict[str, Any]) -> None:
        data = _encode(api, version, body, response)
        decoded = _decode(api, version, data, response)
        assert decoded == with_defaults(_fields(api, response), version, body)
        # Decoding is deterministic and re-encoding gives the same bytes.
        assert _encode(api, version, decoded, response) == data

    check()


@pytest.mark.parametrize(("api", "version", "response"), CASES, ids=case_id)
def test_fuzz_decoders(api: Api, version: int, response: bool) -> None:
    """Random, truncated and mutated input: only ProtocolError, and quickly."""

    rnd = random.Random(f"{api.name}-{version}-{response}")
    for _ in range(effort(5, 2)):
        body = random_body(rnd, _fields(api, response), version, api.is_flexible(version))
        data = _encode(api, version, body, response)
        assert _decode(api, version, data, response) == with_defaults(
            _fields(api, response), version, body
        )
        inputs = [data[:cut] for cut in range(len(data))]
        for _ in range(30):
            mutated = bytearray(data)
            for _ in range(rnd.randint(1, 4)):
                if mutated:
                    mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
            inputs.append(bytes(mutated))
        inputs.append(rnd.randbytes(rnd.randint(0, 64)))
        inputs.append(b"\x7f\xff\xff\xff" * 8)
        inputs.append(b"\xff" * 40)
        start = time.perf_counter()
        for item in inputs:
            with contextlib.suppress(ProtocolError):
                _decode(api, version, item, response)
        assert time.perf_counter() - start < 1.0


# -- wire layout ----------------------------------------------------------------------


def test_produce_v9_request_bytes() -> None:
    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 30000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b"abc"}]}],
    }
    assert m.PRODUCE.encode_request(9, body) == (
        b"\x00"  # transactional_id: compact null
        b"\xff\xff"  # acks -1
        b"\x00\x00\x75\x30"  # timeout 30000
        b"\x02"  # 1 topic
        b"\x02t"  # name
        b"\x02"  # 1 partition
        b"\x00\x00\x00\x00"  # index
        b"\x04abc"  # records, compact bytes
        b"\x00\x00\x00"  # tagged fields: partition, topic, body
    )


def test_produce_v3_request_bytes() -> None:
    body = {
        "acks": 1,
        "timeout_ms": 1000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 2, "records": b"ab"}]}],
    }
    assert m.PRODUCE.encode_request(3, body) == (
        b"\xff\xff"  # transactional_id defaults to null
        b"\x00\x01\x00\x00\x03\xe8"
        b"\x00\x00\x00\x01\x00\x01t"
        b"\x00\x00\x00\x01\x00\x00\x00\x02"
        b"\x00\x00\x00\x02ab"
    )


def test_records_blob_is_not_copied_before_the_final_join() -> None:
    blob = bytes(1 << 20)
    view = memoryview(blob)
    body = {
        "acks": 1,
        "timeout_ms": 1,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": view}]}],
    }
    parts: list[Any] = []
    m.PRODUCE.encode_request_into(9, body, parts)
    assert any(part is view for part in parts)
    decoded = m.PRODUCE.decode_request(9, b"".join(parts))
    assert decoded["topic_data"][0]["partition_data"][0]["records"] == blob


def test_missing_keys_and_absent_fields() -> None:
    # Missing keys encode as defaults; fields absent in a version are ignored on
    # encode and filled with defaults on decode.
    data = m.METADATA.encode_request(
        4, {"topics": None, "include_topic_authorized_operations": True}
    )
    assert data == b"\xff\xff\xff\xff\x01"
    assert m.METADATA.decode_request(4, data) == {
        "topics": None,
        "allow_auto_topic_creation": True,
        "include_cluster_authorized_operations": False,
        "include_topic_authorized_operations": False,
    }


def test_tagged_fields_default_omitted_and_non_default_written() -> None:
    body = {"error_code": 0, "api_keys": [], "throttle_time_ms": 0}
    assert m.API_VERSIONS.encode_response(3, body) == b"\x00\x00\x01\x00\x00\x00\x00\x00"
    body["finalized_features_epoch"] = 5
    data = m.API_VERSIONS.encode_response(3, body)
    assert data.endswith(b"\x01\x01\x08" + b"\x00" * 7 + b"\x05")
    assert m.API_VERSIONS.decode_response(3, data)["finalized_features_epoch"] == 5


def test_unknown_tagged_fields_are_skipped() -> None:
    base = m.ADD_OFFSETS_TO_TXN.encode_response(3, {"throttle_time_ms": 1, "error_code": 2})
    data = base[:-1] + encode_tagged_fields({7: b"future", 9: b""})
    assert m.ADD_OFFSETS_TO_TXN.decode_response(3, data) == {"throttle_time_ms": 1, "error_code": 2}


def test_tagged_struct_extended_by_newer_broker() -> None:
    # A tagged field longer than we know how to read: the extra bytes are skipped.
    body = {
        "responses": [
            {
                "name": "t",
                "partition_responses": [
                    {
                        "index": 0,
                        "error_code": 6,
                        "base_offset": -1,
                        "current_leader": {"leader_id": 3, "leader_epoch": 9},
                    }
                ],
            }
        ]
    }
    data = m.PRODUCE.encode_response(10, body)
    leader = b"\x00\x00\x00\x03\x00\x00\x00\x09\x00"
    assert leader in data
    i = data.index(leader)
    extended = (
        data[: i - 2]
        + b"\x00"
        + bytes([len(leader) + 3])
        + leader
        + b"abc"
        + data[i + len(leader) :]
    )
    decoded = m.PRODUCE.decode_response(10, extended)
    part = decoded["responses"][0]["partition_responses"][0]
    assert part["current_leader"] == {"leader_id": 3, "leader_epoch": 9}


def test_trailing_bytes() -> None:
    data = m.END_TXN.encode_response(1, {"error_code": 3}) + b"junk"
    assert m.END_TXN.decode_response(1, data)["error_code"] == 3
    with pytest.raises(ProtocolError, match="trailing"):
        m.END_TXN.decode_response(1, data, strict=True)
    req = m.END_TXN.encode_request(1, {"transactional_id": "x"}) + b"\x00"
    with pytest.raises(ProtocolError, match="trailing"):
        m.END_TXN.decode_request(1, req)


def test_decode_from_reader_and_memoryview() -> None:
    data = m.END_TXN.encode_response(1, {"error_code": 3})
    assert m.END_TXN.decode_response(1, memoryview(b"xx" + data)[2:])["error_code"] == 3
    r = Reader(b"xx" + data, 2)
    assert m.END_TXN.decode_response(1, r)["error_code"] == 3
    assert r.pos == r.end


def test_decoded_defaults_are_fresh() -> None:
    a = m.METADATA.decode_response(1, m.METADATA.encode_response(1, {}))
    a["topics"].append(1)
    b = m.METADATA.decode_response(1, m.METADATA.encode_response(1, {}))
    assert b["topics"] == []


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "version", "body"),
    [
        (m.PRODUCE, 9, {"topic_data": [{"name": None}]}),  # not nullable
        (m.PRODUCE, 3, {"acks": 70000}),  # out of range
        (m.PRODUCE, 3, {"acks": "1"}),  # wrong type
        (m.PRODUCE, 3, {"topic_data": None}),
        (m.METADATA, 10, {"topics": [{"topic_id": "not-a-uuid"}]}),
        (m.SASL_HANDSHAKE, 0, {"mechanism": "x" * 40000}),
    ],
)
def test_encode_errors(api: Api, version: int, body: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        api.encode_request(version, body)


def test_unsupported_versions() -> None:
    with pytest.raises(SchemaError, match="not supported"):
        m.PRODUCE.encode_request(2, {})
    with pytest.raises(SchemaError):
        m.PRODUCE.decode_response(13, b"")


def test_huge_nested_count_fails_fast() -> None:
    data = b"\x00\x00\x00\x00" + b"\x7f\xff\xff\xff" + b"\x00" * 16
    start = time.perf_counter()
    with pytest.raises(ProtocolError, match="exceeds"):
        m.METADATA.decode_response(3, data)
    with pytest.raises(ProtocolError):
        m.METADATA.decode_response(9, b"\x00\x00\x00\x00\xff\xff\xff\xff\x07" + b"\x00" * 8)
    assert time.perf_counter() - start < 0.1


# -- helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("ThrottleTimeMs", "throttle_time_ms"),
        ("TopicData", "topic_data"),
        ("ErrorCode", "error_code"),
        ("timeoutMs", "timeout_ms"),
        ("V3AndBelowTransactionalId", "v3_and_below_transactional_id"),
        ("IsrNodes", "isr_nodes"),
        ("Enable2Pc", "enable2_pc"),
    ],
)
def test_snake_case(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


def test_version_range() -> None:
    assert 5 in VersionRange.parse("3+")
    assert 2 not in VersionRange.parse("3+")
    assert 4 not in VersionRange.parse("0-3")
    assert 0 not in VersionRange.parse("none")
    assert 0 not in VersionRange.parse(None)
    assert str(VersionRange.parse("7")) == "7"


def test_uuid_fields() -> None:
    u = uuid.uuid4()
    body = {"topics": [{"topic_id": u, "name": None}]}
    assert m.METADATA.decode_request(12, m.METADATA.encode_request(12, body))["topics"] == [
        {"topic_id": u, "name": None}
    ]
