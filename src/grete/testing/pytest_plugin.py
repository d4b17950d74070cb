"""pytest fixtures for a real Kafka cluster.

Enable with ``pytest_plugins = ["grete.testing.pytest_plugin"]`` in a conftest.py.

Fixtures:

* ``kafka_cluster`` (session): a 3-node :class:`~grete.testing.KafkaCluster`, or an
  :class:`~grete.testing.ExternalKafkaCluster` when ``KAFKA_BOOTSTRAP`` is set (then
  fault injection and secured listeners skip the test);
* ``kafka_bootstrap`` (session): its PLAINTEXT bootstrap string;
* ``topic``: a fresh, uniquely named topic (3 partitions, RF min(3, brokers));
* ``topic_factory``: ``topic_factory(partitions=3, replication_factor=None, config=None)``
  for tests needing several or differently shaped topics.

Environment: ``KAFKA_BOOTSTRAP`` (use an existing cluster), ``GRETE_KAFKA_VERSION``
(e.g. 3.9.1 for compatibility runs), ``GRETE_KAFKA_BROKERS`` (node count, default 3),
``GRETE_KEEP_KAFKA=1`` (keep broker dirs and logs). Tests using these fixtures are
marked ``integration`` automatically.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import NoReturn

import pytest

from .cluster import KafkaCluster
from .external import ExternalKafkaCluster
from .jars import DEFAULT_KAFKA_VERSION

__all__ = ["kafka_bootstrap", "kafka_cluster", "topic", "topic_factory"]

AnyCluster = KafkaCluster | ExternalKafkaCluster
TopicFactory = Callable[..., str]

_CLUSTER_FIXTURES = {"kafka_cluster", "kafka_bootstrap", "topic", "topic_factory"}
_started: list[KafkaCluster] = []


def _skip(reason: str) -> NoReturn:
    pytest.skip(reason)


@pytest.fixture(scope="session")
def kafka_cluster(request: pytest.FixtureRequest) -> Iterator[AnyCluster]:
    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        yield ExternalKafkaCluster(external, on_unsupported=_skip)
        return
    cluster = KafkaCluster(
        num_brokers=int(os.environ.get("GRETE_KAFKA_BROKERS", "3")),
        version=os.environ.get("GRETE_KAFKA_VERSION", DEFAULT_KAFKA_VERSION),
    )
    cluster.start()
    _started.append(cluster)
    try:
        yield cluster
    finally:
        _started.remove(cluster)
        # Keep the logs of a failed run: the report printed their paths.
        failed = request.session.testsfailed > 0
        cluster.close(keep_dirs=True if failed else None)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_cluster: AnyCluster) -> str:
    return kafka_cluster.bootstrap_servers


def _unique_name(request: pytest.FixtureRequest) -> str:
    # Readable in broker logs, unique across runs against a shared external cluster.
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:120].strip("-.")
    return f"{base or 'topic'}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic_factory(
    kafka_cluster: AnyCluster, request: pytest.FixtureRequest
) -> Generator[TopicFactory, None, None]:
    created: list[str] = []

    def make(
        partitions: int = 3,
        replication_factor: int | None = None,
        config: Mapping[str, object] | None = None,
        name: str | None = None,
    ) -> str:
        topic_name = name or _unique_name(request)
        kafka_cluster.create_topic(topic_name, partitions, replication_factor, config)
        created.append(topic_name)
        return topic_name

    yield make
    if isinstance(kafka_cluster, ExternalKafkaCluster):
        # Don't litter somebody else's cluster; our own cluster is thrown away anyway,
        # and deleting there would only slow tests down.
        for name in created:
            try:
                kafka_cluster.delete_topic(name, wait=False)
            except Exception as exc:  # a dead broker in the test must not fail teardown
                print(f"could not delete topic {name}: {exc}")


@pytest.fixture
def topic(topic_factory: TopicFactory) -> str:
    return topic_factory()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        report.failed
        and _started
        and _CLUSTER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    ):
        lines = []
        for cluster in _started:
            for broker in cluster.brokers:
                state = "running" if broker.is_running else "stopped"
                lines.append(f"broker {broker.node_id} ({state}): {broker.log_path}")
        lines.append("(kept after the session because a test failed)")
        report.sections.append(("Kafka broker logs", "\n".join(lines)))
    return report
