"""A small declarative schema engine for Kafka message bodies.

Messages are declared as trees of :class:`Field` mirroring Kafka's JSON message
specs (``clients/src/main/resources/common/message/*.json``), with the JSON's
CamelCase names turned into snake_case dict keys.  An :class:`Api` compiles
its request and response trees once per version into flat lists of closures;
runs of consecutive fixed-width fields collapse into one precompiled
``struct.Struct`` so that, e.g., a Produce partition response is one
``unpack_from`` call.

Encoding appends parts to a list and joins once, so a large ``records`` blob
is copied exactly once, into the final frame (``Api.encode_request_into`` lets
framing put the header and size prefix into the same join).

Decoding conventions:

* fields that do not exist in a version are not read, and the decoded dict
  holds their default (likewise tagged fields that were not sent);
* unknown tagged fields are skipped (that is what they are for);
* trailing bytes after a response body are ignored: newer brokers may append
  data older clients are meant to skip, and the frame length already bounds
  the body.  ``decode_request`` is strict by default (a fake broker decoding
  our own requests should notice any mismatch); both take ``strict=``.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grete.errors import KafkaError, ProtocolError
from grete.protocol.primitives import (
    INT16,
    INT32,
    ZERO_UUID,
    Buffer,
    Reader,
    encode_unsigned_varint,
)

__all__ = ["Api", "Field", "SchemaError", "VersionRange", "snake_case"]


class SchemaError(KafkaError, ValueError):
    """A body that does not fit the schema (on encode), an unsupported version,
    or a malformed schema definition: always a programming error, never the
    network's fault."""


Parts = list[Buffer]
Encoder = Callable[[Any, Parts], None]
Decoder = Callable[[Reader], Any]


# -- names and version ranges -------------------------------------------------------

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """Kafka JSON field name to dict key: ``ThrottleTimeMs`` -> ``throttle_time_ms``."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


@dataclass(frozen=True)
class VersionRange:
    """Kafka's version-range syntax: ``"3+"``, ``"0-4"``, ``"7"`` or ``"none"``."""

    low: int
    high: int | None  # None: open-ended

    @classmethod
    def parse(cls, spec: str | None) -> VersionRange:
        if spec is None or spec == "none":
            return _NO_VERSIONS
        spec = spec.strip()
        if spec.endswith("+"):
            return cls(int(spec[:-1]), None)
        if "-" in spec:
            low, high = spec.split("-", 1)
            return cls(int(low), int(high))
        return cls(int(spec), int(spec))

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, int):
            return False
        return self.low <= version and (self.high is None or version <= self.high)

    @property
    def empty(self) -> bool:
        return self.high is not None and self.high < self.low

    def __str__(self) -> str:
        if self.empty:
            return "none"
        if self.high is None:
            return f"{self.low}+"
        return f"{self.low}" if self.low == self.high else f"{self.low}-{self.high}"


_NO_VERSIONS = VersionRange(0, -1)


# -- field declarations -------------------------------------------------------------

_NO_DEFAULT: Any = object()

# struct format characters of the fixed-width scalar types
_FIXED: dict[str, str] = {
    "int8": "b",
    "int16": "h",
    "int32": "i",
    "int64": "q",
    "uint16": "H",
    "uint32": "I",
    "float64": "d",
    "bool": "?",
}
_SCALAR_TYPES = frozenset({*_FIXED, "string", "bytes", "records", "uuid"})


