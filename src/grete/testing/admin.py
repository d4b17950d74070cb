"""Topic administration for the test cluster, behind one small interface.

Today it uses confluent-kafka's AdminClient when importable (fast, in-process) and
falls back to Kafka's own ``TopicCommand`` from the same jars. It is a separate seam
so that grete's own admin requests can replace both later without touching callers.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = [
    "ClusterAdmin",
    "ConfluentAdmin",
    "JavaToolAdmin",
    "TopicError",
    "broker_views",
    "make_admin",
]

log = logging.getLogger("grete.testing.admin")

JavaRunner = Callable[..., "subprocess.CompletedProcess[str]"]


class TopicError(RuntimeError):
    """A topic could not be created, deleted or observed in time."""


class ClusterAdmin(Protocol):
    """What the harness needs from an admin client."""

    def broker_ids(self, timeout: float) -> set[int] | None:
        """Ids of the brokers in the metadata, or None if this backend cannot tell."""
        ...

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str],
        timeout: float,
    ) -> None: ...

    def delete_topic(self, name: str, timeout: float) -> None: ...

    def topic_partitions(self, name: str, timeout: float) -> dict[int, int] | None:
        """partition -> leader id (-1 if leaderless), or None if the topic is unknown."""
        ...


class ConfluentAdmin:
    """confluent-kafka (librdkafka) based admin; the default when it is installed."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from confluent_kafka.admin import AdminClient

        self._config = dict(config)
        # librdkafka logs every refused connection while brokers restart; route that to
        # logging (captured by pytest) instead of spraying stderr.
        self._config.setdefault("logger", logging.getLogger("grete.testing.librdkafka"))
        self._admin = AdminClient(self._config)

    def broker_ids(self, timeout: float) -> set[int] | None:
        from confluent_kafka import KafkaException

        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            log.debug("metadata request failed: %s", exc)
            return set()
        return {int(b) for b in md.brokers}

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str],
        timeout: float,
    ) -> None:
        # confluent-kafka's stubs forget to re-export NewTopic; it is public API.
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined,unused-ignore]

        new = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=dict(config),
        )
        futures = self._admin.create_topics(
            [new], operation_timeout=timeout, request_timeout=timeout
        )
        try:
            futures[name].result(timeout=timeout + 5)
        except Exception as exc:
            raise TopicError(f"creating topic {name!r} failed: {exc}") from exc

    def delete_topic(self, name: str, timeout: float) -> None:
        futures = self._admin.delete_topics(
            [name], operation_timeout=timeout, request_timeout=timeout
        )
        try:
            futures[name].result(timeout=timeout + 5)
        except Exception as exc:
            raise TopicError(f"deleting topic {name!r} failed: {exc}") from exc

    def topic_partitions(self, name: str, timeout: float) -> dict[int, int] | None:
        from confluent_kafka import KafkaException

        try:
            md = self._admin.list_topics(topic=name, timeout=timeout)
        except KafkaException:
            return None
        topic = md.topics.get(name)
        if topic is None or topic.error is not None:
            return None
        return {int(p.id): int(p.leader) for p in topic.partitions.values()}


class JavaToolAdmin:
    """Fallback through ``org.apache.kafka.tools.TopicCommand``: slow (a JVM per call) but
    dependency-free."""

    _PARTITION = re.compile(r"Partition:\s*(\d+)\s+Leader:\s*(-?\d+|none)")

    def __init__(self, bootstrap: str, run_java_tool: JavaRunner) -> None:
        self._bootstrap = bootstrap
        self._run = run_java_tool

    def _topics(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return self._run(
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            self._bootstrap,
            *args,
            timeout=timeout + 30,  # JVM start-up on top of the operation
            check=False,
        )

    def broker_ids(self, timeout: float) -> set[int] | None:
        return None

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str],
        timeout: float,
    ) -> None:
        args = [
            "--create",
            "--topic",
            name,
            "--partitions",
            str(partitions),
            "--replication-factor",
            str(replication_factor),
        ]
        for key, value in config.items():
            args += ["--config", f"{key}={value}"]
        proc = self._topics(*args, timeout=timeout)
        if proc.returncode != 0:
            raise TopicError(f"creating topic {name!r} failed:\n{proc.stdout}{proc.stderr}")

    def delete_topic(self, name: str, timeout: float) -> None:
        proc = self._topics("--delete", "--topic", name, timeout=timeout)
        if proc.returncode != 0:
            raise TopicError(f"deleting topic {name!r} failed:\n{proc.stdout}{proc.stderr}")

    def topic_partitions(self, name: str, timeout: float) -> dict[int, int] | None:
        proc = self._topics("--describe", "--topic", name, timeout=timeout)
        if proc.returncode != 0:
            return None
        found = self._PARTITION.findall(proc.stdout)
        if not found:
            return None
        return {int(p): (-1 if leader == "none" else int(leader)) for p, leader in found}


