"""The test harness's KRaft cluster ids: base64url UUIDs the storage tool accepts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from grete.testing import cluster as harness


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8... encodes to "-...": kafka-storage would read it as an option and fail.
    drawn: Iterator[uuid.UUID] = iter(
        [uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)]
    )
    monkeypatch.setattr(harness.uuid, "uuid4", lambda: next(drawn))
    cluster_id = harness._new_cluster_id()
    assert cluster_id == "AQEBAQEBAQEBAQEBAQEBAQ"
    assert len(cluster_id) == 22 and "=" not in cluster_id


def test_cluster_ids_are_fresh() -> None:
    ids = {harness._new_cluster_id() for _ in range(200)}
    assert len(ids) == 200 and not any(i.startswith("-") for i in ids)
