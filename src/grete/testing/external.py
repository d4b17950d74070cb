"""An already running cluster (``KAFKA_BOOTSTRAP=host:port``) behind the KafkaCluster API.

Only what needs no control over the brokers works: bootstrap strings for PLAINTEXT,
topic administration, Java tools if jars are around. Fault injection and the secured
listeners raise :class:`UnsupportedOperation` (the pytest plugin turns it into a skip).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from .admin import ClusterAdmin, make_admin, wait_for_topic

__all__ = ["ExternalKafkaCluster", "UnsupportedOperation"]


class UnsupportedOperation(NotImplementedError):
    """The operation needs a cluster started by grete.testing."""


def _raise(reason: str) -> NoReturn:
    raise UnsupportedOperation(reason)


class ExternalKafkaCluster:
    """Same topic/bootstrap interface as :class:`~grete.testing.KafkaCluster` for a
    cluster somebody else runs."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        num_brokers: int | None = None,
        on_unsupported: Callable[[str], NoReturn] = _raise,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._on_unsupported = on_unsupported
        self._admin: ClusterAdmin | None = None
        self.version: str | None = None
        self.users: dict[str, str] = {}
        ids = self.broker_ids() if num_brokers is None else None
        self.num_brokers = num_brokers if num_brokers is not None else max(1, len(ids or ()))

    def __enter__(self) -> ExternalKafkaCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> ExternalKafkaCluster:
        return self

    def close(self, keep_dirs: bool | None = None) -> None:
        """Nothing to stop: the cluster is not ours."""

    def bootstrap(self, protocol: str = "PLAINTEXT") -> str:
        if protocol.upper() != "PLAINTEXT":
            self._on_unsupported(f"external cluster at {self.bootstrap_servers}: only PLAINTEXT")
        return self.bootstrap_servers

    def librdkafka_config(self, protocol: str = "PLAINTEXT", **_: Any) -> dict[str, str]:
        return {"bootstrap.servers": self.bootstrap(protocol), "security.protocol": "PLAINTEXT"}

    def client_config(self, protocol: str = "PLAINTEXT", **_: Any) -> dict[str, str]:
        return self.librdkafka_config(protocol)

    @property
    def brokers(self) -> NoReturn:
        self._on_unsupported("fault injection needs a cluster started by grete.testing")

    def broker(self, node_id: int) -> NoReturn:
        self._on_unsupported("fault injection needs a cluster started by grete.testing")

    @property
    def log_paths(self) -> list[Any]:
        return []

    def run_java_tool(
        self, main_class: str, *args: str, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        self._on_unsupported("Java tools need a cluster started by grete.testing")

    def admin(self) -> ClusterAdmin:
        if self._admin is None:
            self._admin = make_admin(self.bootstrap_servers, None)
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
        rf = replication_factor if replication_factor is not None else min(3, self.num_brokers)
        self.admin().create_topic(
            name, partitions, rf, {k: str(v) for k, v in (config or {}).items()}, timeout
        )
        if wait:
            wait_for_topic(
                self.admin(), name, partitions, timeout, bootstrap=self.bootstrap_servers
            )
        return name

    def delete_topic(self, name: str, *, wait: bool = True, timeout: float = 30.0) -> None:
        self.admin().delete_topic(name, timeout)
        if wait:
            wait_for_topic(
                self.admin(), name, None, timeout, exists=False, bootstrap=self.bootstrap_servers
            )

    def wait_for_topic(
        self, name: str, partitions: int | None = None, timeout: float = 30.0
    ) -> None:
        wait_for_topic(self.admin(), name, partitions, timeout, bootstrap=self.bootstrap_servers)

    def broker_ids(self, timeout: float = 5.0) -> set[int] | None:
        return self.admin().broker_ids(timeout)

    def wait_for_brokers(self, node_ids: Iterable[int], timeout: float = 30.0) -> None:
        self._on_unsupported("fault injection needs a cluster started by grete.testing")
