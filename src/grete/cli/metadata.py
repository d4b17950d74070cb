"""``grete metadata`` and ``grete topics``: what the cluster's metadata says."""

from __future__ import annotations

import argparse
import json
from typing import Any

from grete.cli.common import make_client
from grete.client import KafkaClient
from grete.cluster import Topic
from grete.errors import KafkaError, UnknownTopicOrPartition


def add_arguments(p: argparse.ArgumentParser, *, offsets: bool) -> None:
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="only this topic (repeatable; default: every topic)",
    )
    p.add_argument(
        "--exclude-internal", action="store_true", help="leave out internal topics (__...)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    if offsets:
        p.add_argument(
            "--no-offsets",
            dest="offsets",
            action="store_false",
            help="skip the end offsets (no ListOffsets requests)",
        )


def _topics(client: KafkaClient, args: argparse.Namespace) -> list[Topic]:
    if args.topic:
        missing = [name for name in args.topic if name not in client.topics]
        if missing:
            raise UnknownTopicOrPartition(f"topic {missing[0]!r} does not exist")
        names = list(dict.fromkeys(args.topic))
    else:
        names = sorted(client.topics)
    topics = [client.topics[name] for name in names]
    if args.exclude_internal:
        topics = [t for t in topics if not t.is_internal]
    return topics


def _rf(topic: Topic) -> int:
    return max((len(p.replicas) for p in topic.partitions.values()), default=0)


def _connect(args: argparse.Namespace) -> KafkaClient:
    # Looking at metadata must never create a topic as a side effect.
    client, _ = make_client(args, allow_auto_create_topics=False)
    return client


def run_metadata(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        cluster = client.cluster
        topics = _topics(client, args)
        entries: list[dict[str, Any]] = []
        for topic in topics:
            entry: dict[str, Any] = {
                "name": topic.name,
                "internal": topic.is_internal,
                "partitions": [],
            }
            ends: dict[int, int] = {}
            if args.offsets:
                try:
                    ends = topic.latest_available_offsets()
                except KafkaError as exc:
                    # One topic without a leader should not hide the others.
                    entry["offsets_error"] = f"{type(exc).__name__}: {exc}"
            for pid in sorted(topic.partitions):
                p = topic.partitions[pid]
                entry["partitions"].append(
                    {
                        "partition": pid,
                        "leader": p.leader.id if p.leader else None,
                        "leader_epoch": p.leader_epoch,
                        "replicas": [b.id for b in p.replicas],
                        "isr": [b.id for b in p.isr],
                        "end_offset": ends.get(pid),
                    }
                )
            entries.append(entry)
        brokers = [
            {
                "id": b.id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "controller": b.id == cluster.controller_id,
            }
            for b in sorted(cluster.brokers.values(), key=lambda b: b.id)
        ]
    if args.json:
        doc = {
            "cluster_id": cluster.cluster_id,
            "controller_id": cluster.controller_id,
            "brokers": brokers,
            "topics": entries,
        }
        print(json.dumps(doc, indent=2))
        return 0
    print(f"cluster {cluster.cluster_id}: {len(brokers)} broker(s), {len(entries)} topic(s)")
    print("brokers:")
    for b in brokers:
        mark = "  (controller)" if b["controller"] else ""
        rack = f"  rack {b['rack']}" if b["rack"] else ""
        print(f"  {b['id']:>4}  {b['host']}:{b['port']}{rack}{mark}")
    for entry in entries:
        parts = entry["partitions"]
        rf = max((len(p["replicas"]) for p in parts), default=0)
        internal = ", internal" if entry["internal"] else ""
        print(f'topic "{entry["name"]}": {len(parts)} partition(s), RF {rf}{internal}')
        if "offsets_error" in entry:
            print(f"  end offsets unavailable: {entry['offsets_error']}")
        for p in parts:
            end = "" if p["end_offset"] is None else f"  end offset {p['end_offset']:,}"
            leader = "none" if p["leader"] is None else p["leader"]
            print(
                f"  partition {p['partition']:>3}  leader {leader}"
                f"  replicas {_ids(p['replicas'])}  isr {_ids(p['isr'])}{end}"
            )
    return 0


def _ids(ids: list[int]) -> str:
    return "[" + ",".join(map(str, ids)) + "]"


def run_topics(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        topics = _topics(client, args)
        rows = [
            {
                "name": t.name,
                "partitions": len(t.partitions),
                "replication_factor": _rf(t),
                "internal": t.is_internal,
            }
            for t in topics
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len(t.name) for t in topics] + [5])
    print(f"{'TOPIC':<{width}}  PARTITIONS  RF")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['partitions']:>10}  {r['replication_factor']:>2}")
    return 0
