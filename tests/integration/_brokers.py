"""Broker fault-injection helpers shared by the integration fault tests."""

from __future__ import annotations

from typing import Any

BROKER_START_TIMEOUT_S = 90.0


def restart_all(kafka_cluster: Any) -> None:
    """Start every broker that is not running (a running one is left alone), then
    wait until the metadata lists all brokers again."""
    all_ids = {b.node_id for b in kafka_cluster.brokers}
    for b in kafka_cluster.brokers:
        if not b.is_running:
            b.start(timeout=BROKER_START_TIMEOUT_S)
    kafka_cluster.wait_for_brokers(all_ids, timeout=BROKER_START_TIMEOUT_S)