@dataclass(frozen=True)
class Field:
    """One field of a message, as in Kafka's JSON spec (names in snake_case).

    ``type`` is a scalar type name, ``[]<type>`` for arrays, or a struct name
    (``[]<StructName>`` / ``<StructName>``) in which case ``fields`` holds the
    struct's fields.
    """

    name: str
    type: str
    versions: str = "0+"
    nullable_versions: str | None = None
    tag: int | None = None
    tagged_versions: str | None = None
    default: Any = _NO_DEFAULT
    fields: Sequence[Field] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if (self.tag is None) != (self.tagged_versions is None):
            raise SchemaError(f"field {self.name}: tag and tagged_versions go together")
        if self.is_struct and not self.fields:
            raise SchemaError(f"field {self.name}: unknown type {self.type!r} without fields")

    @property
    def element_type(self) -> str:
        return self.type[2:] if self.type.startswith("[]") else self.type

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def is_struct(self) -> bool:
        return self.element_type not in _SCALAR_TYPES

    def present_in(self, version: int) -> bool:
        return version in VersionRange.parse(self.versions)

    def nullable_in(self, version: int) -> bool:
        return version in VersionRange.parse(self.nullable_versions)

    def tagged_in(self, version: int) -> bool:
        return version in VersionRange.parse(self.tagged_versions)

    def default_value(self) -> Any:
        """A fresh default value (Kafka's rules: 0, false, "", empty array, ...)."""
        if self.default is not _NO_DEFAULT:
            return self.default
        if self.is_array:
            return []
        if self.is_struct:
            return {f.name: f.default_value() for f in self.fields}
        t = self.type
        if t in _FIXED:
            return False if t == "bool" else 0.0 if t == "float64" else 0
        if t == "string":
            return ""
        if t == "bytes":
            return b""
        if t == "records":
            return None
        return ZERO_UUID  # uuid


# -- compiled codecs ----------------------------------------------------------------


def _blob_len(value: Buffer) -> int:
    return value.nbytes if isinstance(value, memoryview) else len(value)


def _scalar_codec(type_: str, nullable: bool, flexible: bool, what: str) -> tuple[Encoder, Decoder]:
    """Encoder/decoder for one value of a non-fixed-width scalar type."""
    if type_ == "string":
        if flexible:

            def enc_cstr(v: str | None, parts: Parts) -> None:
                if v is None:
                    if not nullable:
                        raise SchemaError(f"{what} is not nullable")
                    parts.append(b"\x00")
                    return
                data = v.encode()
                parts.append(encode_unsigned_varint(len(data) + 1) + data)

            return enc_cstr, (
                Reader.read_compact_nullable_string if nullable else Reader.read_compact_string
            )

        def enc_str(v: str | None, parts: Parts) -> None:
            if v is None:
                if not nullable:
                    raise SchemaError(f"{what} is not nullable")
                parts.append(b"\xff\xff")
                return
            data = v.encode()
            parts.append(INT16.pack(len(data)) + data)

        return enc_str, (Reader.read_nullable_string if nullable else Reader.read_string)

    if type_ in ("bytes", "records"):
        # Length and payload are separate parts: the payload (a record batch of up
        # to a megabyte or more) is copied once, by the final join.
        if flexible:

            def enc_cbytes(v: Buffer | None, parts: Parts) -> None:
                if v is None:
                    if not nullable:
                        raise SchemaError(f"{what} is not nullable")
                    parts.append(b"\x00")
                    return
                parts.append(encode_unsigned_varint(_blob_len(v) + 1))
                parts.append(v)

            return enc_cbytes, (
                Reader.read_compact_nullable_bytes if nullable else Reader.read_compact_bytes
            )

        def enc_bytes(v: Buffer | None, parts: Parts) -> None:
            if v is None:
                if not nullable:
                    raise SchemaError(f"{what} is not nullable")
                parts.append(b"\xff\xff\xff\xff")
                return
            parts.append(INT32.pack(_blob_len(v)))
            parts.append(v)

        return enc_bytes, (Reader.read_nullable_bytes if nullable else Reader.read_bytes)

    if type_ == "uuid":

        def enc_uuid(v: uuid.UUID, parts: Parts) -> None:
            parts.append(v.bytes)

        return enc_uuid, Reader.read_uuid

    if type_ in _FIXED:
        st = struct.Struct(">" + _FIXED[type_])
        size = st.size
        pack = st.pack
        unpack_from = st.unpack_from

        def enc_fixed(v: Any, parts: Parts) -> None:
            parts.append(pack(v))

        def dec_fixed(r: Reader) -> Any:
            return unpack_from(r.buf, r.need(size))[0]

        return enc_fixed, dec_fixed

    raise SchemaError(f"{what}: unknown type {type_!r}")


