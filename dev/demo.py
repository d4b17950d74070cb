"""The main job of `make demo`: a local Kafka broker and a real produce run.

Starts one KRaft broker from Maven Central's jars, talks to it through grete's
own code (ApiVersions, Metadata), produces messages with the synchronous
producer, checks the end offsets with ListOffsets, prints what happened and
stops the broker.
"""

from __future__ import annotations

import sys
import time

from grete.client import KafkaClient
from grete.partitioners import hashing_partitioner
from grete.producer import Message, Producer
from grete.protocol import messages as m
from grete.testing.cluster import KafkaCluster

N = 100_000


def main() -> int:
    print("starting a one-broker Kafka (KRaft) on 127.0.0.1 ...", flush=True)
    with KafkaCluster(1) as cluster:
        print(f"  broker up in {cluster.start_seconds:.1f}s at {cluster.bootstrap_servers}")
        cluster.create_topic("grete-demo", partitions=3, replication_factor=1)
        with KafkaClient(cluster.bootstrap_servers, client_id="grete-demo") as client:
            node = next(iter(client.brokers))
            conn = client._network.connection(node)
            print(f"\nbroker {node} speaks {len(conn.api_versions)} APIs, among them:")
            for api in (m.PRODUCE, m.METADATA, m.API_VERSIONS, m.INIT_PRODUCER_ID):
                lo, hi = conn.api_versions[api.key]
                print(f"  {api.name:<16} v{lo}-v{hi}  (grete uses v{conn.version(api)})")
            print(f"\ntopics: {sorted(client.topics)}")
            topic = client.topics["grete-demo"]
            producer = Producer(
                client.cluster,
                topic,
                partitioner=hashing_partitioner,
                required_acks=-1,
                batch_size=1000,
            )
            messages = [(b"user-%d" % (i % 1000), b"event %d" % i) for i in range(N)]
            messages.append(Message(b"with headers", key=b"k", headers={"source": b"demo"}))
            t0 = time.perf_counter()
            results = producer.produce(messages)
            elapsed = time.perf_counter() - t0
            print(
                f"\nproduced {len(results):,} messages (acks=all, idempotent) "
                f"in {elapsed:.2f}s: {len(results) / elapsed:,.0f} msgs/s"
            )
            counts: dict[int, int] = {}
            for r in results:
                counts[r.partition] = counts.get(r.partition, 0) + 1
            body = client._network.request(
                node,
                m.LIST_OFFSETS,
                {
                    "replica_id": -1,
                    "topics": [
                        {
                            "name": topic.name,
                            "partitions": [
                                {"partition_index": p, "timestamp": -1}
                                for p in sorted(topic.partitions)
                            ],
                        }
                    ],
                },
            )
            print("per partition: acknowledged / end offset from ListOffsets")
            ok = True
            for p in body["topics"][0]["partitions"]:
                pid, end = p["partition_index"], p["offset"]
                print(f"  partition {pid}: {counts.get(pid, 0):>7,} / {end:>7,}")
                ok = ok and counts.get(pid, 0) == end
            print("\nOK: every acknowledged message is in the log" if ok else "\nMISMATCH")
    print("broker stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
