"""The Kafka test cluster itself: start-up, fault injection, every listener, cleanup.

Unit tests at the top need no broker; the rest share the session cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from grete.testing import HarnessSetupError, KafkaCluster, ensure_kafka_jars
from grete.testing import jars as jars_module
from grete.testing.admin import broker_views
from grete.testing.jars import POM_XML

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- no broker needed


def test_checked_in_pom_matches_generated() -> None:
    assert (REPO / "dev" / "kafka" / "pom.xml").read_text() == POM_XML


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(HarnessSetupError, match=r"Java 17\+ is required.*openjdk-17"):
        ensure_kafka_jars("4.1.1")


def test_old_java_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: "/usr/bin/java")
    monkeypatch.setattr(jars_module, "java_major_version", lambda java: 11)
    with pytest.raises(HarnessSetupError, match=r"Java 17 or newer.*Java 11"):
        ensure_kafka_jars("4.1.1")


def test_missing_maven_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "mvn" else real_which(name)
    )
    if real_which("java") is None:
        pytest.skip("no java here")
    with pytest.raises(HarnessSetupError, match=r"Maven.*apt-get install maven"):
        ensure_kafka_jars("4.1.1", tmp_path / "jars")


def test_cached_jars_need_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("java") is None:
        pytest.skip("no java here")
    (tmp_path / jars_module.MARKER_NAME).write_text("kafka 4.1.1\n")
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if name == "mvn" else real_which(name)
    )
    assert ensure_kafka_jars("4.1.1", tmp_path) == tmp_path


def test_jars_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRETE_KAFKA_JARS", str(tmp_path))
    assert jars_module.default_jars_dir("3.9.1") == tmp_path / "kafka-3.9.1"
    monkeypatch.delenv("GRETE_KAFKA_JARS")
    assert jars_module.default_jars_dir("3.9.1") == REPO / "dev" / "kafka" / "jars-3.9.1"


# ---------------------------------------------------------------- real cluster


def _produce_consume(conf: dict[str, Any], topic: str, count: int = 5) -> list[bytes]:
    """Round-trip ``count`` messages with confluent-kafka using ``conf``."""
    from confluent_kafka import Consumer, Producer

    producer = Producer({**conf, "acks": "all", "enable.idempotence": True})
    for i in range(count):
        producer.produce(topic, value=f"m{i}".encode(), key=b"k")
    assert producer.flush(20) == 0, "produce did not complete"
    consumer = Consumer(
        {
            **conf,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg.value())
        return sorted(got)
    finally:
        consumer.close()


def _expected(count: int = 5) -> list[bytes]:
    return sorted(f"m{i}".encode() for i in range(count))


@pytest.mark.integration
def test_cluster_has_three_brokers(kafka_cluster: KafkaCluster) -> None:
    if isinstance(kafka_cluster, KafkaCluster):
        assert kafka_cluster.start_seconds is not None
        print(
            f"cold start of {kafka_cluster.num_brokers} brokers: {kafka_cluster.start_seconds:.1f}s"
        )
        assert all(b.is_running for b in kafka_cluster.brokers)
    assert kafka_cluster.broker_ids() == {1, 2, 3}


@pytest.mark.integration
def test_topic_fixture_is_ready(kafka_cluster: KafkaCluster, topic: str) -> None:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": kafka_cluster.bootstrap_servers}).list_topics(
        topic, timeout=10
    )
    partitions = md.topics[topic].partitions
    assert len(partitions) == 3
    assert all(len(p.replicas) == 3 and p.leader >= 0 for p in partitions.values())
    # Not only the broker librdkafka happened to ask: every broker knows it.
    views = broker_views(kafka_cluster.bootstrap_servers, topic, 10)
    assert set(views) == {1, 2, 3}
    assert all(v is not None and len(v) == 3 for v in views.values()), views


@pytest.mark.integration
def test_kill_and_restart_broker(kafka_cluster: KafkaCluster, topic: str) -> None:
    victim = kafka_cluster.brokers[-1]
    old_pid = victim.pid
    victim.kill()
    assert not victim.is_running
    kafka_cluster.wait_for_brokers({1, 2}, timeout=20)
    # Two of three nodes still hold the quorum and min.insync.replicas=2.
    conf = kafka_cluster.librdkafka_config("PLAINTEXT")
    conf["bootstrap.servers"] = kafka_cluster.brokers[0].address()
    assert _produce_consume(conf, topic) == _expected()

    victim.start()
    assert victim.is_running and victim.pid != old_pid
    kafka_cluster.wait_for_brokers({1, 2, 3}, timeout=30)
    assert victim.port("PLAINTEXT") == int(
        kafka_cluster.bootstrap_servers.split(",")[-1].split(":")[1]
    )


@pytest.mark.integration
def test_graceful_stop_and_start(kafka_cluster: KafkaCluster) -> None:
    broker = kafka_cluster.brokers[1]
    t0 = time.monotonic()
    broker.stop(timeout=30)
    stop_s = time.monotonic() - t0
    assert not broker.is_running
    kafka_cluster.wait_for_brokers({1, 3}, timeout=20)
    broker.start()
    kafka_cluster.wait_for_brokers({1, 2, 3}, timeout=30)
    print(f"graceful stop took {stop_s:.1f}s")
    assert "shut down completed" in broker.log_path.read_text()


@pytest.mark.integration
def test_sasl_ssl_scram_sha512(kafka_cluster: KafkaCluster, topic: str) -> None:
    user, password = "alice", kafka_cluster.users["alice"]
    conf = {
        "bootstrap.servers": kafka_cluster.bootstrap("SASL_SSL"),
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": str(kafka_cluster.ca_file),
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    }
    assert _produce_consume(conf, topic) == _expected()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SASL_PLAINTEXT", "PLAIN"), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_SSL", "PLAIN")],
)
def test_sasl_mechanisms(
    kafka_cluster: KafkaCluster, topic: str, protocol: str, mechanism: str
) -> None:
    conf = kafka_cluster.librdkafka_config(protocol, mechanism=mechanism, user="bob")
    assert _produce_consume(conf, topic, 2) == _expected(2)


@pytest.mark.integration
def test_ssl_mutual_tls(kafka_cluster: KafkaCluster, topic: str) -> None:
    conf = kafka_cluster.librdkafka_config("SSL", mtls=True)
    assert conf["ssl.certificate.location"] == str(kafka_cluster.client_cert_file)
    assert _produce_consume(conf, topic, 2) == _expected(2)


@pytest.mark.integration
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_fails(kafka_cluster: KafkaCluster, mechanism: str) -> None:
    from confluent_kafka import KafkaError, Producer

    errors: list[KafkaError] = []
    conf = kafka_cluster.librdkafka_config(
        "SASL_PLAINTEXT", mechanism=mechanism, user="alice", password="wrong"
    )
    producer = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "no error reported for a wrong password"
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


@pytest.mark.integration
def test_java_console_consumer_reads_what_we_produced(
    kafka_cluster: KafkaCluster, topic: str
) -> None:
    from confluent_kafka import Producer

    producer = Producer(kafka_cluster.librdkafka_config("PLAINTEXT"))
    for i in range(3):
        producer.produce(topic, value=f"hello-{i}".encode(), partition=0)
    assert producer.flush(20) == 0
    props = kafka_cluster.write_client_properties(
        kafka_cluster.base_dir / "consumer-sasl-ssl.properties",  # type: ignore[operator]
        "SASL_SSL",
        mechanism="SCRAM-SHA-256",
    )
    out = kafka_cluster.run_java_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer",
        "--bootstrap-server",
        kafka_cluster.bootstrap("SASL_SSL"),
        "--consumer.config",
        str(props),
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        "3",
        "--timeout-ms",
        "20000",
        timeout=60,
    )
    assert out.stdout.split() == ["hello-0", "hello-1", "hello-2"]


@pytest.mark.integration
def test_delete_topic(kafka_cluster: KafkaCluster) -> None:
    name = kafka_cluster.create_topic(f"to-delete-{uuid.uuid4().hex[:6]}", partitions=1)
    kafka_cluster.delete_topic(name)
    assert kafka_cluster.admin().topic_partitions(name, timeout=5) is None
    views = broker_views(kafka_cluster.bootstrap_servers, name, 10)
    assert views == {1: None, 2: None, 3: None}


# ---------------------------------------------------------------- separate clusters


@pytest.mark.integration
def test_failed_start_reports_log_tail(tmp_path: Path) -> None:
    """A broker that cannot start (here: bad config) fails fast with its log."""
    cluster = KafkaCluster(
        1, broker_config={"num.network.threads": "not-a-number"}, startup_timeout=60
    )
    t0 = time.monotonic()
    with pytest.raises(Exception, match=r"num.network.threads") as info:
        cluster.start()
    assert time.monotonic() - t0 < 60
    assert cluster.base_dir is not None and not cluster.base_dir.exists()
    del info


@pytest.mark.integration
def test_port_in_use_is_reported(kafka_cluster: KafkaCluster, tmp_path: Path) -> None:
    from grete.testing import PortInUseError
    from grete.testing.cluster import Broker

    # A second node wanting a live broker's ports must refuse with a clear message.
    broker = kafka_cluster.brokers[0]
    clone = Broker(kafka_cluster, 99, broker.ports, tmp_path)
    with pytest.raises(PortInUseError, match=str(broker.port())):
        clone.start()


def _java_kafka_pids() -> list[str]:
    proc = subprocess.run(
        ["pgrep", "-f", "kafka.Kafka .*grete-kafka-"], capture_output=True, text=True
    )
    return proc.stdout.split()


@pytest.mark.integration
def test_close_leaves_no_java_process() -> None:
    if shutil.which("pgrep") is None:
        pytest.skip("no pgrep")
    cluster = KafkaCluster(1)
    with cluster:
        pids = [str(b.pid) for b in cluster.brokers]
        assert set(pids) <= set(_java_kafka_pids())
        base = cluster.base_dir
    assert not set(pids) & set(_java_kafka_pids())
    assert base is not None and not base.exists()


_ORPHAN_SCRIPT = """
import time
from pathlib import Path
from grete.testing import process
child = process.spawn(["sleep", "600"], cwd=Path("."), stdout=None)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_children_die_with_a_sigkilled_parent() -> None:
    """PR_SET_PDEATHSIG: even `kill -9` of the Python process takes its children along.

    Brokers are started through the same ``process.spawn``; a ``sleep`` child keeps this
    test at well under a second instead of a JVM start.
    """
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert Path(f"/proc/{pid}").exists()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