class _StructCodec:
    """A struct's fields compiled for one version: lists of encode/decode ops."""

    def __init__(self, fields: Iterable[Field], version: int, flexible: bool, what: str) -> None:
        self.version = version
        self.flexible = flexible
        present = [f for f in fields if f.present_in(version)]
        absent = [f for f in fields if not f.present_in(version)]
        tagged = [f for f in present if flexible and f.tagged_in(version)]
        regular = [f for f in present if not (flexible and f.tagged_in(version))]

        self.enc_ops: list[Callable[[Mapping[str, Any], Parts], None]] = []
        self.dec_ops: list[Callable[[Reader, dict[str, Any]], None]] = []
        self.min_size = 1 if flexible else 0
        # Fields filled with defaults on decode: absent in this version, or tagged.
        # Immutable defaults are shared; arrays and structs get a fresh copy each time.
        self._static_defaults = {
            f.name: f.default_value() for f in (*absent, *tagged) if not _is_mutable(f)
        }
        self._fresh_defaults = [
            (f.name, _default_factory(f)) for f in (*absent, *tagged) if _is_mutable(f)
        ]

        run: list[Field] = []
        for f in regular:
            if f.type in _FIXED:
                run.append(f)
                continue
            self._flush_run(run)
            run = []
            self._add_field(f, version, flexible, what)
        self._flush_run(run)

        self._tagged_enc: list[tuple[int, str, Any, Encoder]] = []
        self._tagged_dec: dict[int, tuple[str, Decoder]] = {}
        for f in sorted(tagged, key=lambda f: f.tag or 0):
            assert f.tag is not None
            if f.tag in self._tagged_dec:
                raise SchemaError(f"{what}.{f.name}: duplicate tag {f.tag}")
            enc, dec = _value_codec(f, version, flexible, f"{what}.{f.name}")
            self._tagged_enc.append((f.tag, f.name, f.default_value(), enc))
            self._tagged_dec[f.tag] = (f.name, dec)

    def _flush_run(self, run: list[Field]) -> None:
        """Consecutive fixed-width fields become one Struct pack/unpack."""
        if not run:
            return
        st = struct.Struct(">" + "".join(_FIXED[f.type] for f in run))
        names = tuple(f.name for f in run)
        pairs = tuple((f.name, f.default_value()) for f in run)
        size = st.size
        self.min_size += size
        pack = st.pack
        unpack_from = st.unpack_from

        if len(run) == 1:
            name, dflt = pairs[0]

            def enc_one(value: Mapping[str, Any], parts: Parts) -> None:
                parts.append(pack(value.get(name, dflt)))

            def dec_one(r: Reader, d: dict[str, Any]) -> None:
                d[name] = unpack_from(r.buf, r.need(size))[0]

            self.enc_ops.append(enc_one)
            self.dec_ops.append(dec_one)
            return

        def enc_run(value: Mapping[str, Any], parts: Parts) -> None:
            get = value.get
            parts.append(pack(*[get(n, dv) for n, dv in pairs]))

        def dec_run(r: Reader, d: dict[str, Any]) -> None:
            d.update(zip(names, unpack_from(r.buf, r.need(size)), strict=False))

        self.enc_ops.append(enc_run)
        self.dec_ops.append(dec_run)

    def _add_field(self, f: Field, version: int, flexible: bool, what: str) -> None:
        enc, dec = _value_codec(f, version, flexible, f"{what}.{f.name}")
        name = f.name
        dflt = f.default_value()
        self.min_size += 1 if flexible else _fixed_prefix(f)

        def enc_field(value: Mapping[str, Any], parts: Parts) -> None:
            enc(value.get(name, dflt), parts)

        def dec_field(r: Reader, d: dict[str, Any]) -> None:
            d[name] = dec(r)

        self.enc_ops.append(enc_field)
        self.dec_ops.append(dec_field)

    def encode(self, value: Mapping[str, Any], parts: Parts) -> None:
        for op in self.enc_ops:
            op(value, parts)
        if not self.flexible:
            return
        if not self._tagged_enc:
            parts.append(b"\x00")
            return
        sections: list[tuple[int, bytes]] = []
        for tag, name, dflt, enc in self._tagged_enc:
            v = value.get(name, dflt)
            # Kafka omits tagged fields that hold their default value.
            if v == dflt:
                continue
            sub: Parts = []
            enc(v, sub)
            sections.append((tag, b"".join(sub)))
        parts.append(encode_unsigned_varint(len(sections)))
        for tag, payload in sections:
            parts.append(encode_unsigned_varint(tag))
            parts.append(encode_unsigned_varint(len(payload)))
            parts.append(payload)

    def decode(self, r: Reader) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for op in self.dec_ops:
            op(r, d)
        if self._static_defaults:
            d.update(self._static_defaults)
        for name, make in self._fresh_defaults:
            d[name] = make()
        if self.flexible:
            pos = r.pos
            if pos < r.end and r.buf[pos] == 0:
                r.pos = pos + 1  # the usual empty tagged-field section
            else:
                self._decode_tagged(r, d)
        return d

    def _decode_tagged(self, r: Reader, d: dict[str, Any]) -> None:
        count = r.read_unsigned_varint()
        if not count:
            return
        if 2 * count > r.end - r.pos:
            raise ProtocolError(f"{count} tagged fields cannot fit in {r.end - r.pos} bytes")
        tag = -1
        known = self._tagged_dec
        for _ in range(count):
            tag, size = r.read_tagged_field_header(tag)
            start = r.pos
            r.pos = start + size
            entry = known.get(tag)
            if entry is not None:
                # Decode inside the declared size; bytes it does not use are skipped
                # (a newer broker may extend a tagged struct).
                d[entry[0]] = entry[1](Reader(r.buf, start, start + size))


