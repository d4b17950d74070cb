"""Ctrl-C in the middle of a synchronous produce(): the call raises, and the
same producer's next call runs promptly and writes its messages exactly once
(read back with confluent-kafka). Before the fix, an interrupt landing while
a request was being framed or written left it counted in flight for ever, and
the next produce() hung."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.connection import BrokerConnection
from grete.producer import Producer

from ._consume import read_messages

pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration

FIRST = 5_000
SECOND = 5_000
CALL_BUDGET_S = 60.0


@pytest.mark.parametrize("where", ["send", "on_writable", "on_readable"])
@pytest.mark.parametrize("acks", [1, -1])
def test_produce_after_an_interrupted_produce(
    kafka_cluster: Any, topic_factory: Any, monkeypatch: pytest.MonkeyPatch, where: str, acks: int
) -> None:
    name = topic_factory(partitions=3, replication_factor=3)
    original = getattr(BrokerConnection, where)
    calls = itertools.count(1)
    armed = [False]

    def interrupted(self: BrokerConnection, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if armed[0] and next(calls) == 2:  # the second request: the first one is on its way
            armed[0] = False
            raise KeyboardInterrupt  # after the work: a frame handed over or written
        return result

    monkeypatch.setattr(BrokerConnection, where, interrupted)
    with KafkaClient(kafka_cluster.bootstrap_servers) as client:
        producer = Producer(client.cluster, client.topics[name], required_acks=acks)
        armed[0] = True
        with pytest.raises(KeyboardInterrupt):
            producer.produce([b"first-%d" % i for i in range(FIRST)])
        assert not armed[0]
        assert producer._engine.idle

        outcome: list[Any] = []

        def second() -> None:
            try:
                outcome.append(producer.produce([b"second-%d" % i for i in range(SECOND)]))
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=second, name="second-produce", daemon=True)
        t.start()
        t.join(CALL_BUDGET_S)
        assert not t.is_alive(), "the call after the interrupted one hung"
        (results,) = outcome
        assert not isinstance(results, BaseException), results
        assert len(results) == SECOND

    # What is in the log, read by confluent-kafka: every message of the second
    # call exactly once, at the offsets it reported; and nothing twice.
    placed = {(r.partition, r.offset) for r in results}
    seen: Counter[bytes] = Counter()
    second_at: dict[bytes, tuple[int, int]] = {}
    for msg in read_messages(kafka_cluster, name, 3, SECOND, settle_s=2.0):
        seen[msg.value()] += 1
        if msg.value().startswith(b"second-"):
            second_at[msg.value()] = (msg.partition(), msg.offset())
    assert max(seen.values()) == 1, "a message was written twice"
    assert len(second_at) == SECOND
    assert set(second_at.values()) == placed
    for i, r in enumerate(results):
        assert second_at[b"second-%d" % i] == (r.partition, r.offset)
