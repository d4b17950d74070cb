"""Version negotiation."""

from __future__ import annotations

import pytest

from grete.errors import KafkaError
from grete.protocol import messages as m
from grete.protocol.versions import NoCompatibleVersionError, parse_api_versions, pick_version


def test_pick_highest_common() -> None:
    assert pick_version(m.PRODUCE, {0: (0, 11)}) == 11
    assert pick_version(m.PRODUCE, {0: (0, 99)}) == m.PRODUCE.max_version
    assert pick_version(m.PRODUCE, {0: (0, 99)}, cap=9) == 9
    assert pick_version(m.METADATA, {3: (5, 5)}) == 5


@pytest.mark.parametrize(
    ("brokers", "cap"),
    [({}, None), ({0: (0, 2)}, None), ({0: (13, 14)}, None), ({0: (0, 12)}, 2)],
)
def test_no_common_version(brokers: dict[int, tuple[int, int]], cap: int | None) -> None:
    with pytest.raises(NoCompatibleVersionError) as info:
        pick_version(m.PRODUCE, brokers, cap=cap)
    assert isinstance(info.value, KafkaError)
    assert "Produce" in str(info.value) and "v3-v12" in str(info.value)
    assert info.value.broker_range == brokers.get(0)


def test_parse_api_versions_response() -> None:
    body = {
        "error_code": 0,
        "api_keys": [
            {"api_key": 0, "min_version": 0, "max_version": 12},
            {"api_key": 3, "min_version": 0, "max_version": 13},
            {"api_key": 99, "min_version": 2, "max_version": 1},
        ],
    }
    data = m.API_VERSIONS.encode_response(3, body)
    ranges = parse_api_versions(m.API_VERSIONS.decode_response(3, data))
    assert ranges == {0: (0, 12), 3: (0, 13)}
    assert pick_version(m.METADATA, ranges) == 13
