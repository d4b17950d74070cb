"""One node of a test cluster: a combined broker+controller JVM that can be
started, stopped and killed on the same ports and data dir.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import process
from .node_config import _JVM_FLAGS

if TYPE_CHECKING:
    from .cluster import KafkaCluster
    from .proxy import FaultProxy

log = logging.getLogger("grete.testing")

_STARTED_MARKER = "Kafka Server started"


class KafkaStartError(RuntimeError):
    """A broker did not start (or restart); the message carries its log tail."""


class PortInUseError(KafkaStartError):
    """A port the broker must listen on is taken by another process."""


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
        self.proxy: FaultProxy | None = None
        """With ``KafkaCluster(proxied=True)``: the proxy in front of this node's
        PROXIED listener, whose port that listener advertises. Owned by the cluster:
        it outlives restarts and is not among :attr:`ports` (the broker never binds it)."""
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
