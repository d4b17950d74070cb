"""Broker fault-injection helpers shared by the integration fault tests."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
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


def resume_all(kafka_cluster: Any) -> None:
    """SIGCONT every running broker (harmless on one that was not stopped)."""
    for b in kafka_cluster.brokers:
        pid = b.pid
        if pid is not None:
            # One that died meanwhile is started by restart_all.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def heal(kafka_cluster: Any, topics: Mapping[str, int] | None = None) -> None:
    """Leave the cluster healthy for the next test: every broker resumed and
    running, listed by the metadata, and every partition of ``topics``
    (name -> partition count) led again, as every broker sees it."""
    resume_all(kafka_cluster)
    restart_all(kafka_cluster)
    for name, partitions in (topics or {}).items():
        kafka_cluster.wait_for_topic(name, partitions, timeout=BROKER_START_TIMEOUT_S)
