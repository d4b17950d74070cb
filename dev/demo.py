"""The main job of `make demo`: a local Kafka broker and a real produce run.

Starts one KRaft broker from Maven Central's jars, talks to it through grete's
own code (ApiVersions, Metadata), then does what a user would: pipes generated
lines into the ``grete produce`` command line (a real subprocess), looks at the
result with ``grete metadata``, checks the end offsets, and stops the broker.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time

from grete.client import KafkaClient
from grete.protocol import messages as m
from grete.testing.cluster import KafkaCluster

N = 100_000
TOPIC = "grete-demo"
# The same interpreter (the project's venv): `python -m grete` is the `grete` script.
GRETE = [sys.executable, "-m", "grete"]


def show(argv: list[str], stdin_note: str = "") -> None:
    shown = " ".join(["grete", *map(shlex.quote, argv[len(GRETE) :])])
    print(f"\n$ {stdin_note}{shown}", flush=True)


def main() -> int:
    print("starting a one-broker Kafka (KRaft) on 127.0.0.1 ...", flush=True)
    with KafkaCluster(1) as cluster:
        bootstrap = cluster.bootstrap_servers
        print(f"  broker up in {cluster.start_seconds:.1f}s at {bootstrap}")
        cluster.create_topic(TOPIC, partitions=3, replication_factor=1)
        with KafkaClient(bootstrap, client_id="grete-demo") as client:
            node = next(iter(client.brokers))
            conn = client._network.connection(node)
            print(f"\nbroker {node} speaks {len(conn.api_versions)} APIs, among them:")
            for api in (m.PRODUCE, m.METADATA, m.API_VERSIONS, m.INIT_PRODUCER_ID):
                lo, hi = conn.api_versions[api.key]
                print(f"  {api.name:<16} v{lo}-v{hi}  (grete uses v{conn.version(api)})")
            print(f"\ntopics: {sorted(client.topics)}")

            # "user-<n>:event <i>" lines, keyed by user: what `seq | awk` would make.
            lines = b"".join(b"user-%d:event %d\n" % (i % 1000, i) for i in range(N))
            produce = [
                *GRETE,
                "produce",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                TOPIC,
                "--parse-key",
                "--key-separator",
                ":",
                "--header",
                "source=demo",
                # The demo's output may be captured (CI, a log): show progress anyway.
                "--progress",
            ]
            show(produce, f"<{N:,} lines 'user-<n>:event <i>'> | ")
            t0 = time.perf_counter()
            # stderr (progress and summary) goes straight to ours.
            done = subprocess.run(produce, input=lines, timeout=300)
            print(f"(exit status {done.returncode}, {time.perf_counter() - t0:.1f}s wall)")

            metadata = [*GRETE, "metadata", "--bootstrap-server", bootstrap, "--topic", TOPIC]
            show(metadata)
            shown = subprocess.run(metadata, timeout=60)

            perf = [
                *GRETE,
                "perf",
                "--bootstrap-server",
                bootstrap,
                "--topic",
                TOPIC,
                "--num-records",
                "50000",
                "--record-size",
                "100",
                "--print-interval-ms",
                "1000",
            ]
            show(perf)
            timed = subprocess.run(perf, timeout=300)

            # Independent check, through the library: the log holds every line
            # of the produce run plus the perf run's records.
            client.update_cluster()
            ends = client.topics[TOPIC].latest_available_offsets()
            total = sum(ends.values())
            ok = (
                done.returncode == 0
                and shown.returncode == 0
                and timed.returncode == 0
                and total == N + 50_000
            )
            print(f"\nend offsets {ends}: {total:,} messages in the log, expected {N + 50_000:,}")
            print("OK: every acknowledged message is in the log" if ok else "MISMATCH")
    print("broker stopped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
