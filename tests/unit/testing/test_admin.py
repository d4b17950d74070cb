"""The readiness rules of the harness's topic waits (no broker needed)."""

from __future__ import annotations

from grete.testing.admin import _as_wanted, _topic_view


def test_a_topic_is_ready_only_with_every_partition_led() -> None:
    assert _as_wanted({0: 1, 1: 2, 2: 3}, 3, exists=True)
    assert _as_wanted({0: 1, 1: 2, 2: 3}, None, exists=True)
    assert not _as_wanted({0: 1, 1: -1, 2: 3}, 3, exists=True)
    assert not _as_wanted({0: 1}, 3, exists=True)
    assert not _as_wanted({}, None, exists=True)
    assert not _as_wanted(None, None, exists=True)


def test_a_deleted_topic_is_unknown() -> None:
    assert _as_wanted(None, None, exists=False)
    assert not _as_wanted({0: 1}, None, exists=False)


def test_topic_view_reads_one_topic_of_a_metadata_answer() -> None:
    body = {
        "topics": [
            {"name": "other", "error_code": 0, "partitions": []},
            {
                "name": "t",
                "error_code": 0,
                "partitions": [
                    {"partition_index": 0, "leader_id": 2},
                    {"partition_index": 1, "leader_id": -1},
                ],
            },
        ]
    }
    assert _topic_view(body, "t") == {0: 2, 1: -1}
    assert _topic_view(body, "missing") is None
    unknown = {"topics": [{"name": "t", "error_code": 3, "partitions": []}]}
    assert _topic_view(unknown, "t") is None
