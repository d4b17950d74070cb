"""A real Apache Kafka cluster (KRaft, combined broker+controller nodes) on 127.0.0.1.

Each node is a plain ``java -cp <jars>/* kafka.Kafka server.properties`` process with
its own temp dir, ports and log file. Nothing is shared with any installed Kafka and
nothing outlives the Python process (see :mod:`grete.testing.process`).

This module holds the cluster's lifecycle (start, close), addresses, client
configurations and topic tools; a node is a :class:`~grete.testing.broker.Broker`,
and what it runs with (listeners, ``server.properties``, log4j2, JVM flags) is
written by :mod:`grete.testing.node_config`. Their public names are importable
from here too.
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
from .broker import Broker, KafkaStartError, PortInUseError
from .jars import DEFAULT_KAFKA_VERSION, ensure_kafka_jars, find_java
from .node_config import (
    _JVM_FLAGS,
    _LISTENERS,
    _PROXIED,
    CLIENT_PROTOCOLS,
    SASL_MECHANISMS,
    SCRAM_MECHANISMS,
    _log4j2_properties,
    _write_properties,
    server_properties,
)
from .proxy import FaultProxy
from .tls import TlsFiles, generate_tls_files

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

DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-secret", "bob": "bob-secret"}


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

    ``proxied=True`` adds a PROXIED (PLAINTEXT) listener to every node, fronted by a
    :class:`~grete.testing.FaultProxy` (:attr:`Broker.proxy`) whose port it
    advertises: a client bootstrapped on :attr:`proxied_bootstrap_servers` only ever
    connects through the proxies. The proxies outlive broker restarts and are closed
    by :meth:`close`.
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
        proxied: bool = False,
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
        self.proxied = proxied
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
            listeners = (*_LISTENERS, _PROXIED) if self.proxied else _LISTENERS
            # Proxied: one more port per node, for its proxy (not a broker listener).
            per_node = len(listeners) + (1 if self.proxied else 0)
            ports = process.free_ports(self.num_brokers * per_node)
            for index in range(self.num_brokers):
                node_id = index + 1
                chunk = ports[index * per_node : index * per_node + len(listeners)]
                directory = self.base_dir / f"node-{node_id}"
                directory.mkdir()
                broker = Broker(self, node_id, dict(zip(listeners, chunk, strict=True)), directory)
                self.brokers.append(broker)
                if self.proxied:
                    # Bound now, before any config names its port or a broker starts.
                    broker.proxy = FaultProxy(
                        "127.0.0.1",
                        broker.port(_PROXIED),
                        listen_port=ports[(index + 1) * per_node - 1],
                    )
            for broker in self.brokers:
                _write_properties(broker.config_path, server_properties(self, broker))
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
        for broker in self.brokers:
            if broker.proxy is not None:
                try:
                    broker.proxy.close()
                except RuntimeError as exc:  # its thread hung: still remove the dirs
                    log.warning("%s", exc)
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
    def proxied_bootstrap_servers(self) -> str:
        """The nodes' proxies (``proxied=True``): every connection of a client
        bootstrapped here goes through them, metadata included."""
        proxies = [b.proxy for b in self.brokers]
        if not self.proxied or not proxies:
            raise RuntimeError("needs a started KafkaCluster(..., proxied=True)")
        return ",".join(p.address for p in proxies if p is not None)

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
