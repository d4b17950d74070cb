"""What a test cluster's node runs with: its listeners, ``server.properties``,
log4j2 configuration and JVM flags (the files are written by
:class:`~grete.testing.cluster.KafkaCluster`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .tls import tls_paths

if TYPE_CHECKING:
    from .broker import Broker
    from .cluster import KafkaCluster

CLIENT_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
# Inter-broker traffic gets its own PLAINTEXT listener so tests can poke at the client
# listeners (and compare protocols) without disturbing replication.
_INTERNAL = "INTERNAL"
_CONTROLLER = "CONTROLLER"
_LISTENERS = (*CLIENT_PROTOCOLS, _INTERNAL, _CONTROLLER)
# Opt-in (``KafkaCluster(proxied=True)``): one more PLAINTEXT listener per node whose
# advertised port is that node's FaultProxy. Kafka answers metadata with the endpoints
# of the listener a request arrived on, so a client bootstrapped on the proxies only
# ever sees proxy ports; the other listeners stay direct.
_PROXIED = "PROXIED"

# Start-up dominates test time and these JVMs do little work: a small serial-GC heap
# and the C1 compiler only (no C2 warm-up) start fastest and let 3 nodes share 2 cores.
_JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


def _escape_properties(value: str) -> str:
    # java.util.Properties treats backslash as an escape and a newline as the end of
    # the value; nothing else in our values (=, :, quotes, ;) needs escaping.
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    lines = [f"{key}={_escape_properties(value)}" for key, value in props.items()]
    path.write_text("\n".join(lines) + "\n")


def _log4j2_properties(target: Path | None, level: str) -> str:
    """A log4j2 config writing to ``target`` (append, so restarts keep history) or stderr."""
    if target is None:
        appender = [
            "appender.out.type = Console",
            "appender.out.name = OUT",
            "appender.out.target = SYSTEM_ERR",
        ]
    else:
        appender = [
            "appender.out.type = File",
            "appender.out.name = OUT",
            f"appender.out.fileName = {target}",
            "appender.out.append = true",
        ]
    return "\n".join(
        [
            "status = warn",
            *appender,
            "appender.out.layout.type = PatternLayout",
            "appender.out.layout.pattern = [%d] %p %m (%c)%n",
            f"rootLogger.level = {level}",
            "rootLogger.appenderRef.out.ref = OUT",
            # The request logger would log every request at DEBUG/TRACE if enabled.
            "logger.request.name = kafka.request.logger",
            "logger.request.level = WARN",
            "",
        ]
    )


def server_properties(cluster: KafkaCluster, broker: Broker) -> dict[str, str]:
    """``server.properties`` of ``broker``, a combined broker+controller node of
    ``cluster``: its listeners, the static quorum, TLS and SASL, and defaults
    that suit tests; the cluster's ``broker_config`` last, overriding them."""
    tls = tls_paths(cluster._tls_dir())
    n = cluster.num_brokers
    voters = ",".join(f"{b.node_id}@127.0.0.1:{b.port(_CONTROLLER)}" for b in cluster.brokers)
    listener_map = {name: name for name in CLIENT_PROTOCOLS}
    listener_map.update({_INTERNAL: "PLAINTEXT", _CONTROLLER: "PLAINTEXT"})
    listeners = [f"{name}://{broker.address(name)}" for name in _LISTENERS]
    advertised = [f"{name}://{broker.address(name)}" for name in (*CLIENT_PROTOCOLS, _INTERNAL)]
    if broker.proxy is not None:
        listener_map[_PROXIED] = "PLAINTEXT"
        listeners.append(f"{_PROXIED}://{broker.address(_PROXIED)}")
        advertised.append(f"{_PROXIED}://{broker.proxy.address}")
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in cluster.users.items())
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(broker.node_id),
        # A static quorum: the voter set is known up front since we picked the ports,
        # and it works unchanged on 3.x brokers.
        "controller.quorum.voters": voters,
        "controller.listener.names": _CONTROLLER,
        "inter.broker.listener.name": _INTERNAL,
        "listeners": ",".join(listeners),
        "advertised.listeners": ",".join(advertised),
        "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in listener_map.items()),
        "log.dirs": str(broker.data_dir),
        "sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker_keystore_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_file),
        # Listener-prefixed: the global key is ignored (with a warning) for SASL_SSL,
        # where SASL already authenticates the client.
        "listener.name.ssl.ssl.client.auth": "requested",
        # Test-friendly cluster defaults.
        "num.partitions": "3",
        "default.replication.factor": str(min(3, n)),
        "min.insync.replicas": str(min(2, n)),
        "offsets.topic.replication.factor": str(min(3, n)),
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": str(min(3, n)),
        "transaction.state.log.min.isr": str(min(2, n)),
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": str(min(3, n)),
        "share.coordinator.state.topic.min.isr": str(min(2, n)),
        "auto.create.topics.enable": str(cluster.auto_create_topics).lower(),
        "group.initial.rebalance.delay.ms": "0",
        # Small and cheap: segments and indexes are pre-sized per partition, and the
        # cleaner's dedupe buffer (128 MiB by default) would eat a third of the heap.
        "log.segment.bytes": str(16 * 1024 * 1024),
        "log.index.size.max.bytes": str(1024 * 1024),
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "num.replica.fetchers": "1",
        "background.threads": "2",
        # A killed broker is fenced (and dropped from metadata) after the session
        # timeout; the defaults (2 s / 9 s) make fault-injection tests slow.
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
        "controller.quorum.election.timeout.ms": "1000",
        "controller.quorum.fetch.timeout.ms": "2000",
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        props[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        )
        for mech in SCRAM_MECHANISMS:
            props[f"listener.name.{listener}.{mech.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
    props.update(cluster.broker_config)
    return props
