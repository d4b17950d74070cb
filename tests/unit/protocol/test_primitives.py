"""Primitive types: known vectors, round trips and hostile input."""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grete.errors import ProtocolError
from grete.protocol import primitives as p
from grete.protocol.primitives import Reader

from .._effort import effort

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)


# -- known vectors ------------------------------------------------------------------


# Zigzag mapping from the protocol guide / protobuf docs.
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (-1, b"\x01"),
        (1, b"\x02"),
        (-2, b"\x03"),
        (63, b"\x7e"),
        (-64, b"\x7f"),
        (64, b"\x80\x01"),
        (150, b"\xac\x02"),  # zigzag(150) = 300 -> AC 02
        (2**31 - 1, b"\xfe\xff\xff\xff\x0f"),
        (-(2**31), b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_varint_vectors(value: int, encoded: bytes) -> None:
    assert p.encode_varint(value) == encoded
    assert Reader(encoded).read_varint() == value


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_unsigned_varint_vectors(value: int, encoded: bytes) -> None:
    assert p.encode_unsigned_varint(value) == encoded
    assert Reader(encoded).read_unsigned_varint() == value


def test_varlong_extremes() -> None:
    assert p.encode_varlong(-(2**63)) == b"\xff" * 9 + b"\x01"
    assert Reader(p.encode_varlong(2**63 - 1)).read_varlong() == 2**63 - 1


def test_string_vectors() -> None:
    assert p.encode_string("ab") == b"\x00\x02ab"
    assert p.encode_nullable_string(None) == b"\xff\xff"
    assert p.encode_compact_string("ab") == b"\x03ab"
    assert p.encode_compact_nullable_string(None) == b"\x00"
    assert p.encode_compact_bytes(b"") == b"\x01"
    assert p.encode_nullable_bytes(None) == b"\xff\xff\xff\xff"
    assert p.encode_compact_array_length(None) == b"\x00"
    assert p.encode_compact_array_length(2) == b"\x03"
    assert p.encode_array_length(None) == b"\xff\xff\xff\xff"


def test_memoryview_blobs() -> None:
    view = memoryview(b"xyz")[1:]
    assert p.encode_bytes(view) == b"\x00\x00\x00\x02yz"
    assert p.encode_compact_nullable_bytes(view) == b"\x03yz"


# -- round trips ----------------------------------------------------------------------

FIXED = [
    ("int8", st.integers(-128, 127)),
    ("int16", st.integers(-(2**15), 2**15 - 1)),
    ("int32", INT32),
    ("int64", INT64),
    ("uint16", st.integers(0, 2**16 - 1)),
    ("uint32", st.integers(0, 2**32 - 1)),
    ("varint", INT32),
    ("varlong", INT64),
    ("unsigned_varint", st.integers(0, 2**32 - 1)),
    ("bool", st.booleans()),
    ("float64", st.floats(allow_nan=False)),
    ("uuid", st.uuids()),
    ("string", st.text(max_size=50)),
    ("nullable_string", st.none() | st.text(max_size=50)),
    ("compact_string", st.text(max_size=50)),
    ("compact_nullable_string", st.none() | st.text(max_size=50)),
    ("bytes", st.binary(max_size=50)),
    ("nullable_bytes", st.none() | st.binary(max_size=50)),
    ("compact_bytes", st.binary(min_size=120, max_size=200)),
    ("compact_nullable_bytes", st.none() | st.binary(max_size=50)),
]


@pytest.mark.parametrize(("name", "strategy"), FIXED, ids=[n for n, _ in FIXED])
def test_round_trip(name: str, strategy: st.SearchStrategy[object]) -> None:
    encode = getattr(p, f"encode_{name}")
    read = getattr(Reader, f"read_{name}")

    @settings(max_examples=effort(40, 10), deadline=None)
    @given(strategy, st.binary(max_size=3))
    def check(value: object, trailer: bytes) -> None:
        data = encode(value)
        r = Reader(data + trailer)
        assert read(r) == value
        assert r.pos == len(data)
        # Any truncation must fail cleanly.
        for cut in range(len(data)):
            with pytest.raises(ProtocolError):
                read(Reader(data[:cut]))

    check()


@given(st.dictionaries(st.integers(0, 10_000), st.binary(max_size=20), max_size=5))
def test_tagged_fields_round_trip(fields: dict[int, bytes]) -> None:
    data = p.encode_tagged_fields(fields)
    r = Reader(data)
    assert r.read_tagged_fields() == fields
    assert r.remaining == 0
    r = Reader(data)
    r.skip_tagged_fields()
    assert r.remaining == 0


def test_reader_accepts_bytearray_and_memoryview() -> None:
    data = p.encode_int32(7) + p.encode_string("hé")
    for buf in (bytearray(data), memoryview(data), memoryview(b"zz" + data)[2:]):
        r = Reader(buf)
        assert r.read_int32() == 7
        assert r.read_string() == "hé"


def test_reader_window() -> None:
    r = Reader(b"\x00\x01\x02\x03", 1, 3)
    assert r.read_int16() == 0x0102
    with pytest.raises(ProtocolError):
        r.read_int8()
    with pytest.raises(ProtocolError):
        Reader(b"ab", 3)


# -- hostile input --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("read_string", b"\xff\xff"),  # null where not allowed
        ("read_string", b"\xff\xfe"),  # -2
        ("read_nullable_string", b"\x80\x00"),
        ("read_string", b"\x00\x05abc"),  # longer than the buffer
        ("read_compact_string", b"\x00"),  # compact null where not allowed
        ("read_compact_string", b"\x0aabc"),
        ("read_bytes", b"\xff\xff\xff\xff"),
        ("read_nullable_bytes", b"\xff\xff\xff\xfe"),
        ("read_nullable_bytes", b"\x7f\xff\xff\xff" + b"x" * 10),
        ("read_compact_bytes", b"\xff\xff\xff\xff\x07"),
        ("read_unsigned_varint", b"\x80\x80\x80\x80\x80\x01"),  # 6 bytes
        ("read_varint", b"\xff\xff\xff\xff\x7f"),  # > 32 bits
        ("read_varlong", b"\x80" * 10 + b"\x01"),  # 11 bytes
        ("read_varlong", b"\xff" * 9 + b"\x7f"),  # > 64 bits
        ("read_varint", b"\x80\x80"),  # truncated
        ("read_string", b"\x00\x02\xff\xfe"),  # invalid UTF-8
        ("read_tagged_fields", b"\x02\x01\x00\x01\x00"),  # tags not increasing
        ("read_tagged_fields", b"\xff\xff\xff\xff\x07"),  # absurd count
        ("read_tagged_fields", b"\x01\x00\x05ab"),  # payload beyond end
        ("read_uuid", b"\x00" * 15),
        ("read_float64", b"\x00" * 7),
    ],
)
def test_hostile_input(method: str, data: bytes) -> None:
    with pytest.raises(ProtocolError):
        getattr(Reader(data), method)()


