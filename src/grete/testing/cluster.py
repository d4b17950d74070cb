"""A real Apache Kafka cluster (KRaft, combined broker+controller nodes) on 127.0.0.1.

Each node is a plain ``java -cp <jars>/* kafka.Kafka server.properties`` process with
its own temp dir, ports and log file. Nothing is shared with any installed Kafka and
nothing outlives the Python process (see :mod:`grete.testing.process`).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from . import process
from .admin import ClusterAdmin, make_admin, wait_for_topic
from .jars import DEFAULT_KAFKA_VERSION, ensure_kafka_jars, find_java
from .tls import TlsFiles, generate_tls_files, tls_paths

__all__ = [
    "CLIENT_PROTOCOLS",
    "DEFAULT_USERS",
    "SASL_MECHANISMS",
    "Broker",
    "KafkaCluster",
    "KafkaStartError",
    "PortInUseError",
]

log = logging.getLogger("grete.testing")

CLIENT_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = ("PLAIN", *SCRAM_MECHANISMS)
# Inter-broker traffic gets its own PLAINTEXT listener so tests can poke at the client
# listeners (and compare protocols) without disturbing replication.
_INTERNAL = "INTERNAL"
_CONTROLLER = "CONTROLLER"
_LISTENERS = (*CLIENT_PROTOCOLS, _INTERNAL, _CONTROLLER)
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-secret", "bob": "bob-secret"}
_STARTED_MARKER = "Kafka Server started"

# Start-up dominates test time and these JVMs do little work: a small serial-GC heap
# and the C1 compiler only (no C2 warm-up) start fastest and let 3 nodes share 2 cores.
_JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)


class KafkaStartError(RuntimeError):
    """A broker did not start (or restart); the message carries its log tail."""


class PortInUseError(KafkaStartError):
    """A port the broker must listen on is taken by another process."""


def _new_cluster_id() -> str:
    """A base64url UUID without padding, as KRaft wants for a cluster id, that does
    not start with "-": the storage tool would take it for an option (Kafka's own
    ``Uuid.randomUuid`` redraws those too). One id in 64 did, failing the start."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _keep_dirs_from_env() -> bool:
    return os.environ.get("GRETE_KEEP_KAFKA", "").strip().lower() in {"1", "true", "yes"}


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


