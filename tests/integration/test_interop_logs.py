"""Batches written by another client decode in grete.

confluent-kafka (librdkafka) produces with every codec; grete then reads the
broker's own log segment from disk and decodes it with
:func:`grete.protocol.records.decode_batches`. Record batches v2 are stored as
the producer wrote them (the broker only assigns offsets), so this checks
grete against another implementation's encoder, through a real broker.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer as ConfluentProducer

from grete.protocol.compression import CompressionType
from grete.protocol.records import decode_batches
from grete.testing.cluster import KafkaCluster

CODECS = {
    "none": CompressionType.NONE,
    "gzip": CompressionType.GZIP,
    "snappy": CompressionType.SNAPPY,
    "lz4": CompressionType.LZ4,
    "zstd": CompressionType.ZSTD,
}


def _segment(cluster: KafkaCluster, topic: str) -> Path:
    for broker in cluster.brokers:
        path = broker.data_dir / f"{topic}-0" / "00000000000000000000.log"
        if path.exists() and path.stat().st_size > 0:
            return path
    raise AssertionError(f"no log segment for {topic}-0")


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_confluent_batches_decode_in_grete(
    kafka_cluster: KafkaCluster, topic_factory: object, codec: str
) -> None:
    if not isinstance(kafka_cluster, KafkaCluster):
        pytest.skip("needs the harness's own cluster (reads broker log files)")
    name = topic_factory(partitions=1, replication_factor=1)  # type: ignore[operator]
    expected = [
        (f"key-{i}".encode(), f"value {i} of {codec} ".encode() * (i % 7 + 1), [("h", b"%d" % i)])
        for i in range(300)
    ]
    producer = ConfluentProducer(
        {
            "bootstrap.servers": kafka_cluster.bootstrap_servers,
            "compression.type": codec,
            "linger.ms": 20,
            "enable.idempotence": True,
        }
    )
    for key, value, headers in expected:
        producer.produce(name, value=value, key=key, headers=headers, partition=0)
    assert producer.flush(30) == 0

    deadline = time.monotonic() + 30
    records = []
    while time.monotonic() < deadline:  # the segment is flushed to the page cache lazily
        data = _segment(kafka_cluster, name).read_bytes()
        batches = decode_batches(data, allow_partial_tail=True)
        records = [r for b in batches for r in b.records]
        if len(records) >= len(expected):
            break
        time.sleep(0.2)
    assert len(records) == len(expected)
    assert {b.compression for b in batches} == {CODECS[codec]}
    assert all(b.producer_id >= 0 for b in batches)  # librdkafka's idempotent batches
    for i, (record, (key, value, headers)) in enumerate(zip(records, expected, strict=True)):
        assert record.offset == i
        assert (record.key, record.value, list(record.headers)) == (key, value, headers)
