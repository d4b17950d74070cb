"""The idempotent sync Producer survives a SIGKILLed partition leader mid-produce():
no error, nothing lost, nothing duplicated, order kept per partition."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.partitioners import hashing_partitioner, partition_id_for_key
from grete.producer import Producer

from ._brokers import restart_all
from ._consume import read_messages

pytest.importorskip("confluent_kafka")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_MESSAGES = int(os.environ.get("GRETE_FAULT_MESSAGES", "200000"))
NUM_PARTITIONS = 3
KILL_AFTER_S = 0.3
PRODUCE_BUDGET_S = 120.0
READ_BUDGET_S = 120.0
# The seed's default: waiting for a new leader after the kill (the harness
# fences a dead broker after broker.session.timeout.ms = 3 s) spends no
# attempts, so three retries are plenty; the delivery timeout bounds the wait.
MAX_RETRIES = int(os.environ.get("GRETE_FAULT_MAX_RETRIES", "3"))


def _messages() -> tuple[list[tuple[bytes, bytes]], dict[int, int]]:
    """Keyed messages whose value is ``partition:sequence`` (per-partition order)."""
    keys = [f"key-{i}".encode() for i in range(40)]
    where = {k: partition_id_for_key(k, NUM_PARTITIONS) for k in keys}
    assert len(set(where.values())) == NUM_PARTITIONS
    counters: dict[int, int] = defaultdict(int)
    out: list[tuple[bytes, bytes]] = []
    for i in range(NUM_MESSAGES):
        key = keys[i % len(keys)]
        p = where[key]
        out.append((key, f"{p}:{counters[p]}".encode()))
        counters[p] += 1
    return out, dict(counters)


def _read_all(kafka_cluster: Any, topic: str, expected: int) -> dict[int, list[bytes]]:
    """The values per partition, from offset 0, until ``expected`` arrived and 2 s
    more (to catch duplicates past the end); bounded by READ_BUDGET_S."""
    values: dict[int, list[bytes]] = defaultdict(list)
    for msg in read_messages(
        kafka_cluster, topic, NUM_PARTITIONS, expected,
        settle_s=2.0, timeout_s=READ_BUDGET_S, group_prefix="grete-faults",
        config={"isolation.level": "read_committed"},
    ):
        values[msg.partition()].append(msg.value())
    return values


def test_leader_sigkill_during_idempotent_produce(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    if not hasattr(kafka_cluster, "brokers") or not hasattr(kafka_cluster, "wait_for_brokers"):
        pytest.skip("needs the harness's own brokers")
    assert all(b.is_running for b in kafka_cluster.brokers)
    name = topic_factory(partitions=NUM_PARTITIONS, replication_factor=3)
    messages, per_partition = _messages()

    client = KafkaClient(kafka_cluster.bootstrap_servers)
    victim: Any = None
    try:
        topic = client.topics[name]
        leader = topic.partitions[0].leader
        assert leader is not None
        victim = kafka_cluster.broker(leader.id)
        producer = Producer(
            client.cluster, topic, partitioner=hashing_partitioner, required_acks=-1,
            max_retries=MAX_RETRIES,
        )
        assert producer._engine.idempotent

        started = threading.Event()
        killed_at: list[float] = []

        def kill() -> None:
            if started.wait(10.0):
                time.sleep(KILL_AFTER_S)
                victim.kill()
                killed_at.append(time.monotonic())

        killer = threading.Thread(target=kill, name="killer", daemon=True)
        killer.start()
        t0 = time.monotonic()
        started.set()
        results = producer.produce(messages)
        elapsed = time.monotonic() - t0
        killer.join(15.0)
        assert killed_at, "the leader was never killed"
        # The kill must have happened while produce() was still at work.
        assert killed_at[0] < t0 + elapsed, f"produce() finished in {elapsed:.2f}s, before the kill"
        assert elapsed < PRODUCE_BUDGET_S
        assert len(results) == len(messages)
        assert producer._engine.idle

        values = _read_all(kafka_cluster, name, len(messages))
        for p in range(NUM_PARTITIONS):
            got = values.get(p, [])
            want = [f"{p}:{i}".encode() for i in range(per_partition[p])]
            if got != want:
                dupes = len(got) - len(set(got))
                missing = len(set(want) - set(got))
                first_bad = next(
                    (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), None
                )
                pytest.fail(
                    f"partition {p}: read {len(got)}, want {len(want)}; {dupes} duplicate(s), "
                    f"{missing} missing, first difference at {first_bad}"
                )
        # Reported offsets agree with the log.
        for r, (_key, value) in zip(results[:1000], messages[:1000], strict=True):
            assert values[r.partition][r.offset] == value
    finally:
        client.close()
        if victim is not None:
            restart_all(kafka_cluster)
    assert all(b.is_running for b in kafka_cluster.brokers)