def make_admin(
    bootstrap: str,
    run_java_tool: JavaRunner | None,
    librdkafka_config: Mapping[str, Any] | None = None,
) -> ClusterAdmin:
    """The best available admin backend for ``bootstrap``."""
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        if run_java_tool is None:
            raise TopicError(
                "topic administration needs confluent-kafka (pip install 'grete[test]')"
            ) from None
        return JavaToolAdmin(bootstrap, run_java_tool)
    return ConfluentAdmin({"bootstrap.servers": bootstrap, **(librdkafka_config or {})})


def wait_for_topic(
    admin: ClusterAdmin,
    name: str,
    partitions: int | None,
    timeout: float,
    *,
    exists: bool = True,
    bootstrap: str | None = None,
) -> None:
    """Block until ``name`` exists with every partition led (or, with ``exists=False``,
    until it is gone). Bounded by ``timeout``. With ``bootstrap`` (a PLAINTEXT
    listener), every broker must agree, not only the one the admin asked."""
    deadline = time.monotonic() + timeout
    last: dict[int, int] | None = None
    lagging: dict[int, dict[int, int] | None] = {}
    while True:
        remaining = max(0.5, deadline - time.monotonic())
        last = admin.topic_partitions(name, timeout=min(5.0, remaining))
        if _as_wanted(last, partitions, exists):
            if bootstrap is None:
                return
            # The admin asked one broker; the others apply the same metadata a
            # little later, and a client that asks one of them next would still
            # see the old state (a CI failure: the topic fixture "ready", then a
            # fresh AdminClient saw no partitions).
            views = broker_views(bootstrap, name, min(5.0, remaining))
            lagging = {
                node: view
                for node, view in views.items()
                if not _as_wanted(view, partitions, exists)
            }
            if views and not lagging:
                return
        if time.monotonic() >= deadline:
            state = "missing" if last is None else f"partition leaders {last}"
            if lagging:
                state += f"; brokers not caught up: {lagging}"
            want = "ready" if exists else "deleted"
            raise TopicError(f"topic {name!r} not {want} after {timeout:.0f}s ({state})")
        time.sleep(0.1)


def _as_wanted(view: dict[int, int] | None, partitions: int | None, exists: bool) -> bool:
    if not exists:
        return view is None
    if not view:
        return False
    return (partitions is None or len(view) >= partitions) and all(
        leader >= 0 for leader in view.values()
    )


def broker_views(bootstrap: str, name: str, timeout: float) -> dict[int, dict[int, int] | None]:
    """What every broker of the cluster says about ``name`` (partition -> leader, or
    None where it does not know the topic), asked of each broker directly.

    Uses grete's own client: neither librdkafka nor TopicCommand lets one choose the
    broker a metadata request goes to. Empty when the cluster cannot be reached."""
    from grete.client import KafkaClient
    from grete.errors import KafkaError
    from grete.protocol import messages as m

    body = {"topics": [{"name": name}], "allow_auto_topic_creation": False}
    ms = max(100.0, timeout * 1000)
    try:
        with KafkaClient(
            bootstrap,
            client_id="grete-testing",
            socket_timeout_ms=ms,
            connect_timeout_ms=ms,
            allow_auto_create_topics=False,
        ) as client:
            network = client.cluster.network
            pending = {node: network.send(node, m.METADATA, body) for node in client.brokers}
            network.wait(pending.values(), timeout)
            return {node: _topic_view(p.result(), name) for node, p in pending.items()}
    except KafkaError as exc:
        log.debug("per-broker metadata failed: %s", exc)
        return {}


def _topic_view(body: Mapping[str, Any], name: str) -> dict[int, int] | None:
    for topic in body["topics"]:
        if topic["name"] == name and topic["error_code"] == 0:
            return {p["partition_index"]: p["leader_id"] for p in topic["partitions"]}
    return None
