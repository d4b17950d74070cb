"""The ``grete`` command line against the real cluster, run as a user runs it:
``python -m grete`` in a subprocess, lines on stdin; confluent-kafka reads back."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from grete.partitioners import partition_id_for_key

from ._consume import read_first

pytestmark = pytest.mark.integration

Consumed = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]]]


GRETE = [sys.executable, "-m", "grete"]


def run_cli(
    *args: str, stdin: bytes = b"", timeout: float = 180
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*GRETE, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def run_on(
    command: str, bootstrap: str, topic: str, *args: str, stdin: bytes = b"", timeout: float = 180
) -> subprocess.CompletedProcess[bytes]:
    """``grete <command> --bootstrap-server <bootstrap> --topic <topic> <args>``."""
    return run_cli(
        command,
        "--bootstrap-server",
        bootstrap,
        "--topic",
        topic,
        *args,
        stdin=stdin,
        timeout=timeout,
    )


def consume(bootstrap: str, topic: str, count: int, partitions: int = 3) -> list[Consumed]:
    """(partition, key, value, headers) of the first ``count`` messages, with
    confluent-kafka (an independent reader); bounded by a 30 s deadline."""
    return [
        (msg.partition(), msg.key(), msg.value(), list(msg.headers() or []))
        for msg in read_first(
            bootstrap, topic, count, partitions=partitions, group_prefix="grete-cli-test"
        )
    ]


def lines(n: int, fmt: str = "key-{i}:value-{i}") -> bytes:
    return "".join(fmt.format(i=i) + "\n" for i in range(n)).encode()


def test_produce_background_keys_and_headers(kafka_bootstrap: str, topic: str) -> None:
    n = 3000
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--parse-key",
        "--key-separator",
        ":",
        "--header",
        "source=cli",
        "--header",
        "run=1",
        stdin=lines(n),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert proc.stdout == b""
    assert f"{n:,} of {n:,} messages acknowledged" in err
    assert "errors: none" in err
    assert "\r" not in err  # stderr is a pipe here: no progress line
    got = consume(kafka_bootstrap, topic, n)
    assert len(got) == n
    assert {(k, v) for _, k, v, _ in got} == {
        (f"key-{i}".encode(), f"value-{i}".encode()) for i in range(n)
    }
    for partition, key, _, headers in got:
        assert headers == [("source", b"cli"), ("run", b"1")]
        # The default partitioner places keys as the Java client does.
        assert key is not None and partition == partition_id_for_key(key, 3)


def test_produce_sync_in_chunks(kafka_bootstrap: str, topic: str, tmp_path: Path) -> None:
    # Two files and stdin ("-") in turn; --sync with chunks that do not divide evenly.
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_bytes(lines(700, "a-{i}"))
    second.write_bytes(lines(300, "b-{i}").replace(b"\n", b"\r\n"))
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--sync",
        "--chunk-size",
        "333",
        "--acks",
        "1",
        "--compression",
        "gzip",
        str(first),
        str(second),
        "-",
        stdin=lines(10, "c-{i}"),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "1,010 of 1,010 messages acknowledged" in err
    got = consume(kafka_bootstrap, topic, 1010)
    values = sorted(v for _, _, v, _ in got if v is not None)
    expected = sorted(
        [f"a-{i}".encode() for i in range(700)]
        + [f"b-{i}".encode() for i in range(300)]
        + [f"c-{i}".encode() for i in range(10)]
    )
    assert values == expected
    assert all(k is None and h == [] for _, k, _, h in got)


def test_key_separator_via_property(kafka_bootstrap: str, topic: str) -> None:
    # Kafka's console-producer spelling: --property parse.key / key.separator.
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=::",
        stdin=b"k1::v1::x\nk2::\n::v3\n",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = {(k, v) for _, k, v, _ in consume(kafka_bootstrap, topic, 3)}
    assert got == {(b"k1", b"v1::x"), (b"k2", b""), (b"", b"v3")}


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_one_oversized_message_fails_alone(
    kafka_bootstrap: str, topic_factory: Callable[..., str], mode: str
) -> None:
    topic = topic_factory(config={"max.message.bytes": 1000})
    body = [f"line-{i}" for i in range(20)]
    body.insert(7, "x" * 5000)  # line 8: over the topic's max.message.bytes
    stdin = "".join(line + "\n" for line in body).encode()
    extra = ["--sync", "--chunk-size", "5"] if mode == "sync" else []
    proc = run_on("produce", kafka_bootstrap, topic, *extra, stdin=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "20 of 21 messages acknowledged" in err
    assert "errors: 1 message(s) failed" in err
    failures = [line for line in err.splitlines() if line.strip().startswith("1 x ")]
    assert len(failures) == 1 and "(first at line 8)" in failures[0], err
    assert "Traceback" not in err
    got = consume(kafka_bootstrap, topic, 20)
    assert sorted(v for _, _, v, _ in got if v) == sorted(f"line-{i}".encode() for i in range(20))


def test_line_without_separator_fails_but_others_go(kafka_bootstrap: str, topic: str) -> None:
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--parse-key",
        "--key-separator",
        ":",
        stdin=b"a:1\nno separator\nb:2\n",
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert "1 x no key separator on the line (first at line 2)" in err
    assert {(k, v) for _, k, v, _ in consume(kafka_bootstrap, topic, 2)} == {
        (b"a", b"1"),
        (b"b", b"2"),
    }


def test_forced_progress_line(kafka_bootstrap: str, topic: str) -> None:
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--progress",
        stdin=lines(500),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "\r500 read, 500 acknowledged, 0 failed" in err


def test_metadata_json_end_offsets(kafka_cluster: Any, kafka_bootstrap: str, topic: str) -> None:
    n = 1234
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--partitioner",
        "round-robin",
        stdin=lines(n, "v{i}"),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    # Per-partition "last offset" lines of the summary: end offset - 1.
    summary = {}
    for line in proc.stderr.decode().splitlines():
        if line.strip().startswith("partition "):
            words = line.replace(",", "").replace(":", "").split()
            summary[int(words[1])] = (int(words[2]), int(words[-1]))
    assert sum(count for count, _ in summary.values()) == n

    proc = run_on("metadata", kafka_bootstrap, topic, "--json")
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert {b["id"] for b in doc["brokers"]} >= {1}
    assert all(b["host"] == "127.0.0.1" for b in doc["brokers"])
    [entry] = doc["topics"]
    assert entry["name"] == topic
    parts = {p["partition"]: p for p in entry["partitions"]}
    assert sorted(parts) == [0, 1, 2]
    rf = min(3, len(doc["brokers"]))
    for pid, p in parts.items():
        assert p["leader"] in p["replicas"] and len(p["replicas"]) == rf
        assert set(p["isr"]) <= set(p["replicas"])
        count, last = summary[pid]
        assert p["end_offset"] == count == last + 1
    assert sum(p["end_offset"] for p in parts.values()) == n

    text = run_on("metadata", kafka_bootstrap, topic)
    assert text.returncode == 0
    assert f'topic "{topic}": 3 partition(s)' in text.stdout.decode()

    topics = run_cli("topics", "--bootstrap-server", kafka_bootstrap, "--json")
    rows = {r["name"]: r for r in json.loads(topics.stdout)}
    assert rows[topic]["partitions"] == 3 and rows[topic]["replication_factor"] == rf


def test_metadata_unknown_topic_is_an_error(kafka_bootstrap: str) -> None:
    name = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    proc = run_on("metadata", kafka_bootstrap, name)
    assert proc.returncode == 1
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith("grete: error: ") and f"{name!r} does not exist" in line
    # Looking did not create it.
    topics = run_cli("topics", "--bootstrap-server", kafka_bootstrap, "--json")
    assert name not in {r["name"] for r in json.loads(topics.stdout)}


@pytest.mark.parametrize("mode", ["background", "sync"])
def test_perf_json(kafka_bootstrap: str, topic: str, mode: str) -> None:
    n = 20_000 if mode == "background" else 5_000
    extra = ["--sync", "--chunk-size", "1000"] if mode == "sync" else []
    proc = run_on(
        "perf",
        kafka_bootstrap,
        topic,
        "--num-records",
        str(n),
        "--record-size",
        "100",
        "--json",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)  # nothing else on stdout
    assert result["mode"] == mode
    assert result["records"] == n and result["errors"] == 0
    assert result["bytes"] == 100 * n
    assert 0 < result["elapsed_s"] < 120
    assert result["records_per_sec"] == pytest.approx(n / result["elapsed_s"], rel=0.01)
    lat = result["latency_ms"]
    assert 0 < lat["avg"] <= lat["max"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"] < 120_000
    assert len(consume(kafka_bootstrap, topic, n)) == n


def test_perf_throttled_with_periodic_lines(kafka_bootstrap: str, topic: str) -> None:
    proc = run_on(
        "perf",
        kafka_bootstrap,
        topic,
        "--num-records",
        "600",
        "--record-size",
        "10",
        "--throughput",
        "400",
        "--print-interval-ms",
        "300",
    )
    out = proc.stdout.decode().splitlines()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "records/sec" in out[0] and "ms max latency." in out[0]
    assert out[-1].startswith("600 records sent, ") and "ms 99.9th." in out[-1]
    rate = float(out[-1].split(", ")[1].split()[0])
    assert rate < 400 * 1.1  # throttled (1.5 s at 400/s)


def test_sasl_ssl_with_command_config(kafka_cluster: Any, topic: str, tmp_path: Path) -> None:
    bootstrap = kafka_cluster.bootstrap("SASL_SSL")  # skips on an external cluster
    user = "alice"
    password = kafka_cluster.users[user]
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        f'    username="{user}" password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={kafka_cluster.ca_file}\n"
    )
    proc = run_cli(
        "produce",
        "--bootstrap-server",
        bootstrap,
        "--command-config",
        str(config),
        "--topic",
        topic,
        stdin=lines(100, "secure-{i}"),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    got = consume(kafka_cluster.bootstrap_servers, topic, 100)
    assert sorted(v for _, _, v, _ in got if v) == sorted(
        f"secure-{i}".encode() for i in range(100)
    )

    meta = run_cli(
        "metadata", "--bootstrap-server", bootstrap, "--command-config", str(config), "--json"
    )
    assert meta.returncode == 0, meta.stderr.decode()
    ports = {b["port"] for b in json.loads(meta.stdout)["brokers"]}
    assert ports <= {int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")}

    config.write_text(config.read_text().replace(password, "wrong-password"))
    bad = run_cli("topics", "--bootstrap-server", bootstrap, "--command-config", str(config))
    assert bad.returncode == 1
    lines_ = bad.stderr.decode().splitlines()
    assert len(lines_) == 1 and lines_[0].startswith("grete: error: ")
    assert "authentication failed" in lines_[0]
    assert "wrong-password" not in bad.stderr.decode()


def test_producer_config_refused_by_the_producer_is_a_usage_error(
    kafka_bootstrap: str, topic: str
) -> None:
    proc = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--producer-property",
        "max.in.flight.requests.per.connection=9",
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("grete: error: max_in_flight")


def test_progress_by_default_only_on_a_terminal(kafka_bootstrap: str, topic: str) -> None:
    import os
    import pty
    import threading

    # stderr is a terminal here (a pty): the progress line appears unasked.
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        # Read while the process writes, so a full pty buffer never blocks it;
        # ends at EOF (EIO once every writer has closed the pty).
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [*GRETE, "produce", "--bootstrap-server", kafka_bootstrap, "--topic", topic],
            input=lines(200),
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
        )
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    err = b"".join(chunks).decode()
    assert proc.returncode == 0, err
    assert "\r200 read, 200 acknowledged, 0 failed" in err
    assert "200 of 200 messages acknowledged" in err

    quiet = run_on(
        "produce",
        kafka_bootstrap,
        topic,
        "--no-progress",
        stdin=lines(10),
    )
    assert quiet.returncode == 0 and b"\r" not in quiet.stderr


def test_interrupt_prints_the_summary(kafka_bootstrap: str, topic: str) -> None:
    import signal

    proc = subprocess.Popen(
        [*GRETE, "produce", "--bootstrap-server", kafka_bootstrap, "--topic", topic],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"a\nb\nc\n")
    proc.stdin.flush()
    # Wait (bounded) until the three lines are in the log, then Ctrl-C.
    assert len(consume(kafka_bootstrap, topic, 3)) == 3
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    text = err.decode()
    assert "interrupted: 3 of 3 messages acknowledged" in text
    assert "Traceback" not in text
