"""The hand-written Produce encoder writes exactly what the generic codec writes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from grete.protocol import messages as m
from grete.protocol.primitives import Buffer
from grete.protocol.produce_fast import MAX_VERSION, MIN_VERSION, encode_produce_into

from .._effort import effort

names = st.text(min_size=1, max_size=20)
records = st.one_of(st.none(), st.binary(max_size=300))
partition = st.fixed_dictionaries({"index": st.integers(0, 2**31 - 1), "records": records})
topic = st.fixed_dictionaries({"name": names, "partition_data": st.lists(partition, max_size=4)})
bodies = st.fixed_dictionaries(
    {
        "transactional_id": st.one_of(st.none(), names),
        "acks": st.sampled_from([-1, 0, 1]),
        "timeout_ms": st.integers(0, 2**31 - 1),
        "topic_data": st.lists(topic, max_size=3),
    }
)


def _fast(version: int, body: dict[str, Any]) -> bytes:
    parts: list[Buffer] = []
    encode_produce_into(version, body, parts)
    return b"".join(parts)


@settings(max_examples=effort(60, 15), deadline=None)
@given(body=bodies, version=st.integers(MIN_VERSION, MAX_VERSION))
def test_same_bytes_as_the_schema(body: dict[str, Any], version: int) -> None:
    assert _fast(version, body) == m.PRODUCE.encode_request(version, body)


def test_decodes_back() -> None:
    body = {
        "transactional_id": None,
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [{"name": "t", "partition_data": [{"index": 2, "records": b"abc"}]}],
    }
    for version in range(MIN_VERSION, MAX_VERSION + 1):
        back = m.PRODUCE.decode_request(version, _fast(version, body))
        assert back["topic_data"][0]["partition_data"][0]["records"] == b"abc"
        assert back["acks"] == -1 and back["timeout_ms"] == 5000