def _copy_default(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_default(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_default(v) for v in value]
    return value


def _default_factory(f: Field) -> Callable[[], Any]:
    """Fresh copies of a mutable default without re-deriving it every time."""
    template = f.default_value()
    if isinstance(template, list) and not template:
        return list
    return lambda: _copy_default(template)


def _is_mutable(f: Field) -> bool:
    return f.is_array or f.is_struct


def _fixed_prefix(f: Field) -> int:
    if f.is_array or f.type == "bytes" or f.type == "records":
        return 4
    if f.type == "string":
        return 2
    if f.type == "uuid":
        return 16
    return 0  # a struct: its own min size is accounted for by its decoder's checks


def _value_codec(f: Field, version: int, flexible: bool, what: str) -> tuple[Encoder, Decoder]:
    """Encoder/decoder for the whole value of field ``f`` (array, struct or scalar)."""
    nullable = f.nullable_in(version)
    if not f.is_array:
        if f.is_struct:
            if nullable:
                raise SchemaError(f"{what}: nullable structs are not supported")
            sub = _StructCodec(f.fields, version, flexible, what)
            return sub.encode, sub.decode
        return _scalar_codec(f.type, nullable, flexible, what)

    # item_size: the smallest encoding of one element, so that an absurd count is
    # rejected before a list is built.
    elem = f.element_type
    code = _FIXED.get(elem, "")
    width = struct.calcsize(">" + code) if code else 0
    elem_enc: Encoder
    elem_dec: Decoder
    if f.is_struct:
        sub = _StructCodec(f.fields, version, flexible, what)
        elem_enc, elem_dec = sub.encode, sub.decode
        item_size = sub.min_size
    else:
        # (unused for fixed-width elements, which take the repeat-count fast path)
        elem_enc, elem_dec = _scalar_codec(elem, False, flexible, what + "[]")
        if code:
            item_size = width
        elif elem == "uuid":
            item_size = 16
        else:
            item_size = 1 if flexible else (2 if elem == "string" else 4)
    item_size = max(item_size, 1)

    null_marker = b"\x00" if flexible else b"\xff\xff\xff\xff"

    def enc_len(n: int) -> bytes:
        return encode_unsigned_varint(n + 1) if flexible else INT32.pack(n)

    def enc_array(v: Sequence[Any] | None, parts: Parts) -> None:
        if v is None:
            if not nullable:
                raise SchemaError(f"{what} is not nullable")
            parts.append(null_marker)
            return
        n = len(v)
        if code:
            # Arrays of numbers: one pack call with a repeat count.
            parts.append(enc_len(n) + struct.pack(f">{n}{code}", *v))
            return
        parts.append(enc_len(n))
        for item in v:
            elem_enc(item, parts)

    read_len = Reader.read_compact_array_length if flexible else Reader.read_array_length

    def dec_array(r: Reader) -> list[Any] | None:
        n = read_len(r, nullable, item_size)
        if n < 0:
            return None
        if code:
            return list(struct.unpack_from(f">{n}{code}", r.buf, r.need(n * width)))
        return [elem_dec(r) for _ in range(n)]

    return enc_array, dec_array


# -- APIs -----------------------------------------------------------------------------

_DECODE_BUGS = (IndexError, struct.error, ValueError, OverflowError, TypeError)
_ENCODE_BUGS = (struct.error, TypeError, AttributeError, ValueError, OverflowError)


class Api:
    """One Kafka API: its key, supported versions and request/response schemas."""

    def __init__(
        self,
        key: int,
        name: str,
        request_fields: Sequence[Field],
        response_fields: Sequence[Field],
        valid_versions: str,
        flexible_from: int | None,
    ) -> None:
        rng = VersionRange.parse(valid_versions)
        if rng.high is None or rng.empty:
            raise SchemaError(
                f"{name}: valid_versions must be a closed range, not {valid_versions}"
            )
        self.key = key
        self.name = name
        self.request_fields: tuple[Field, ...] = tuple(request_fields)
        self.response_fields: tuple[Field, ...] = tuple(response_fields)
        self.min_version = rng.low
        self.max_version: int = rng.high
        self.flexible_from = flexible_from
        self._requests: dict[int, _StructCodec] = {}
        self._responses: dict[int, _StructCodec] = {}

    def __repr__(self) -> str:
        return f"<Api {self.name} key={self.key} v{self.min_version}-{self.max_version}>"

    @property
    def versions(self) -> range:
        return range(self.min_version, self.max_version + 1)

    def is_flexible(self, version: int) -> bool:
        return self.flexible_from is not None and version >= self.flexible_from

    def _codec(self, version: int, response: bool) -> _StructCodec:
        cache = self._responses if response else self._requests
        codec = cache.get(version)
        if codec is None:
            if not self.min_version <= version <= self.max_version:
                raise SchemaError(
                    f"{self.name} v{version} is not supported "
                    f"(supported: v{self.min_version}-v{self.max_version})"
                )
            fields = self.response_fields if response else self.request_fields
            kind = "Response" if response else "Request"
            codec = _StructCodec(fields, version, self.is_flexible(version), self.name + kind)
            cache[version] = codec
        return codec

    def compile_all(self) -> None:
        """Compile every version now (import-time cost instead of first-use cost)."""
        for v in self.versions:
            self._codec(v, False)
            self._codec(v, True)

    # encoding

    def _encode_into(self, version: int, body: Mapping[str, Any], parts: Parts, resp: bool) -> None:
        codec = self._codec(version, resp)
        try:
            codec.encode(body, parts)
        except SchemaError:
            raise
        except _ENCODE_BUGS as exc:
            kind = "response" if resp else "request"
            raise SchemaError(f"cannot encode {self.name} v{version} {kind}: {exc}") from exc

    def encode_request_into(self, version: int, body: Mapping[str, Any], parts: Parts) -> None:
        """Append the request body's encoded parts to ``parts`` (for framing)."""
        self._encode_into(version, body, parts, False)

    def encode_response_into(self, version: int, body: Mapping[str, Any], parts: Parts) -> None:
        self._encode_into(version, body, parts, True)

    def encode_request(self, version: int, body: Mapping[str, Any]) -> bytes:
        parts: Parts = []
        self._encode_into(version, body, parts, False)
        return b"".join(parts)

    def encode_response(self, version: int, body: Mapping[str, Any]) -> bytes:
        parts: Parts = []
        self._encode_into(version, body, parts, True)
        return b"".join(parts)

    # decoding

    def _decode(
        self, version: int, data: Buffer | Reader, resp: bool, strict: bool
    ) -> dict[str, Any]:
        codec = self._codec(version, resp)
        r = data if isinstance(data, Reader) else Reader(data)
        try:
            body = codec.decode(r)
        except ProtocolError:
            raise
        except _DECODE_BUGS as exc:  # defensive: the Reader should have caught it
            raise ProtocolError(f"malformed {self.name} v{version}: {exc!r}") from None
        if strict and r.pos != r.end:
            kind = "response" if resp else "request"
            raise ProtocolError(
                f"{r.end - r.pos} unexpected trailing bytes after {self.name} v{version} {kind}"
            )
        return body

    def decode_request(
        self, version: int, data: Buffer | Reader, *, strict: bool = True
    ) -> dict[str, Any]:
        return self._decode(version, data, False, strict)

    def decode_response(
        self, version: int, data: Buffer | Reader, *, strict: bool = False
    ) -> dict[str, Any]:
        return self._decode(version, data, True, strict)
