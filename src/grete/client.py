"""``KafkaClient``: the entry point pykafka users know."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from grete.cluster import Broker, Cluster, TopicDict
from grete.connection import ConnectionConfig
from grete.errors import ConfigurationError
from grete.network import Network, parse_hosts
from grete.security import SaslMechanism, is_ssl_context, make_ssl_context

if TYPE_CHECKING:  # only TLS users import ssl (see security.py)
    import ssl as _ssl

    from grete.producer import KafkaProducer

log = logging.getLogger("grete")
# Quiet by default: an application that configures logging decides what it sees.
log.addHandler(logging.NullHandler())


def _positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    return float(value)


class KafkaClient:
    """A connection to a Kafka cluster.

    :param hosts: bootstrap brokers, ``"host1:9092,host2:9092"`` or a list.
    :param client_id: sent to brokers with every request (shows in their logs and quotas).
    :param socket_timeout_ms: how long a request may wait for its answer (default 30 s).
    :param connect_timeout_ms: bound on connect + TLS + SASL handshake (default 10 s).
    :param ssl: ``True`` for TLS with the system trust store, or an ``ssl.SSLContext``;
        implied by any ``ssl_*`` path. Hostname verification is on by default.
    :param ssl_cafile: CA bundle to trust (PEM).
    :param ssl_certfile: client certificate (PEM) for mutual TLS.
    :param ssl_keyfile: its private key, when not in ``ssl_certfile``.
    :param ssl_password: the private key's password.
    :param ssl_check_hostname: verify the broker's hostname (the chain is
        verified either way).
    :param sasl: a :class:`~grete.security.SaslPlain`, :class:`~grete.security.SaslScram`
        or :class:`~grete.security.SaslOAuthBearer`.
    :param metadata_max_age_ms: refresh metadata at least this often (default 5 min).
    :param reconnect_backoff_ms: first reconnect backoff per broker (default
        50 ms), doubling with jitter after each failure...
    :param reconnect_backoff_max_ms: ...up to this (default 1 s).
    :param allow_auto_create_topics: ask brokers that auto-create topics to do so
        when an unknown topic is looked up (default True, as the Java client).
    """

    def __init__(
        self,
        hosts: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "grete",
        socket_timeout_ms: float = 30_000,
        connect_timeout_ms: float = 10_000,
        ssl: _ssl.SSLContext | bool | None = None,
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_password: str | None = None,
        ssl_check_hostname: bool = True,
        sasl: SaslMechanism | None = None,
        metadata_max_age_ms: float = 300_000,
        reconnect_backoff_ms: float = 50,
        reconnect_backoff_max_ms: float = 1_000,
        allow_auto_create_topics: bool = True,
    ) -> None:
        bootstrap = parse_hosts(hosts)
        if sasl is not None and not isinstance(sasl, SaslMechanism):
            raise ConfigurationError("sasl must be a SaslPlain, SaslScram or SaslOAuthBearer")
        context: _ssl.SSLContext | None
        if is_ssl_context(ssl):
            context = ssl
        elif ssl or ssl_cafile or ssl_certfile or ssl_keyfile:
            context = make_ssl_context(
                ssl_cafile,
                ssl_certfile,
                ssl_keyfile,
                ssl_password,
                check_hostname=ssl_check_hostname,
            )
        else:
            context = None
        config = ConnectionConfig(
            client_id=client_id,
            request_timeout_s=_positive("socket_timeout_ms", socket_timeout_ms) / 1000,
            connect_timeout_s=_positive("connect_timeout_ms", connect_timeout_ms) / 1000,
            ssl_context=context,
            sasl=sasl,
        )
        backoff = _positive("reconnect_backoff_ms", reconnect_backoff_ms) / 1000
        backoff_max = _positive("reconnect_backoff_max_ms", reconnect_backoff_max_ms) / 1000
        if backoff_max < backoff:
            raise ConfigurationError("reconnect_backoff_max_ms is below reconnect_backoff_ms")
        self._network = Network(
            bootstrap, config, reconnect_backoff_s=backoff, reconnect_backoff_max_s=backoff_max
        )
        self.cluster = Cluster(
            self._network,
            metadata_max_age_s=_positive("metadata_max_age_ms", metadata_max_age_ms) / 1000,
            allow_auto_create_topics=allow_auto_create_topics,
        )
        try:
            self.cluster.update()
        except BaseException:
            self._network.close()
            raise

    def __repr__(self) -> str:
        return f"<KafkaClient {self.cluster!r}>"

    @property
    def brokers(self) -> dict[int, Broker]:
        return self.cluster.brokers

    @property
    def topics(self) -> TopicDict:
        return self.cluster.topics

    def producer(self, **options: Any) -> KafkaProducer:
        """A :class:`grete.KafkaProducer` on this client: any topic per
        message, one sender thread (``options``: see the options table)."""
        from grete.producer import KafkaProducer

        return KafkaProducer(self, **options)

    def update_cluster(self) -> None:
        """Refresh brokers and topics from the cluster."""
        self.cluster.update()

    def close(self) -> None:
        self._network.close()

    def __enter__(self) -> KafkaClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
