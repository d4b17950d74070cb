"""Every front end takes its options through grete.producer.config: each bad
value of the table is refused by each front end that takes the option with
resolve()'s words, and good values are taken. No broker: the unit ``cluster``."""

from __future__ import annotations

from typing import Any

import pytest

from grete.cluster import Cluster
from grete.errors import ConfigurationError
from grete.partitioners import hashing_partitioner
from grete.producer import BackgroundProducer, Producer
from grete.producer.config import FRONT_ENDS, OPTIONS, resolve

#: A valid value, not the default of any front end, per option (with the
#: other options it needs).
ACCEPTED: dict[str, dict[str, Any]] = {
    "partitioner": {"partitioner": hashing_partitioner},
    "compression": {"compression": "gzip"},
    "compression_level": {"compression": "gzip", "compression_level": 9},
    "max_retries": {"max_retries": 0},
    "retry_backoff_ms": {"retry_backoff_ms": 50},
    "retry_backoff_max_ms": {"retry_backoff_max_ms": 5_000},
    "required_acks": {"required_acks": 0},
    "ack_timeout_ms": {"ack_timeout_ms": 5_000},
    "batch_size": {"batch_size": 50},
    "max_request_size": {"max_request_size": 512 << 10},
    "enable_idempotence": {"enable_idempotence": False},
    "max_in_flight": {"max_in_flight": 2},
    "delivery_timeout_ms": {"delivery_timeout_ms": 30_000.5},
    "linger_ms": {"linger_ms": 0.5},
    "max_batch_bytes": {"max_batch_bytes": 4_096},
    "max_queued_messages": {"max_queued_messages": 10},
    "max_buffer_bytes": {"max_buffer_bytes": 1 << 20},
    "block_on_queue_full": {"block_on_queue_full": False},
    "queue_full_timeout_ms": {"queue_full_timeout_ms": 250.5},
    "delivery_reports": {"delivery_reports": True},
    "serializer": {"serializer": str.encode},
    "key_serializer": {"key_serializer": str.encode},
    "metrics_log_interval_ms": {"metrics_log_interval_ms": 0},
    "unknown_topic_timeout_ms": {"unknown_topic_timeout_ms": 500},
    "transactional_id": {"transactional_id": "orders-1"},
    "transaction_timeout_ms": {"transaction_timeout_ms": 30_000},
}


def _construct(front_end: str, cluster: Cluster, options: dict[str, Any]) -> Any:
    if front_end == "Producer":
        return Producer(cluster, cluster._topics["t"], **options)
    if front_end == "BackgroundProducer":
        return BackgroundProducer(cluster, cluster._topics["t"], **options)
    from grete import KafkaProducer

    return KafkaProducer(cluster, **options)


def _message(error: Exception, front_end: str) -> str:
    """The error's words, without a prefix naming the front end, if it adds one."""
    message = str(error)
    for prefix in (f"{front_end}(): ", f"{front_end}: "):
        message = message.removeprefix(prefix)
    return message


BAD = [
    pytest.param(front_end, option.name, bad, id=f"{front_end}-{option.name}={bad!r}")
    for option in OPTIONS
    for bad in option.bad
    for front_end in FRONT_ENDS
    if front_end in option.defaults
]


@pytest.mark.parametrize(("front_end", "name", "bad"), BAD)
def test_bad_option_refused_as_resolve_refuses_it(
    cluster: Cluster, front_end: str, name: str, bad: Any
) -> None:
    with pytest.raises(ConfigurationError) as expected:
        resolve(front_end, {name: bad})
    try:
        producer = _construct(front_end, cluster, {name: bad})
    except ConfigurationError as error:
        assert _message(error, front_end) == str(expected.value)
    else:
        producer.close()
        pytest.fail(f"{front_end}({name}={bad!r}) was accepted")


GOOD = [
    pytest.param(front_end, option.name, id=f"{front_end}-{option.name}")
    for option in OPTIONS
    for front_end in FRONT_ENDS
    if front_end in option.defaults
]


def test_every_option_has_an_accepted_value() -> None:
    assert set(ACCEPTED) == {option.name for option in OPTIONS}


@pytest.mark.parametrize(("front_end", "name"), GOOD)
def test_good_option_taken(cluster: Cluster, front_end: str, name: str) -> None:
    options = ACCEPTED[name]
    default = next(option for option in OPTIONS if option.name == name).defaults[front_end]
    assert options[name] != default
    resolve(front_end, options)
    producer = _construct(front_end, cluster, options)
    producer.close()