class Broker:
    """One combined broker+controller node of a :class:`KafkaCluster`."""

    def __init__(
        self, cluster: KafkaCluster, node_id: int, ports: Mapping[str, int], directory: Path
    ) -> None:
        self._cluster = cluster
        self.node_id = node_id
        self.ports: dict[str, int] = dict(ports)
        self.directory = directory
        self.data_dir = directory / "data"
        self.config_path = directory / "server.properties"
        self.log_path = directory / "server.log"
        """Kafka's own log (log4j2), appended across restarts."""
        self.stdout_path = directory / "stdout.log"
        """JVM stdout/stderr: only interesting when the JVM itself fails to start."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<Broker {self.node_id} {state} {self.address()}>"

    def port(self, protocol: str = "PLAINTEXT") -> int:
        """The port of this broker's listener for ``protocol`` (or INTERNAL/CONTROLLER)."""
        try:
            return self.ports[protocol.upper()]
        except KeyError:
            raise ValueError(f"unknown listener {protocol!r}; have {sorted(self.ports)}") from None

    def address(self, protocol: str = "PLAINTEXT") -> str:
        return f"127.0.0.1:{self.port(protocol)}"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc is not None else None

    def start(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """(Re)start on the same ports and data dir; by default wait until it serves."""
        if self.is_running:
            return
        taken = [
            f"{name}={port}" for name, port in self.ports.items() if not process.port_is_free(port)
        ]
        if taken:
            raise PortInUseError(
                f"broker {self.node_id} cannot start: port(s) {', '.join(taken)} on 127.0.0.1 "
                "are in use by another process"
            )
        self._launch()
        if wait:
            self._cluster._wait_started([self], timeout)

    def _launch(self) -> None:
        # Only the log written from now on counts as evidence that *this* run started.
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cluster = self._cluster
        argv = [
            cluster.java,
            f"-Xmx{cluster.heap_mb}m",
            f"-Xms{min(128, cluster.heap_mb)}m",
            *(_JVM_FLAGS if cluster.tuned_for_tests else ()),
            *cluster.jvm_opts,
            f"-Dlog4j2.configurationFile={self.directory / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory}",
            "-cp",
            cluster.classpath,
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.stdout_path.open("ab") as out:
            self._proc = process.spawn(argv, cwd=self.directory, stdout=out)

    def started_in_log(self) -> bool:
        """Whether the log written since the last launch says the server is up."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                return _STARTED_MARKER.encode() in handle.read()
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM); SIGKILL if it takes longer than ``timeout``."""
        if self._proc is None:
            return
        if not process.terminate_group(self._proc, timeout):
            log.warning("broker %d ignored SIGTERM for %.0fs; killed it", self.node_id, timeout)

    def kill(self) -> None:
        """SIGKILL, as in a machine crash: no controlled shutdown, no flush."""
        if self._proc is not None:
            process.kill_group(self._proc)

    def log_tail(self, lines: int = 40) -> str:
        text = (
            f"--- last {lines} lines of {self.log_path} ---\n{process.tail(self.log_path, lines)}"
        )
        if self.stdout_path.exists() and self.stdout_path.stat().st_size:
            text += f"\n--- {self.stdout_path} ---\n{process.tail(self.stdout_path, 15)}"
        return text


class KafkaCluster:
    """An N-node KRaft Kafka cluster on 127.0.0.1 with PLAINTEXT, SASL, TLS listeners.

    ``with KafkaCluster(3) as cluster: ...`` or ``cluster = KafkaCluster(3).start()``
    followed by ``cluster.close()``. Every node is a combined broker+controller, so any
    minority of nodes can be stopped or killed without losing the quorum.

    Credentials: :attr:`users` maps user name to password for SASL/PLAIN and both SCRAM
    mechanisms. TLS: :attr:`ca_file` is the trust anchor; brokers request (but do not
    require) a client certificate, for which :attr:`client_cert_file` and
    :attr:`client_key_file` are provided.

    JVMs: by default small, quick to start and light on CPU (serial GC, the C1
    compiler only), which suits tests; ``tuned_for_tests=False`` keeps the JVM's own
    defaults (G1, C2), as a production broker runs: what benchmarks should measure.
    """

    def __init__(
        self,
        num_brokers: int = 3,
        version: str = DEFAULT_KAFKA_VERSION,
        broker_config: Mapping[str, object] | None = None,
        *,
        heap_mb: int = 384,
        auto_create_topics: bool = False,
        users: Mapping[str, str] | None = None,
        jars_dir: Path | str | None = None,
        base_dir: Path | str | None = None,
        startup_timeout: float = 90.0,
        jvm_opts: Sequence[str] = (),
        keep_dirs: bool | None = None,
        tuned_for_tests: bool = True,
    ) -> None:
        if num_brokers < 1:
            raise ValueError("num_brokers must be at least 1")
        self.num_brokers = num_brokers
        self.version = version
        self.broker_config = {k: str(v) for k, v in (broker_config or {}).items()}
        self.heap_mb = heap_mb
        self.auto_create_topics = auto_create_topics
        self.users: dict[str, str] = dict(users if users is not None else DEFAULT_USERS)
        self.startup_timeout = startup_timeout
        self.jvm_opts = tuple(jvm_opts)
        # False: the JVM's own defaults (G1, the C2 compiler), as a production broker
        # runs; slower to start, faster once warm. Benchmarks want that.
        self.tuned_for_tests = tuned_for_tests
        self.keep_dirs = _keep_dirs_from_env() if keep_dirs is None else keep_dirs
        self._jars_dir = Path(jars_dir) if jars_dir is not None else None
        self._base_dir_arg = Path(base_dir) if base_dir is not None else None
        self.cluster_id = _new_cluster_id()
        self.brokers: list[Broker] = []
        self.base_dir: Path | None = None
        self.java = ""
        self.classpath = ""
        self.jars_dir: Path | None = None
        self.tls: TlsFiles | None = None
        self.start_seconds: float | None = None
        """Wall time of the last :meth:`start`, jar download excluded."""
        self._admin: ClusterAdmin | None = None
        self._admin_lock = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> KafkaCluster:
        """Fetch jars if needed, write configs and certificates, format, start, wait."""
        if self.brokers:
            raise RuntimeError("cluster already started")
        self.java = find_java()
        self.jars_dir = ensure_kafka_jars(self.version, self._jars_dir)
        self.classpath = str(self.jars_dir / "*")
        t0 = time.monotonic()
        if self._base_dir_arg is not None:
            self._base_dir_arg.mkdir(parents=True, exist_ok=True)
            self.base_dir = Path(tempfile.mkdtemp(prefix="kafka-", dir=self._base_dir_arg))
        else:
            self.base_dir = Path(tempfile.mkdtemp(prefix="grete-kafka-"))
        if not self.keep_dirs:
            # Even if close() is never called, the dir goes at interpreter exit.
            self._finalizer = weakref.finalize(
                self, shutil.rmtree, str(self.base_dir), ignore_errors=True
            )
        try:
            (self.base_dir / "tools-log4j2.properties").write_text(_log4j2_properties(None, "WARN"))
            ports = process.free_ports(self.num_brokers * len(_LISTENERS))
            for index in range(self.num_brokers):
                node_id = index + 1
                chunk = ports[index * len(_LISTENERS) : (index + 1) * len(_LISTENERS)]
                directory = self.base_dir / f"node-{node_id}"
                directory.mkdir()
                self.brokers.append(
                    Broker(self, node_id, dict(zip(_LISTENERS, chunk, strict=True)), directory)
                )
            for broker in self.brokers:
                _write_properties(broker.config_path, self._server_properties(broker))
                (broker.directory / "log4j2.properties").write_text(
                    _log4j2_properties(broker.log_path, "INFO")
                )

            # Formatting only needs the config (which names the TLS files), so the
            # certificates are generated while the format JVMs start up.
            def make_certificates() -> None:
                self.tls = generate_tls_files(self._tls_dir())

            self._format_storage(make_certificates)
            for broker in self.brokers:
                broker.start(wait=False)
            self._wait_started(self.brokers, self.startup_timeout)
        except BaseException:
            # Includes KeyboardInterrupt: never leave half a cluster running.
            self.close()
            raise
        self.start_seconds = time.monotonic() - t0
        log.info(
            "Kafka %s cluster of %d nodes up in %.1fs at %s (dir %s)",
            self.version,
            self.num_brokers,
            self.start_seconds,
            self.bootstrap_servers,
            self.base_dir,
        )
        return self

    def close(self, keep_dirs: bool | None = None) -> None:
        """Kill every node and delete the temp dirs (unless kept). Idempotent.

        Nodes are SIGKILLed rather than shut down gracefully: the data is thrown away,
        and the last nodes of a KRaft quorum would otherwise wait for a majority that
        is already gone.
        """
        for broker in self.brokers:
            broker.kill()
        keep = self.keep_dirs if keep_dirs is None else keep_dirs
        if self.base_dir is not None and not self._closed:
            if keep:
                if self._finalizer is not None:
                    self._finalizer.detach()
                log.warning("keeping Kafka cluster files in %s", self.base_dir)
            elif self._finalizer is not None:
                self._finalizer()
            else:
                shutil.rmtree(self.base_dir, ignore_errors=True)
        self._closed = True

    # ------------------------------------------------------------------ configuration

    def _server_properties(self, broker: Broker) -> dict[str, str]:
        tls = tls_paths(self._tls_dir())
        n = self.num_brokers
        voters = ",".join(f"{b.node_id}@127.0.0.1:{b.port(_CONTROLLER)}" for b in self.brokers)
        listener_map = {name: name for name in CLIENT_PROTOCOLS}
        listener_map.update({_INTERNAL: "PLAINTEXT", _CONTROLLER: "PLAINTEXT"})
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
        props: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": str(broker.node_id),
            # A static quorum: the voter set is known up front since we picked the ports,
            # and it works unchanged on 3.x brokers.
            "controller.quorum.voters": voters,
            "controller.listener.names": _CONTROLLER,
            "inter.broker.listener.name": _INTERNAL,
            "listeners": ",".join(f"{name}://{broker.address(name)}" for name in _LISTENERS),
            "advertised.listeners": ",".join(
                f"{name}://{broker.address(name)}" for name in (*CLIENT_PROTOCOLS, _INTERNAL)
            ),
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
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
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
        props.update(self.broker_config)
        return props

    def _tls_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir / "tls"

    def _format_storage(self, meanwhile: Callable[[], None]) -> None:
        """``kafka-storage format`` for every node, concurrently (each is a JVM start),
        running ``meanwhile`` while they do."""
        assert self.base_dir is not None
        scram: list[str] = []
        for user, password in self.users.items():
            for mech in SCRAM_MECHANISMS:
                scram += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        procs: list[tuple[Broker, subprocess.Popen[bytes], IO[bytes]]] = []
        try:
            for broker in self.brokers:
                out = (broker.directory / "format.log").open("wb")
                argv = [
                    *self._java_argv("kafka.tools.StorageTool", heap_mb=128),
                    "format",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(broker.config_path),
                    *scram,
                ]
                procs.append((broker, process.spawn(argv, cwd=broker.directory, stdout=out), out))
            meanwhile()
            deadline = time.monotonic() + self.startup_timeout
            for broker, proc, _ in procs:
                try:
                    code = proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    code = None
                if code != 0:
                    raise KafkaStartError(
                        f"formatting the storage of node {broker.node_id} failed "
                        f"(exit {code}):\n{process.tail(broker.directory / 'format.log')}"
                    )
        finally:
            for _, proc, log_file in procs:
                log_file.close()
                process.kill_group(proc)

    def _java_argv(self, main_class: str, heap_mb: int) -> list[str]:
        assert self.base_dir is not None
        return [
            self.java,
            f"-Xmx{heap_mb}m",
            *_JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.base_dir / 'tools-log4j2.properties'}",
            "-cp",
            self.classpath,
            main_class,
        ]

    def _wait_started(self, brokers: Sequence[Broker], timeout: float | None) -> None:
        """Wait until each broker logged start-up and every running broker's metadata
        lists all running brokers; bounded, with the failing broker's log in the error."""
        timeout = self.startup_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = list(brokers)
        while pending:
            for broker in list(pending):
                if not broker.is_running:
                    raise KafkaStartError(
                        f"Kafka broker {broker.node_id} exited during start-up "
                        f"(exit code {broker._proc.returncode if broker._proc else None})\n"
                        f"{broker.log_tail()}"
                    )
                if broker.started_in_log():
                    pending.remove(broker)
            if pending and time.monotonic() >= deadline:
                broker = pending[0]
                raise KafkaStartError(
                    f"Kafka broker {broker.node_id} did not start within {timeout:.0f}s\n"
                    f"{broker.log_tail()}"
                )
            if pending:
                time.sleep(0.1)
        expected = {b.node_id for b in self.brokers if b.is_running}
        for broker in brokers:
            remaining = deadline - time.monotonic()
            if not self._wait_metadata(broker, expected, max(remaining, 5.0)):
                raise KafkaStartError(
                    f"broker {broker.node_id} is up but its metadata did not list brokers "
                    f"{sorted(expected)} within {timeout:.0f}s\n{broker.log_tail()}"
                )

    def _wait_metadata(self, broker: Broker, expected: set[int], timeout: float) -> bool:
        try:
            admin = make_admin(broker.address(), None)
        except Exception:
            return True  # no in-process client: the log line is all we can check
        return process.wait_until(
            lambda: admin.broker_ids(timeout=2.0) in (None, expected), timeout
        )

    # ------------------------------------------------------------------ addresses

    def bootstrap(self, protocol: str = "PLAINTEXT") -> str:
        """``"127.0.0.1:p1,127.0.0.1:p2,..."`` for the listeners of ``protocol``."""
        protocol = protocol.upper()
        if protocol not in CLIENT_PROTOCOLS:
            raise ValueError(f"protocol must be one of {CLIENT_PROTOCOLS}, not {protocol!r}")
        return ",".join(b.address(protocol) for b in self.brokers)

    @property
    def bootstrap_servers(self) -> str:
        return self.bootstrap("PLAINTEXT")

    @property
    def ca_file(self) -> Path:
        return self._tls().ca_file

    @property
    def client_cert_file(self) -> Path:
        return self._tls().client_cert_file

    @property
    def client_key_file(self) -> Path:
        return self._tls().client_key_file

    def _tls(self) -> TlsFiles:
        if self.tls is None:
            raise RuntimeError("the cluster has not been started")
        return self.tls

    def broker(self, node_id: int) -> Broker:
        for broker in self.brokers:
            if broker.node_id == node_id:
                return broker
        raise KeyError(node_id)

    @property
    def log_paths(self) -> list[Path]:
        return [b.log_path for b in self.brokers]

    # ------------------------------------------------------------------ client configs

    def client_config(
        self,
        protocol: str = "PLAINTEXT",
        *,
        mechanism: str = "SCRAM-SHA-512",
        user: str | None = None,
        password: str | None = None,
        mtls: bool = False,
    ) -> dict[str, str]:
        """Java client properties (for Kafka's tools) to connect with ``protocol``."""
        protocol = protocol.upper()
        props = {"bootstrap.servers": self.bootstrap(protocol), "security.protocol": protocol}
        if "SSL" in protocol:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(self.ca_file)
            if mtls:
                # Java's PEM keystore wants key and chain in one file.
                assert self.base_dir is not None
                bundle = self.base_dir / "tls" / "client-keystore.pem"
                if not bundle.exists():
                    bundle.write_bytes(
                        self.client_key_file.read_bytes() + self.client_cert_file.read_bytes()
                    )
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.location"] = str(bundle)
        if protocol.startswith("SASL"):
            user, password = self._credentials(user, password)
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            props["sasl.mechanism"] = mechanism
            props["sasl.jaas.config"] = (
                f'{module} required username="{user}" password="{password}";'
            )
        return props

    def librdkafka_config(
        self,
        protocol: str = "PLAINTEXT",
        *,
        mechanism: str = "SCRAM-SHA-512",
        user: str | None = None,
        password: str | None = None,
        mtls: bool = False,
    ) -> dict[str, str]:
        """confluent-kafka / librdkafka settings to connect with ``protocol``."""
        protocol = protocol.upper()
        conf = {"bootstrap.servers": self.bootstrap(protocol), "security.protocol": protocol}
        if "SSL" in protocol:
            conf["ssl.ca.location"] = str(self.ca_file)
            if mtls:
                conf["ssl.certificate.location"] = str(self.client_cert_file)
                conf["ssl.key.location"] = str(self.client_key_file)
        if protocol.startswith("SASL"):
            user, password = self._credentials(user, password)
            conf.update(
                {"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password}
            )
        return conf

    def _credentials(self, user: str | None, password: str | None) -> tuple[str, str]:
        if user is None:
            user = next(iter(self.users))
        if password is None:
            password = self.users[user]
        return user, password

    def write_client_properties(
        self, path: Path | str, protocol: str = "PLAINTEXT", **kw: Any
    ) -> Path:
        """Write :meth:`client_config` to a file, for tools' ``--command-config`` etc."""
        path = Path(path)
        _write_properties(path, self.client_config(protocol, **kw))
        return path

    # ------------------------------------------------------------------ topics & tools

    def admin(self) -> ClusterAdmin:
        """The admin backend (confluent-kafka, or Kafka's TopicCommand as a fallback)."""
        with self._admin_lock:
            if self._admin is None:
                self._admin = make_admin(self.bootstrap_servers, self.run_java_tool)
            return self._admin

    def create_topic(
        self,
        name: str,
        partitions: int = 3,
        replication_factor: int | None = None,
        config: Mapping[str, object] | None = None,
        *,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> str:
        """Create ``name`` (RF defaults to min(3, brokers)) and wait until every partition
        has a leader. Returns the name, for chaining."""
        rf = replication_factor if replication_factor is not None else min(3, self.num_brokers)
        admin = self.admin()
        admin.create_topic(
            name, partitions, rf, {k: str(v) for k, v in (config or {}).items()}, timeout
        )
        if wait:
            wait_for_topic(admin, name, partitions, timeout, bootstrap=self.bootstrap_servers)
        return name

    def delete_topic(self, name: str, *, wait: bool = True, timeout: float = 30.0) -> None:
        admin = self.admin()
        admin.delete_topic(name, timeout)
        if wait:
            wait_for_topic(
                admin, name, None, timeout, exists=False, bootstrap=self.bootstrap_servers
            )

    def wait_for_topic(
        self, name: str, partitions: int | None = None, timeout: float = 30.0
    ) -> None:
        """Block until ``name`` exists with (at least ``partitions``) led partitions."""
        wait_for_topic(self.admin(), name, partitions, timeout, bootstrap=self.bootstrap_servers)

    def broker_ids(self, timeout: float = 5.0) -> set[int] | None:
        """Broker ids in the cluster metadata right now (None without confluent-kafka)."""
        return self.admin().broker_ids(timeout)

    def wait_for_brokers(self, node_ids: Iterable[int], timeout: float = 30.0) -> None:
        """Wait until the metadata lists exactly ``node_ids`` (e.g. after a kill)."""
        want = set(node_ids)
        seen: list[set[int] | None] = []

        def check() -> bool:
            ids = self.broker_ids(timeout=2.0)
            seen.append(ids)
            return ids is None or ids == want

        if not process.wait_until(check, timeout, interval=0.25):
            raise TimeoutError(
                f"metadata still lists brokers {seen[-1] if seen else '?'} after "
                f"{timeout:.0f}s, expected {sorted(want)}"
            )

    def run_java_tool(
        self,
        main_class: str,
        *args: str,
        timeout: float = 120.0,
        input: str | None = None,
        check: bool = True,
        heap_mb: int = 256,
    ) -> subprocess.CompletedProcess[str]:
        """Run a Java main class from the cluster's jars, e.g.
        ``run_java_tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server",
        cluster.bootstrap_servers, "--topic", t, "--from-beginning", "--max-messages", "3")``.

        Output is text; the tool's log4j output goes to stderr at WARN.
        """
        if self.base_dir is None:
            raise RuntimeError("the cluster has not been started")
        argv = [*self._java_argv(main_class, heap_mb), *args]
        proc = process.run(argv, cwd=self.base_dir, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, argv, output=proc.stdout, stderr=proc.stderr
            )
        return proc