def test_huge_array_length_fails_before_allocating() -> None:
    r = Reader(b"\x7f\xff\xff\xff" + b"\x00" * 10)
    with pytest.raises(ProtocolError, match="exceeds"):
        r.read_array_length(item_size=4)
    r = Reader(p.encode_unsigned_varint(2**31) + b"\x00" * 10)
    with pytest.raises(ProtocolError, match="exceeds"):
        r.read_compact_array_length()
    assert Reader(b"\xff\xff\xff\xff").read_array_length() == -1
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff\xff\xff").read_array_length(nullable=False)
    with pytest.raises(ProtocolError):
        Reader(b"\xff\xff\xff\xfe").read_array_length()


@given(st.binary(max_size=40))
def test_random_bytes_only_raise_protocol_error(data: bytes) -> None:
    for name in [n for n in dir(Reader) if n.startswith("read_") and n != "read_raw"]:
        if name == "read_tagged_field_header":
            continue
        with contextlib.suppress(ProtocolError):
            getattr(Reader(data), name)()


def test_encoders_reject_out_of_range() -> None:
    with pytest.raises(ValueError):
        p.encode_varint(2**31)
    with pytest.raises(ValueError):
        p.encode_varlong(-(2**63) - 1)
    with pytest.raises(ValueError):
        p.encode_unsigned_varint(-1)
    with pytest.raises(ValueError):
        p.encode_string("x" * 40000)
    with pytest.raises(struct.error):
        p.encode_int16(2**15)


def test_zero_uuid_is_shared() -> None:
    assert Reader(b"\x00" * 16).read_uuid() is p.ZERO_UUID
    u = uuid.uuid4()
    assert Reader(p.encode_uuid(u)).read_uuid() == u
