"""TLS, mutual TLS and SASL against the real cluster: grete produces, confluent-kafka
reads the messages back over PLAINTEXT.

OAUTHBEARER: the test cluster enables only PLAIN and SCRAM (see
grete.testing.cluster.SASL_MECHANISMS), so here OAUTHBEARER is only checked to be
refused cleanly; its message format is covered by tests/unit/test_security.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.errors import AuthenticationError, KafkaConnectionError, KafkaTimeoutError
from grete.producer import Producer
from grete.security import SaslMechanism, SaslOAuthBearer, SaslPlain, SaslScram
from grete.testing import KafkaCluster

from ._consume import read_first

pytestmark = pytest.mark.integration

USER = "alice"


def _read_back(cluster: KafkaCluster, topic: str, count: int) -> list[bytes]:
    """Every value in ``topic`` (3 partitions), read from the start with confluent-kafka."""
    return [msg.value() for msg in read_first(cluster.bootstrap_servers, topic, count)]


def _client_kwargs(cluster: KafkaCluster, mode: str) -> tuple[str, dict[str, Any]]:
    password = cluster.users[USER]
    ca = str(cluster.ca_file)
    modes: dict[str, tuple[str, dict[str, Any]]] = {
        "SSL": ("SSL", {"ssl_cafile": ca}),
        "mTLS": (
            "SSL",
            {
                "ssl_cafile": ca,
                "ssl_certfile": str(cluster.client_cert_file),
                "ssl_keyfile": str(cluster.client_key_file),
            },
        ),
        "SASL_PLAINTEXT-PLAIN": ("SASL_PLAINTEXT", {"sasl": SaslPlain(USER, password)}),
        "SASL_PLAINTEXT-SCRAM-SHA-256": (
            "SASL_PLAINTEXT",
            {"sasl": SaslScram(USER, password, mechanism="SCRAM-SHA-256")},
        ),
        "SASL_PLAINTEXT-SCRAM-SHA-512": (
            "SASL_PLAINTEXT",
            {"sasl": SaslScram(USER, password, mechanism="SCRAM-SHA-512")},
        ),
        "SASL_SSL-SCRAM-SHA-512": (
            "SASL_SSL",
            {"ssl_cafile": ca, "sasl": SaslScram(USER, password, mechanism="SCRAM-SHA-512")},
        ),
        "SASL_SSL-PLAIN": ("SASL_SSL", {"ssl_cafile": ca, "sasl": SaslPlain(USER, password)}),
    }
    protocol, kwargs = modes[mode]
    return cluster.bootstrap(protocol), kwargs


MODES = [
    "SSL",
    "mTLS",
    "SASL_PLAINTEXT-PLAIN",
    "SASL_PLAINTEXT-SCRAM-SHA-256",
    "SASL_PLAINTEXT-SCRAM-SHA-512",
    "SASL_SSL-SCRAM-SHA-512",
    "SASL_SSL-PLAIN",
]


@pytest.mark.parametrize("mode", MODES)
def test_produce_in_every_security_mode(kafka_cluster: KafkaCluster, topic: str, mode: str) -> None:
    hosts, kwargs = _client_kwargs(kafka_cluster, mode)
    values = [f"{mode}-{i}".encode() for i in range(5)]
    with KafkaClient(hosts, connect_timeout_ms=10_000, **kwargs) as client:
        assert set(client.brokers) == {b.node_id for b in kafka_cluster.brokers}
        # The metadata of a listener advertises that listener's ports.
        ports = {b.port for b in client.brokers.values()}
        assert ports == {int(h.rsplit(":", 1)[1]) for h in hosts.split(",")}
        producer = Producer(client.cluster, client.topics[topic], required_acks=-1)
        results = producer.produce([*values[:3], (b"key", values[3]), (None, values[4])])
        producer.close()
    assert len(results) == 5 and all(r.offset >= 0 for r in results)
    assert sorted(_read_back(kafka_cluster, topic, 5)) == sorted(values)


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "sasl",
    [
        SaslPlain(USER, "WRONG-pass-1234"),
        SaslScram(USER, "WRONG-pass-1234", mechanism="SCRAM-SHA-256"),
        SaslScram(USER, "WRONG-pass-1234", mechanism="SCRAM-SHA-512"),
        SaslScram("nobody-such-user", "WRONG-pass-1234", mechanism="SCRAM-SHA-512"),
    ],
    ids=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "SCRAM-unknown-user"],
)
def test_wrong_password_fails_at_once(kafka_cluster: KafkaCluster, sasl: SaslMechanism) -> None:
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        KafkaClient(kafka_cluster.bootstrap("SASL_PLAINTEXT"), sasl=sasl)
    assert time.monotonic() - t0 < 5.0
    assert sasl.mechanism in str(info.value)
    for text in (str(info.value), repr(info.value), repr(sasl)):
        assert "WRONG-pass-1234" not in text
    # Not retriable: retrying with the same password cannot help.
    assert not info.value.retriable


def test_wrong_password_over_tls_fails_at_once(kafka_cluster: KafkaCluster) -> None:
    sasl = SaslScram(USER, "WRONG-pass-5678", mechanism="SCRAM-SHA-512")
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError) as info:
        KafkaClient(
            kafka_cluster.bootstrap("SASL_SSL"), ssl_cafile=str(kafka_cluster.ca_file), sasl=sasl
        )
    assert time.monotonic() - t0 < 5.0
    assert "WRONG-pass-5678" not in str(info.value)


def test_untrusted_ca_is_an_authentication_error(kafka_cluster: KafkaCluster) -> None:
    # ssl=True: the system trust store, which does not know the test CA.
    t0 = time.monotonic()
    with pytest.raises(AuthenticationError, match="not trusted"):
        KafkaClient(kafka_cluster.bootstrap("SSL"), ssl=True)
    assert time.monotonic() - t0 < 5.0


def test_tls_without_hostname_check_still_verifies_the_chain(
    kafka_cluster: KafkaCluster,
) -> None:
    with pytest.raises(AuthenticationError, match="not trusted"):
        KafkaClient(kafka_cluster.bootstrap("SSL"), ssl=True, ssl_check_hostname=False)
    with KafkaClient(
        kafka_cluster.bootstrap("SSL"),
        ssl_cafile=str(kafka_cluster.ca_file),
        ssl_check_hostname=False,
    ) as client:
        assert len(client.brokers) == len(kafka_cluster.brokers)


def test_tls_client_on_a_plaintext_listener_is_a_typed_error(
    kafka_cluster: KafkaCluster,
) -> None:
    t0 = time.monotonic()
    with pytest.raises((KafkaConnectionError, KafkaTimeoutError)):
        KafkaClient(
            kafka_cluster.bootstrap("PLAINTEXT"),
            ssl_cafile=str(kafka_cluster.ca_file),
            connect_timeout_ms=3000,
        )
    assert time.monotonic() - t0 < 12.0


def test_oauthbearer_not_enabled_is_refused_cleanly(kafka_cluster: KafkaCluster) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return "SECRET-TOKEN-abc"

    t0 = time.monotonic()
    with pytest.raises(AuthenticationError, match="OAUTHBEARER refused") as info:
        KafkaClient(kafka_cluster.bootstrap("SASL_PLAINTEXT"), sasl=SaslOAuthBearer(token))
    assert time.monotonic() - t0 < 5.0
    # The broker says what it offers instead.
    assert "SCRAM-SHA-512" in str(info.value)
    assert "SECRET-TOKEN-abc" not in str(info.value)
    assert calls, "the token callback was never asked"
