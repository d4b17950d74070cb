"""A hand-written encoder for Produce request bodies (v3-v12).

The generic schema codec walks field descriptions per request; a producer
sends thousands of Produce requests a second, and profiling showed that walk
costing about a seventh of the whole produce path. This encoder writes the
same bytes directly (``tests/unit/protocol/test_produce_fast.py`` checks it
against the generic codec for every version), and the records blobs are
appended as they are, never copied.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from grete.protocol.primitives import (
    Buffer,
    encode_compact_nullable_string,
    encode_compact_string,
    encode_nullable_string,
    encode_string,
    encode_unsigned_varint,
)

_ACKS_TIMEOUT = struct.Struct(">hi")
_INT32 = struct.Struct(">i")
_FIRST_FLEXIBLE = 9
MIN_VERSION, MAX_VERSION = 3, 12


def encode_produce_into(version: int, body: Mapping[str, Any], parts: list[Buffer]) -> None:
    """Append the Produce request body of ``version`` (3-12) to ``parts``."""
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ValueError(f"Produce v{version} is not handled here")
    flexible = version >= _FIRST_FLEXIBLE
    append = parts.append
    topics = body["topic_data"]
    txn = body.get("transactional_id")
    if flexible:
        append(encode_compact_nullable_string(txn))
        append(_ACKS_TIMEOUT.pack(body["acks"], body["timeout_ms"]))
        append(encode_unsigned_varint(len(topics) + 1))
        for topic in topics:
            partitions = topic["partition_data"]
            append(encode_compact_string(topic["name"]))
            append(encode_unsigned_varint(len(partitions) + 1))
            for p in partitions:
                records = p["records"]
                if records is None:
                    append(_INT32.pack(p["index"]) + b"\x00\x00")
                    continue
                append(_INT32.pack(p["index"]) + encode_unsigned_varint(len(records) + 1))
                append(records)
                append(b"\x00")  # partition tagged fields
            append(b"\x00")  # topic tagged fields
        append(b"\x00")  # body tagged fields
    else:
        append(encode_nullable_string(txn))
        append(_ACKS_TIMEOUT.pack(body["acks"], body["timeout_ms"]))
        append(_INT32.pack(len(topics)))
        for topic in topics:
            partitions = topic["partition_data"]
            append(encode_string(topic["name"]))
            append(_INT32.pack(len(partitions)))
            for p in partitions:
                records = p["records"]
                if records is None:
                    append(_INT32.pack(p["index"]) + b"\xff\xff\xff\xff")
                    continue
                append(_INT32.pack(p["index"]) + _INT32.pack(len(records)))
                append(records)
