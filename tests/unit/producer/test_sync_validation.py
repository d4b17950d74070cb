"""Producer input and config validation, with no broker: nothing may be sent."""

from __future__ import annotations

from typing import Any

import pytest

from grete.cluster import Cluster
from grete.errors import ConfigurationError
from grete.partitioners import hashing_partitioner, random_partitioner
from grete.producer import (
    InvalidMessageError,
    Message,
    Producer,
    ProducerClosedError,
)
from grete.producer.engine import ProduceEngine


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every batch handed to any engine: validation must leave this empty."""
    added: list[Any] = []
    original = ProduceEngine.add

    def spy(self: ProduceEngine, batch: Any) -> None:
        added.append(batch)
        original(self, batch)

    monkeypatch.setattr(ProduceEngine, "add", spy)
    return added


BAD_MESSAGES: list[tuple[str, list[Any]]] = [
    ("int value", [b"ok", 42]),
    ("dict value", [b"ok", {"a": 1}]),
    ("3-tuple", [(b"k", b"v", b"x")]),
    ("1-tuple", [(b"v",)]),
    ("int key", [(7, b"v")]),
    ("negative timestamp", [Message(b"v", timestamp=-1)]),
    ("float timestamp", [Message(b"v", timestamp=1.5)]),  # type: ignore[arg-type]
    ("timestamp past int64", [Message(b"v", timestamp=2**63)]),
    ("bool timestamp", [Message(b"v", timestamp=True)]),
    ("unknown partition", [Message(b"v", partition=3)]),
    ("float partition", [Message(b"v", partition=1.0)]),  # type: ignore[arg-type]
    ("bool partition", [Message(b"v", partition=True)]),
    ("negative partition", [Message(b"v", partition=-1)]),
    ("bad header name", [Message(b"v", headers=[(b"h", b"x")])]),  # type: ignore[list-item]
    ("bad header value", [Message(b"v", headers={"h": 1})]),  # type: ignore[dict-item]
    ("bad headers shape", [Message(b"v", headers=[b"abc"])]),  # type: ignore[list-item]
    ("Message int value", [Message(3)]),  # type: ignore[arg-type]
    ("late bad message", [b"a"] * 50 + [None, object()]),
]


@pytest.mark.parametrize(
    ("messages"), [m for _, m in BAD_MESSAGES], ids=[n for n, _ in BAD_MESSAGES]
)
@pytest.mark.parametrize("as_iterator", [False, True])
@pytest.mark.parametrize("partitioner", [random_partitioner, hashing_partitioner])
def test_bad_messages_raise_before_sending(
    cluster: Cluster, sends: list[Any], messages: list[Any], partitioner: Any, as_iterator: bool
) -> None:
    # Good (key, value) tuples first: with a Java-compatible partitioner the
    # keyed fast path reads them as columns before meeting the bad message.
    messages = [(b"k%d" % i, b"v") for i in range(5)] + messages
    producer = Producer(cluster, cluster._topics["t"], partitioner=partitioner)
    with pytest.raises(InvalidMessageError):
        producer.produce(iter(messages) if as_iterator else messages)
    assert sends == []
    assert producer._engine.idle


@pytest.mark.parametrize("single", [b"abc", "abc"])
def test_a_single_message_instead_of_a_list_is_refused(
    cluster: Cluster, sends: list[Any], single: Any
) -> None:
    producer = Producer(cluster, cluster._topics["t"])
    with pytest.raises(InvalidMessageError):
        producer.produce(single)
    assert sends == []


def test_invalid_message_error_is_a_type_error_and_configuration_error() -> None:
    assert issubclass(InvalidMessageError, TypeError)
    assert issubclass(InvalidMessageError, ConfigurationError)


BAD_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("acks 2", {"required_acks": 2}),
    ("acks -2", {"required_acks": -2}),
    ("idempotence with acks 1", {"enable_idempotence": True, "required_acks": 1}),
    ("idempotence with acks 0", {"enable_idempotence": True, "required_acks": 0}),
    ("batch_size 0", {"batch_size": 0}),
    ("batch_size bool", {"batch_size": True}),
    ("unknown compression", {"compression": 99}),
    ("compression name", {"compression": "brotli"}),
    ("bad gzip level", {"compression": 1, "compression_level": 42}),
    ("negative retries", {"max_retries": -1}),
    ("backoff max below backoff", {"retry_backoff_ms": 500, "retry_backoff_max_ms": 100}),
    ("ack timeout 0", {"ack_timeout_ms": 0}),
    ("tiny max_request_size", {"max_request_size": 10}),
    ("max_in_flight 0", {"max_in_flight": 0}),
    ("idempotent max_in_flight 6", {"required_acks": -1, "max_in_flight": 6}),
    ("partitioner not callable", {"partitioner": "hash"}),
]


@pytest.mark.parametrize("kwargs", [k for _, k in BAD_CONFIGS], ids=[n for n, _ in BAD_CONFIGS])
def test_bad_config_raises_configuration_error(cluster: Cluster, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Producer(cluster, cluster._topics["t"], **kwargs)


def test_good_config_is_accepted(cluster: Cluster) -> None:
    p = Producer(
        cluster,
        cluster._topics["t"],
        required_acks=-1,
        max_in_flight=5,
        compression=1,
        compression_level=9,
    )
    assert p._engine.idempotent and p._engine.acks == -1
    q = Producer(
        cluster, cluster._topics["t"], required_acks=-1, enable_idempotence=False, max_in_flight=10
    )
    assert not q._engine.idempotent
    r = cluster._topics["t"].get_sync_producer(required_acks=0)
    assert not r._engine.idempotent and r._engine.acks == 0


def test_wrong_cluster_or_topic_type(cluster: Cluster) -> None:
    with pytest.raises(ConfigurationError):
        Producer(object(), cluster._topics["t"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Producer(cluster, "t")  # type: ignore[arg-type]


def test_closed_producer_refuses(cluster: Cluster, sends: list[Any]) -> None:
    producer = Producer(cluster, cluster._topics["t"])
    producer.close()
    with pytest.raises(ProducerClosedError):
        producer.produce([b"x"])
    with Producer(cluster, cluster._topics["t"]) as other:
        pass
    with pytest.raises(ProducerClosedError):
        other.produce([(b"k", b"v")])
    stopped = Producer(cluster, cluster._topics["t"])
    stopped.stop()
    with pytest.raises(ProducerClosedError):
        stopped.produce([])
    assert sends == []


@pytest.mark.parametrize("partitioner", [random_partitioner, hashing_partitioner])
def test_empty_produce_returns_no_results(
    cluster: Cluster, sends: list[Any], partitioner: Any
) -> None:
    producer = Producer(cluster, cluster._topics["t"], partitioner=partitioner)
    assert list(producer.produce([])) == []
    assert len(producer.produce(iter([]))) == 0
    assert sends == []


def test_an_error_while_sending_leaves_nothing_behind(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure escaping produce() must not leave batches queued for the next call."""
    from grete.producer.batch import ProducerBatch

    def boom(self: ProducerBatch, *args: Any, **kw: Any) -> bytes:
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(ProducerBatch, "encode", boom)
    producer = Producer(cluster, cluster._topics["t"], max_retries=0)
    with pytest.raises(RuntimeError, match="encoder exploded"):
        producer.produce([Message(b"v", partition=0), (b"k", b"v")])
    assert producer._engine.idle and producer._engine.queued == 0
