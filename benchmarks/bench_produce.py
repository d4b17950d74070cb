"""Produce throughput and latency: grete against confluent-kafka, aiokafka, kafka-python, Java.

One command prints one Markdown table per section (``--sections throughput,latency``).
Throughput sends N messages as fast as each client goes: grete's synchronous
``Producer.produce(list)`` (grete-b200/-b2000) and its ``BackgroundProducer`` with
``produce()`` per message and ``flush()`` (grete-bg, futures dropped and deliveries
counted from ``metrics()``; grete-bg-futures, every future kept and checked), its
``KafkaProducer`` (grete-kp: the topic named per call, otherwise as grete-bg), the
others in their usual style. The ``multi*`` cases spread the messages round-robin over
10 topics through one producer (grete-kp against confluent-kafka's ``produce(topic,
value, key)``); the clients bound to one topic sit those cases out.
Latency sends at a fixed rate (``--rate``, 10,000 msgs/s, for ``--duration`` seconds)
and reports p50/p99/max from the produce call to the delivery callback.

Every (case, client) run goes to its own fresh topic and runs in its own child
process, so a client's peak RSS is its own and one client's leftovers (threads,
buffers, open batches) cannot slow the next one.

    .venv/bin/python benchmarks/bench_produce.py --bootstrap 127.0.0.1:19092 --quick
    .venv/bin/python benchmarks/bench_produce.py                 # starts a 3-broker cluster
    .venv/bin/python benchmarks/bench_produce.py --clients grete,java --cases acks1,lz4
    .venv/bin/python benchmarks/bench_produce.py --bootstrap 127.0.0.1:19092 --sections latency
    .venv/bin/python benchmarks/bench_produce.py --clients grete-b200 --cases acks1 \\
        --profile /tmp/grete-prof                               # pyinstrument of grete

Every row also gives the client's CPU time a message: user + system, every thread of
the child (``getrusage(RUSAGE_SELF)``) over the timed section, in microseconds (the
median of the runs with ``--repeat``). The brokers share the machine's cores, so msgs/s
swings between runs; CPU a message is the steadier figure. (Not for java: its timed
section is inside the JVM.)

``--grete-src DIR`` (repeatable) adds a row per grete client run with grete imported
from DIR (a source tree's ``src``), labelled ``client@<tree>``, in the same rounds:

    git worktree add /tmp/grete-base c6da480
    .venv/bin/python benchmarks/bench_produce.py --clients grete-bg,grete-b2000 \\
        --cases acks1,keyed --repeat 3 --grete-src /tmp/grete-base/src

A run only gets a speed if every message was acknowledged by the client (callbacks,
futures or results counted) *and* the topic's end offsets add up to N; otherwise the
row says FAILED and why. Speed is measured inside the child from the first send to
the last acknowledgement; connecting and the first metadata fetch happen before it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

# A sibling module: the script's own directory is on sys.path, for children too.
import _latency

MiB = 1024 * 1024

# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    name: str
    n: int
    size: int
    acks: int = 1
    key_size: int = 0
    compression: str = "none"
    # "random" bytes where content does not matter (no codec); JSON-like text of
    # random words where a codec runs, because identical or random payloads would
    # make compression look absurdly good or pointless.
    payload: str = "random"
    # More than one: message i goes to topic i % topics (round-robin), through one
    # producer that names the topic on every call (grete-kp, confluent).
    topics: int = 1

    def describe(self) -> str:
        parts = [
            f"{self.n:,} x {self.size} B",
            "acks=all" if self.acks == -1 else f"acks={self.acks}",
        ]
        if self.key_size:
            parts.append(f"{self.key_size} B keys, murmur2")
        if self.compression != "none":
            parts.append(f"{self.compression}, JSON-like")
        if self.topics > 1:
            parts.append(f"round-robin over {self.topics} topics")
        return ", ".join(parts)


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("acks1", 300_000, 100),
        Case("acksall", 300_000, 100, acks=-1),
        Case("keyed", 300_000, 100, key_size=16),
        Case("1k", 100_000, 1024),
        Case("lz4", 300_000, 100, compression="lz4", payload="json"),
        Case("zstd", 300_000, 100, compression="zstd", payload="json"),
        # One producer, the topic named per call (acks=all: KafkaProducer's default).
        Case("multi", 300_000, 100, acks=-1, topics=10),
        Case("multi-keyed", 300_000, 100, acks=-1, key_size=16, topics=10),
        Case("multi-acks1", 300_000, 100, topics=10),
    )
}

# Clients that take the topic per call: the only ones that run cases of many topics.
MULTI_TOPIC_CLIENTS = ("grete-kp", "confluent")

CLIENTS = (
    "grete-b200",
    "grete-b2000",
    "grete-bg",
    "grete-bg-futures",
    "grete-kp",
    "confluent",
    "aiokafka",
    "aiokafka-batch",
    "kafka-python",
    "java",
)

# ---------------------------------------------------------------------------- payloads

# A small vocabulary: real logs repeat words, which is what codecs feed on.
_WORDS_TEXT = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "order payment user session click view cart checkout refund login logout search "
    "product price amount currency region status pending shipped delivered error warning "
    "info debug latency retry timeout success failure mobile desktop"
)
_WORDS = _WORDS_TEXT.split()
_EVENTS = ("click", "view", "purchase", "signup", "login", "logout", "search", "refund")


def json_payload(rnd: random.Random, size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes with realistic, varying content."""
    head = (
        f'{{"id":{rnd.randrange(10**9)},"ts":{1_700_000_000_000 + rnd.randrange(10**9)},'
        f'"user":"u{rnd.randrange(100_000)}","event":"{rnd.choice(_EVENTS)}","msg":"'
    )
    tail = '"}'
    room = size - len(head) - len(tail)
    words: list[str] = []
    length = -1
    while length < room:
        w = rnd.choice(_WORDS)
        words.append(w)
        length += len(w) + 1
    body = " ".join(words)[: max(room, 0)]
    return (head + body + tail).encode()[:size]


def make_values(case: Case, seed: int, count: int | None = None) -> list[bytes]:
    rnd = random.Random(seed)
    count = case.n if count is None else count
    if case.payload == "json":
        return [json_payload(rnd, case.size) for _ in range(count)]
    return [rnd.randbytes(case.size) for _ in range(count)]


def make_keys(case: Case, seed: int) -> list[bytes]:
    # 16-byte ids from a 100k key space: repeats like real entity keys do.
    rnd = random.Random(seed + 1)
    width = case.key_size - 5
    return [
        f"user-{rnd.randrange(100_000):0{width}d}".encode()[: case.key_size] for _ in range(case.n)
    ]


# ---------------------------------------------------------------------------- child side


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_now() -> tuple[float, float]:
    """This process's user and system CPU seconds so far, every thread's included
    (getrusage(RUSAGE_SELF): librdkafka's threads, grete's sender, aiokafka's loop).
    Each client runs in a child of its own, so this is the client's CPU alone."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


@dataclass
class Outcome:
    acked: int = 0
    seconds: float = 0.0
    base_rss: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Timer:
    """Marks the timed section, so each runner's setup stays outside it."""

    def __init__(self, profile: str | None) -> None:
        self.profile = profile
        self.t0 = 0.0
        self.seconds = 0.0
        self.base_rss = 0
        # CPU seconds (user, system) over the timed section, all threads.
        self.cpu = (0.0, 0.0)
        self._cpu0 = (0.0, 0.0)
        self._profiler: Any = None

    def start(self) -> None:
        self.base_rss = rss_now()
        if self.profile:
            from pyinstrument import Profiler

            self._profiler = Profiler(interval=0.001)
            self._profiler.start()
        self._cpu0 = cpu_now()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self.t0
        user, system = cpu_now()
        self.cpu = (user - self._cpu0[0], system - self._cpu0[1])
        if self._profiler is not None:
            self._profiler.stop()
            write_profile(self._profiler, self.profile or "")


def write_profile(profiler: Any, base: str) -> None:
    """Save pyinstrument's call tree plus a flat self-time table (what to optimise)."""
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    Path(base + ".txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    Path(base + ".html").write_text(profiler.output_html())
    session = profiler.last_session
    root = session.root_frame()
    total = session.duration or 1.0
    self_time: dict[str, float] = {}
    cum_time: dict[str, float] = {}

    def walk(frame: Any, on_stack: frozenset[str]) -> None:
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        if frame.is_synthetic:  # "[self]"/"[await]" leaves: already in the parent's self time
            return
        self_time[name] = self_time.get(name, 0.0) + frame.total_self_time
        if name not in on_stack:  # recursion must not count a frame's time twice
            cum_time[name] = cum_time.get(name, 0.0) + frame.time
        for child in frame.children:
            walk(child, on_stack | {name})

    walk(root, frozenset())
    lines = [f"duration {total:.2f}s", "", "top self time:"]
    for name, t in sorted(self_time.items(), key=lambda kv: -kv[1])[:25]:
        lines.append(f"{100 * t / total:6.1f}%  {t:7.3f}s  {name}")
    lines += ["", "top cumulative time:"]
    for name, t in sorted(cum_time.items(), key=lambda kv: -kv[1])[:40]:
        lines.append(f"{100 * t / total:6.1f}%  {t:7.3f}s  {name}")
    Path(base + ".flat.txt").write_text("\n".join(lines) + "\n")


def run_grete(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    from grete.client import KafkaClient
    from grete.partitioners import hashing_partitioner, random_partitioner
    from grete.producer import ProduceFailureError, Producer
    from grete.protocol.compression import CompressionType

    client = KafkaClient(spec["bootstrap"])
    try:
        topic = client.topics[spec["topic"]]
        producer = Producer(
            client.cluster,
            topic,
            partitioner=hashing_partitioner if keys else random_partitioner,
            required_acks=case.acks,
            batch_size=spec["batch_size"],
            compression=CompressionType[case.compression.upper()],
        )
        # Keyed: an iterator of (key, value) tuples, read once (no 300k-tuple list).
        messages: Any = zip(keys, values, strict=True) if keys else values
        timer.start()
        try:
            results = producer.produce(messages)
            # produce() returns only when every message was acknowledged (else it
            # raises): count them without building 300k result objects, which
            # confluent's callback counting does not pay either. The topic's end
            # offsets are checked against N by the parent, as for every client.
            acked, error = len(results), None
        except ProduceFailureError as exc:
            acked = sum(1 for r in exc.results if r is not None and r.offset >= 0)
            error = str(exc)
        timer.stop()
        producer.close()
        return Outcome(acked=acked, error=error)
    finally:
        client.close()


# Queue bounds of the clients that queue per message (confluent-kafka, grete-bg):
# the whole run fits, so neither blocks (or raises BufferError) on its own limit.
_QUEUE_BYTES = 2 << 30


def _queue_messages(case: Case) -> int:
    return max(case.n + 1000, 100_000)


def run_grete_bg(
    spec: dict[str, Any],
    case: Case,
    values: list[bytes],
    keys: list[bytes] | None,
    timer: Timer,
    keep_futures: bool = False,
) -> Outcome:
    """grete's BackgroundProducer used like confluent-kafka: produce() per message,
    flush(). grete-bg drops the futures, as confluent-kafka's run keeps nothing, and
    counts deliveries from metrics() (confluent-kafka's run: an on_delivery callback);
    grete-bg-futures keeps every future and checks each (what an application that
    holds 300,000 of them pays: the cyclic GC walks them)."""
    from grete import BackgroundProducer, KafkaClient
    from grete.protocol.compression import CompressionType

    client = KafkaClient(spec["bootstrap"])
    try:
        producer = BackgroundProducer(
            client.cluster,
            client.topics[spec["topic"]],
            required_acks=case.acks,
            compression=CompressionType[case.compression.upper()],
            linger_ms=5,
            batch_size=10_000,
            # The same queue bounds as confluent-kafka gets below (the whole run fits).
            max_queued_messages=_queue_messages(case),
            max_buffer_bytes=_QUEUE_BYTES,
            # The default partitioner: murmur2 for keys (as Java), sticky without.
            partitioner=None,
        )
        produce = producer.produce
        futures: list[Any] = []
        timer.start()
        # No callbacks: a callback makes grete visit every message when its batch
        # completes, which futures (or counting from metrics()) avoid.
        if keep_futures:
            if keys:
                futures = [produce(v, partition_key=keys[i]) for i, v in enumerate(values)]
            else:
                futures = [produce(v) for v in values]
        elif keys:
            for i, v in enumerate(values):
                produce(v, partition_key=keys[i])
        else:
            for v in values:
                produce(v)
        remaining = producer.flush(spec["timeout"])
        timer.stop()
        metrics = producer.metrics()
        producer.close(10)
        error = None
        if keep_futures:
            # done() first: exception() on a still-pending future would wait for it.
            acked = sum(1 for f in futures if f.done() and f.exception() is None)
            failed = next((f for f in futures if f.done() and f.exception() is not None), None)
            error = repr(failed.exception()) if failed is not None else None
        else:
            acked = metrics["messages_sent"]
            if metrics["errors"]:
                error = f"{metrics['errors']} message(s) failed"
        if remaining and error is None:
            error = f"{remaining} message(s) unreported after flush"
        return Outcome(acked=acked, error=error)
    finally:
        client.close()


def topic_per_message(spec: dict[str, Any], n: int) -> list[str]:
    """Round-robin over the run's topics: message i to topic i % len(topics). Built
    before the clock starts, for every client alike."""
    topics: list[str] = spec["topics"]
    return [topics[i % len(topics)] for i in range(n)]


def run_grete_kp(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    """grete's KafkaProducer: one producer, the topic named on every produce() call,
    then flush(); the options and the counting of grete-bg (deliveries from metrics(),
    futures dropped). One topic: the same loop as grete-bg's with the topic added."""
    from grete import KafkaClient, KafkaProducer  # type: ignore[attr-defined,unused-ignore]
    from grete.protocol.compression import CompressionType

    client = KafkaClient(spec["bootstrap"])
    try:
        topics: list[str] = spec["topics"]
        for name in topics:
            client.topics[name]  # metadata fetched outside the timing
        producer = KafkaProducer(
            client,
            required_acks=case.acks,
            compression=CompressionType[case.compression.upper()],
            linger_ms=5,
            batch_size=10_000,
            max_queued_messages=_queue_messages(case),
            max_buffer_bytes=_QUEUE_BYTES,
            partitioner=None,
        )
        produce = producer.produce
        if len(topics) > 1:
            per_message = topic_per_message(spec, len(values))
            timer.start()
            if keys:
                for i, v in enumerate(values):
                    produce(per_message[i], v, keys[i])
            else:
                for i, v in enumerate(values):
                    produce(per_message[i], v)
        else:
            topic = topics[0]
            timer.start()
            if keys:
                for i, v in enumerate(values):
                    produce(topic, v, keys[i])
            else:
                for v in values:
                    produce(topic, v)
        remaining = producer.flush(spec["timeout"])
        timer.stop()
        metrics = producer.metrics()
        producer.close(10)
        error = None
        acked = metrics["messages_sent"]
        if metrics["errors"]:
            error = f"{metrics['errors']} message(s) failed"
        if remaining and error is None:
            error = f"{remaining} message(s) unreported after flush"
        return Outcome(acked=acked, error=error)
    finally:
        client.close()


def run_confluent(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    from confluent_kafka import Producer

    counts = {"ok": 0, "err": 0}
    first_error: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            counts["ok"] += 1
        else:
            counts["err"] += 1
            if not first_error:
                first_error.append(str(err))

    conf: dict[str, Any] = {
        "bootstrap.servers": spec["bootstrap"],
        "acks": case.acks,
        "compression.type": case.compression,
        # The whole run is queued before flush(); the default 100k limit would make
        # produce() raise BufferError every few thousand messages.
        "queue.buffering.max.messages": _queue_messages(case),
        "queue.buffering.max.kbytes": _QUEUE_BYTES // 1024,
        # Java-compatible key placement, to match grete's hashing_partitioner.
        "partitioner": "murmur2_random",
        "enable.idempotence": case.acks == -1,
        "on_delivery": on_delivery,
    }
    p = Producer(conf)
    topics: list[str] = spec["topics"]
    for name in topics:
        p.list_topics(name, timeout=10)  # connect + metadata outside the timing
    topic = topics[0]
    produce = p.produce
    if len(topics) > 1:
        # The single-topic loop with the topic taken from the round-robin list.
        per_message = topic_per_message(spec, len(values))
        timer.start()
        for i, value in enumerate(values):
            key = keys[i] if keys else None
            while True:
                try:
                    produce(per_message[i], value, key)
                    break
                except BufferError:
                    p.poll(0.1)
            if i % 1000 == 0:
                p.poll(0)  # serve delivery callbacks as a real application would
    else:
        timer.start()
        for i, value in enumerate(values):
            key = keys[i] if keys else None
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:
                    p.poll(0.1)
            if i % 1000 == 0:
                p.poll(0)  # serve delivery callbacks as a real application would
    remaining = p.flush(spec["timeout"])
    timer.stop()
    error = first_error[0] if first_error else None
    if remaining:
        error = f"{remaining} message(s) still queued after flush"
    return Outcome(acked=counts["ok"], error=error)


def _aiokafka_producer(spec: dict[str, Any], case: Case) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=spec["bootstrap"],
        acks="all" if case.acks == -1 else case.acks,
        compression_type=None if case.compression == "none" else case.compression,
        enable_idempotence=case.acks == -1,
    )


async def _aiokafka_send(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    from aiokafka.structs import RecordMetadata

    producer = _aiokafka_producer(spec, case)
    await producer.start()
    try:
        topic = spec["topic"]
        await producer.partitions_for(topic)
        send = producer.send
        timer.start()
        futures = []
        for i, value in enumerate(values):
            futures.append(await send(topic, value, key=keys[i] if keys else None))
        results = await asyncio.gather(*futures, return_exceptions=True)
        timer.stop()
        errors = [r for r in results if not isinstance(r, RecordMetadata)]
        return Outcome(acked=len(results) - len(errors), error=repr(errors[0]) if errors else None)
    finally:
        await producer.stop()


async def _aiokafka_batches(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    from aiokafka.partitioner import DefaultPartitioner

    producer = _aiokafka_producer(spec, case)
    await producer.start()
    try:
        topic = spec["topic"]
        partitions = sorted(await producer.partitions_for(topic))
        timer.start()
        # send_batch needs an explicit partition: keyed messages are grouped with the
        # Java-compatible murmur2 partitioner, unkeyed ones rotate per batch.
        groups: dict[int, list[int]]
        if keys:
            part = DefaultPartitioner()
            groups = {}
            for i, key in enumerate(keys):
                groups.setdefault(part(key, partitions, partitions), []).append(i)
        else:
            groups = {-1: list(range(len(values)))}
        pending: list[tuple[Any, int]] = []
        rotate = 0

        async def flush(batch: Any, partition: int) -> None:
            nonlocal rotate
            if partition < 0:
                partition = partitions[rotate % len(partitions)]
                rotate += 1
            count = batch.record_count()
            pending.append((await producer.send_batch(batch, topic, partition=partition), count))

        for partition, indices in groups.items():
            batch = producer.create_batch()
            for i in indices:
                key = keys[i] if keys else None
                if batch.append(key=key, value=values[i], timestamp=None) is None:
                    await flush(batch, partition)
                    batch = producer.create_batch()
                    batch.append(key=key, value=values[i], timestamp=None)
            if batch.record_count():
                await flush(batch, partition)
        results = await asyncio.gather(*(f for f, _ in pending), return_exceptions=True)
        timer.stop()
        acked = sum(
            c
            for r, (_, c) in zip(results, pending, strict=True)
            if not isinstance(r, BaseException)
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        return Outcome(acked=acked, error=repr(errors[0]) if errors else None)
    finally:
        await producer.stop()


def run_aiokafka(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    return asyncio.run(_aiokafka_send(spec, case, values, keys, timer))


def run_aiokafka_batch(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    return asyncio.run(_aiokafka_batches(spec, case, values, keys, timer))


def run_kafka_python(
    spec: dict[str, Any], case: Case, values: list[bytes], keys: list[bytes] | None, timer: Timer
) -> Outcome:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=spec["bootstrap"].split(","),
        acks="all" if case.acks == -1 else case.acks,
        compression_type=None if case.compression == "none" else case.compression,
        enable_idempotence=case.acks == -1,
    )
    try:
        topic = spec["topic"]
        producer.partitions_for(topic)
        send = producer.send
        timer.start()
        futures = [
            send(topic, value=v, key=keys[i] if keys else None) for i, v in enumerate(values)
        ]
        producer.flush(timeout=spec["timeout"])
        timer.stop()
        acked = sum(1 for f in futures if f.succeeded())
        failed = next((f for f in futures if f.failed()), None)
        return Outcome(acked=acked, error=repr(failed.exception) if failed is not None else None)
    finally:
        producer.close(timeout=10)


RUNNERS: dict[
    str, Callable[[dict[str, Any], Case, list[bytes], list[bytes] | None, Timer], Outcome]
] = {
    "grete": run_grete,
    "grete-bg": run_grete_bg,
    "grete-bg-futures": partial(run_grete_bg, keep_futures=True),
    "grete-kp": run_grete_kp,
    "confluent": run_confluent,
    "aiokafka": run_aiokafka,
    "aiokafka-batch": run_aiokafka_batch,
    "kafka-python": run_kafka_python,
}


def child_main(spec: dict[str, Any]) -> None:
    case = Case(**spec["case"])
    # Same seed for every client: they all send byte-identical data.
    values = make_values(case, spec["seed"])
    if spec.get("section") == "latency":
        try:
            res = _latency.RUNNERS[spec["runner"]](spec, values)
        except Exception as exc:  # the parent reports it as FAILED
            res = {"error": f"{type(exc).__name__}: {exc}"}
        res["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        res["grete_file"] = getattr(sys.modules.get("grete"), "__file__", None)
        print(json.dumps(res), flush=True)
        return
    keys = make_keys(case, spec["seed"]) if case.key_size else None
    timer = Timer(spec.get("profile"))
    runner = RUNNERS[spec["runner"]]
    try:
        out = runner(spec, case, values, keys, timer)
    except Exception as exc:  # the parent reports it as FAILED
        out = Outcome(error=f"{type(exc).__name__}: {exc}")
    out.seconds, out.base_rss = timer.seconds, timer.base_rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    grete = sys.modules.get("grete")
    print(
        json.dumps(
            {
                "acked": out.acked,
                "seconds": out.seconds,
                "base_rss": out.base_rss,
                "peak_rss": peak,
                "cpu_user": timer.cpu[0],
                "cpu_sys": timer.cpu[1],
                # Which source tree the run imported (the parent checks --grete-src's).
                "grete_file": getattr(grete, "__file__", None),
                "error": out.error,
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------------------- parent side


@dataclass
class Row:
    case: str
    client: str
    msgs_s: float | None = None
    mib_s: float | None = None
    seconds: float | None = None
    peak_rss: int | None = None
    base_rss: int | None = None
    note: str = ""
    # The median run's msgs/s, with --repeat > 1: the best run is the least
    # disturbed one, the median what a run usually gives.
    median: float | None = None
    # The client process's CPU (user + system, every thread) over the timed section,
    # per message, in microseconds; with --repeat > 1 the median over the runs (CPU
    # a message moves far less than msgs/s when the brokers share the cores).
    cpu_us: float | None = None
    cpu_sys_us: float | None = None


def run_child(
    argv: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str, str, int, bool]:
    """Run ``argv`` with a hard deadline; return (rc, stdout, stderr, maxrss bytes, timed out).

    wait4() gives the child's own peak RSS even for the JVM, so every client's memory is
    measured the same way.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing else is hit
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        out.seek(0)
        err.seek(0)
        return (
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            usage.ru_maxrss * 1024,
            timed_out,
        )


_JAVA_SUMMARY = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)", re.M)


def java_argv(
    jars: Path, case: Case, bootstrap: str, topic: str, payload_file: Path | None
) -> list[str]:
    java = shutil.which("java") or "java"
    props = [
        f"bootstrap.servers={bootstrap}",
        f"acks={'all' if case.acks == -1 else case.acks}",
        f"compression.type={case.compression}",
    ]
    if case.acks != -1:
        props.append("enable.idempotence=false")  # what Java does anyway when acks != all
    argv = [
        java,
        "-Xmx512m",
        "-cp",
        f"{jars}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(case.n),
        "--throughput",
        "-1",
        "--producer-props",
        *props,
    ]
    if payload_file is not None:
        argv += ["--payload-file", str(payload_file)]
    else:
        argv += ["--record-size", str(case.size)]
    return argv


@dataclass
class LatRow:
    case: str
    client: str
    rate: float | None = None
    p50: float | None = None
    p99: float | None = None
    worst: float | None = None
    peak_rss: int | None = None
    note: str = ""
    cpu_us: float | None = None  # user + system over the paced run, per message
    cpu_sys_us: float | None = None


LATENCY_CLIENTS = ("grete-bg", "confluent", "aiokafka")


def warm_brokers(bench: Bench, seconds: float, quick: bool) -> None:
    """Many small requests for ``seconds`` before anything is measured.

    A broker's JVM keeps compiling its request path for tens of thousands of
    requests: on a fresh 3-broker cluster here, 1,500 Produce requests of 200
    records cost the brokers ~7 s of CPU (a third of it in the C2 compiler
    threads) on the first run and ~1.5 s after about 40,000 requests. A
    client that sends many small requests (grete's seed default, 200 messages
    a batch) would otherwise be measured against a cold broker, and one that
    sends a few large ones (confluent-kafka's 10,000-message batches) would
    not. grete-b200 (many requests) and confluent-kafka (its own request
    versions) take turns, with acks=1 and acks=all, until the time is up."""
    if seconds <= 0:
        return
    print(f"warming up the brokers for {seconds:.0f} s (small requests)...", file=sys.stderr)
    acks1, acksall = CASES["acks1"], CASES["acksall"]
    if quick:
        acks1, acksall = (Case(**{**c.__dict__, "n": c.n // 10}) for c in (acks1, acksall))
    turns = [
        (acks1, "grete-b200"),
        (acks1, "confluent"),
        (acksall, "grete-b200"),
        (acksall, "confluent"),
    ]
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        case, client = turns[done % len(turns)]
        row = bench.run(case, client)
        done += 1
        speed = f"{row.msgs_s:,.0f} msg/s" if row.msgs_s else row.note
        print(f"  warm-up {done:3} {case.name:8} {client:12} {speed}", file=sys.stderr, flush=True)


def latency_cases(rate: int, seconds: float) -> dict[str, Case]:
    n = max(1, int(rate * seconds))
    return {c.name: c for c in (Case("lat-acks1", n, 100), Case("lat-acksall", n, 100, acks=-1))}


def tree_label(tree: Path, taken: set[str]) -> str:
    """A short name for a source tree: its directory (the one above, for ``.../src``)."""
    base = tree.parent.name if tree.name == "src" else tree.name
    label, n = base or "tree", 1
    while label in taken:
        n += 1
        label = f"{base}{n}"
    return label


def has_kafka_producer(tree: Path) -> bool:
    return "KafkaProducer" in (tree / "grete" / "__init__.py").read_text()


def split_client(client: str) -> tuple[str, str]:
    """``grete-bg@grete-base`` -> (``grete-bg``, ``grete-base``); no tree -> ``""``."""
    base, _, label = client.partition("@")
    return base, label


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        bootstrap: str,
        brokers: int,
        jars: Path | None,
        trees: dict[str, Path] | None = None,
    ) -> None:
        self.args = args
        # --grete-src: label -> source tree, for clients named ``grete-...@label``.
        self.trees = trees or {}
        self.bootstrap = bootstrap
        self.brokers = brokers
        self.rf = min(3, brokers)
        self.jars = jars
        from grete.testing.admin import make_admin

        self.admin = make_admin(bootstrap, None)
        self.run_id = uuid.uuid4().hex[:6]
        self.seq = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="grete-bench-"))

    def fresh_topic(self, case: Case, client: str) -> str:
        from grete.testing.admin import wait_for_topic

        self.seq += 1  # repeats of one (case, client) each need their own topic
        safe = re.sub(r"[^A-Za-z0-9._-]", "-", client)
        name = f"bench-{self.run_id}-{case.name}-{safe}-{self.seq}"
        self.admin.create_topic(name, self.args.partitions, self.rf, {}, 30.0)
        wait_for_topic(self.admin, name, self.args.partitions, 30.0)
        return name

    def fresh_topics(self, case: Case, client: str) -> list[str]:
        """``case.topics`` fresh topics for one run (one, for the single-topic cases)."""
        if case.topics == 1:
            return [self.fresh_topic(case, client)]
        return [self.fresh_topic(case, f"{client}-t{t}") for t in range(case.topics)]

    def child_env(self, client: str) -> dict[str, str] | None:
        """The environment of a client's child: a ``@label`` client imports grete
        from that --grete-src tree (PYTHONPATH comes before the editable install)."""
        _, label = split_client(client)
        if not label:
            return None
        path = [str(self.trees[label])]
        if os.environ.get("PYTHONPATH"):
            path.append(os.environ["PYTHONPATH"])
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def wrong_tree(self, client: str, grete_file: str | None) -> str | None:
        """Why a ``@label`` run does not count: it imported grete from elsewhere."""
        _, label = split_client(client)
        if not label or grete_file is None:
            return None
        tree = self.trees[label].resolve()
        if Path(grete_file).resolve().is_relative_to(tree):
            return None
        return f"imported grete from {grete_file}, not {tree}"

    def end_offsets(self, topics: str | list[str]) -> int:
        if isinstance(topics, list):
            return sum(self.end_offsets(t) for t in topics)
        topic = topics
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-{self.run_id}",
                "enable.auto.commit": False,
            }
        )
        try:
            return sum(
                c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(self.args.partitions)
            )
        finally:
            c.close()

    def verify_log(self, topic: str | list[str], n: int) -> str | None:
        """The broker's own count: end offsets must reach N (HW can lag at RF>1)."""
        deadline = time.monotonic() + 15
        while True:
            total = self.end_offsets(topic)
            if total == n or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if total < n:
            return f"broker has only {total:,} of {n:,}"
        if total > n:
            return f"broker has {total:,} records for {n:,} sent (duplicates)"
        return None

    def run(self, case: Case, client: str) -> Row:
        row = Row(case.name, client)
        base, _ = split_client(client)
        if case.topics > 1 and base not in MULTI_TOPIC_CLIENTS:
            row.note = "n/a: one topic per producer"
            return row
        if client == "java" and case.key_size:
            row.note = "n/a: ProducerPerformance sends no keys"
            return row
        if client == "java" and self.jars is None:
            row.note = "n/a: no Kafka jars"
            return row
        topics = self.fresh_topics(case, client)
        topic = topics[0]
        if client == "java":
            assert self.jars is not None
            payload_file = None
            if case.payload == "json":
                # ProducerPerformance draws records at random from this file; a 10k pool of
                # distinct lines keeps batches as varied as the Python clients' data.
                payload_file = self.tmp / f"{case.name}.payloads"
                payload_file.write_bytes(b"\n".join(make_values(case, self.args.seed, 10_000)))
            argv = java_argv(self.jars, case, self.bootstrap, topic, payload_file)
        else:
            runner = "grete" if base.startswith("grete-b2") else base
            spec: dict[str, Any] = {
                "runner": runner,
                "bootstrap": self.bootstrap,
                "topic": topic,
                "topics": topics,
                "case": case.__dict__,
                "seed": self.args.seed,
                "timeout": self.args.timeout,
                "batch_size": int(base.split("-b")[1]) if runner == "grete" else None,
            }
            if self.args.profile and runner == "grete":
                spec["profile"] = str(Path(self.args.profile) / f"{case.name}-{client}")
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        rc, out, err, maxrss, timed_out = run_child(argv, self.args.timeout, self.child_env(client))
        row.peak_rss = maxrss
        if timed_out:
            row.note = f"FAILED: timeout after {self.args.timeout:.0f}s"
            return row
        if client == "java":
            # Progress lines have the same shape as the final summary: take the last one.
            found = list(_JAVA_SUMMARY.finditer(out))
            m = found[-1] if found else None
            if rc != 0 or m is None:
                row.note = f"FAILED: rc={rc} {last_line(err or out)}"
                return row
            acked, rate = int(m.group(1)), float(m.group(2))
            seconds = acked / rate if rate else 0.0
            error = None if "Exception" not in err else last_line(err)
        else:
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            if rc != 0 or not lines:
                row.note = f"FAILED: rc={rc} {last_line(err or out)}"
                return row
            res = json.loads(lines[-1])
            acked, seconds, error = res["acked"], res["seconds"], res["error"]
            row.base_rss = res["base_rss"]
            # Java's CPU is not measured: its timed window is inside the JVM, and the
            # whole process's CPU would add the JVM's start-up and JIT compiling.
            row.cpu_us = (res["cpu_user"] + res["cpu_sys"]) / case.n * 1e6
            row.cpu_sys_us = res["cpu_sys"] / case.n * 1e6
            error = error or self.wrong_tree(client, res.get("grete_file"))
        if acked != case.n or error:
            row.note = f"FAILED: {acked:,}/{case.n:,} acked" + (f"; {error[:120]}" if error else "")
            return row
        problem = self.verify_log(topics, case.n)
        if problem:
            row.note = f"FAILED: {problem}"
            return row
        row.seconds = seconds
        row.msgs_s = case.n / seconds
        row.mib_s = case.n * (case.size + case.key_size) / seconds / MiB
        row.note = "ok"
        return row

    def run_latency(self, case: Case, client: str) -> LatRow:
        row = LatRow(case.name, client)
        topic = self.fresh_topic(case, client)
        spec: dict[str, Any] = {
            "section": "latency",
            "runner": split_client(client)[0],
            "bootstrap": self.bootstrap,
            "topic": topic,
            "case": case.__dict__,
            "seed": self.args.seed,
            "timeout": self.args.timeout,
            "acks": case.acks,
            "compression": case.compression,
            "linger_ms": 5,
            "rate": self.args.rate,
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        # The child gives up on its own after 3x the planned time; this is the backstop.
        limit = self.args.timeout + 3 * case.n / self.args.rate
        rc, out, err, maxrss, timed_out = run_child(argv, limit, self.child_env(client))
        row.peak_rss = maxrss
        if timed_out:
            row.note = f"FAILED: timeout after {limit:.0f}s"
            return row
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if rc != 0 or not lines:
            row.note = f"FAILED: rc={rc} {last_line(err or out)}"
            return row
        res = json.loads(lines[-1])
        samples, error = res.get("samples", 0), res.get("error")
        error = error or self.wrong_tree(client, res.get("grete_file"))
        if samples != case.n or error:
            row.note = f"FAILED: {samples:,}/{case.n:,} acked" + (
                f"; {error[:120]}" if error else ""
            )
            return row
        problem = self.verify_log(topic, case.n + res.get("warmup", 0))
        if problem:
            row.note = f"FAILED: {problem}"
            return row
        row.rate, row.p50, row.p99 = res["rate"], res["p50_ms"], res["p99_ms"]
        row.worst = res["max_ms"]
        if "cpu_user" in res:
            row.cpu_us = (res["cpu_user"] + res["cpu_sys"]) / case.n * 1e6
            row.cpu_sys_us = res["cpu_sys"] / case.n * 1e6
        row.note = "ok"
        return row


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def fmt_mib(b: int | None) -> str:
    return "-" if b is None else f"{b / MiB:.0f}"


def fmt_cpu(r: Row | LatRow) -> list[str]:
    if r.note != "ok" or r.cpu_us is None or r.cpu_sys_us is None:
        return ["-", "-"]
    return [f"{r.cpu_us:.2f}", f"{r.cpu_sys_us:.2f}"]


def table(rows: list[Row], cases: dict[str, Case]) -> str:
    medians = any(r.median is not None for r in rows)
    out = [
        "| case | client | msgs/s | "
        + ("median msgs/s | " if medians else "")
        + "CPU us/msg | sys us/msg | MiB/s | time s | peak RSS MiB | RSS at start MiB | result |",
        "|---|---|--:|" + ("--:|" if medians else "") + "--:|--:|--:|--:|--:|--:|---|",
    ]
    last = ""
    for r in rows:
        label = f"{r.case}: {cases[r.case].describe()}" if r.case != last else ""
        last = r.case
        speed = (
            [f"{r.msgs_s:,.0f}", f"{r.mib_s:.1f}", f"{r.seconds:.2f}"]
            if r.msgs_s
            else ["-", "-", "-"]
        )
        if medians:
            speed.insert(1, f"{r.median:,.0f}" if r.msgs_s and r.median else "-")
        at = 2 if medians else 1  # CPU beside the speed
        speed[at:at] = fmt_cpu(r)
        out.append(
            f"| {label} | {r.client} | "
            + " | ".join(speed)
            + f" | {fmt_mib(r.peak_rss)} | {fmt_mib(r.base_rss)} | {r.note} |"
        )
    return "\n".join(out)


def latency_table(rows: list[LatRow], cases: dict[str, Case], rate: int) -> str:
    out = [
        "| case | client | target msgs/s | achieved msgs/s | CPU us/msg | sys us/msg "
        "| p50 ms | p99 ms | max ms | peak RSS MiB | result |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    last = ""
    for r in rows:
        label = f"{r.case}: {cases[r.case].describe()}" if r.case != last else ""
        last = r.case
        nums = (
            [f"{r.rate:,.0f}", *fmt_cpu(r), f"{r.p50:.1f}", f"{r.p99:.1f}", f"{r.worst:.1f}"]
            if r.note == "ok" and r.rate and r.p50 is not None
            else ["-"] * 6
        )
        out.append(
            f"| {label} | {r.client} | {rate:,} | "
            + " | ".join(nums)
            + f" | {fmt_mib(r.peak_rss)} | {r.note} |"
        )
    return "\n".join(out)


def with_trees(clients: list[str], trees: dict[str, Path]) -> list[str]:
    """Each grete client followed by its runs from the --grete-src trees (grete-kp
    only for trees that have KafkaProducer)."""
    out: list[str] = []
    for client in clients:
        out.append(client)
        if client.startswith("grete-"):
            out += [
                f"{client}@{label}"
                for label, tree in trees.items()
                if client != "grete-kp" or has_kafka_producer(tree)
            ]
    return out


def select(spec: str, known: tuple[str, ...] | list[str]) -> list[str]:
    """``grete`` picks every grete-* variant; names otherwise must match exactly."""
    picked: list[str] = []
    for want in (s.strip() for s in spec.split(",") if s.strip()):
        prefix = "grete-" if want == "grete" else want + "-b"
        found = [k for k in known if k == want or k.startswith(prefix)]
        if not found:
            raise SystemExit(f"unknown name {want!r}; choose from {', '.join(known)}")
        picked += [f for f in found if f not in picked]
    return picked


def environment() -> Iterator[str]:
    import platform

    yield f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    try:
        import aiokafka
        import confluent_kafka
        import kafka

        yield (
            f"confluent-kafka {confluent_kafka.version()[0]} "
            f"(librdkafka {confluent_kafka.libversion()[0]}), "
            f"aiokafka {aiokafka.__version__}, kafka-python {kafka.__version__}"
        )
    except ImportError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help="use this running cluster instead of starting one")
    ap.add_argument(
        "--brokers", type=int, choices=(1, 3), default=3, help="brokers to start (no --bootstrap)"
    )
    ap.add_argument(
        "--sections",
        default="throughput,latency",
        help="comma list of throughput, latency",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 10x fewer messages, 2 s latency runs",
    )
    ap.add_argument(
        "--clients",
        default=",".join(CLIENTS),
        help=f"comma list of {', '.join(CLIENTS)} (grete = every grete-*)",
    )
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    ap.add_argument(
        "--latency-clients",
        default=",".join(LATENCY_CLIENTS),
        help=f"comma list of {', '.join(LATENCY_CLIENTS)}",
    )
    ap.add_argument("--rate", type=int, default=10_000, help="latency section: msgs/s to send")
    ap.add_argument(
        "--duration", type=float, help="latency section: seconds per run (10; 2 with --quick)"
    )
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip warming the brokers (the timed warm-up and one run per case)",
    )
    ap.add_argument(
        "--warmup-seconds",
        type=float,
        help="time spent warming the brokers' JIT with many small requests before "
        "anything is measured (150; 10 with --quick)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per client run")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per client and case (best and median reported)"
    )
    ap.add_argument("--profile", metavar="DIR", help="pyinstrument the grete runs into DIR")
    ap.add_argument(
        "--grete-src",
        metavar="DIR",
        action="append",
        type=Path,
        default=[],
        help="also run every chosen grete client with grete imported from this source "
        "tree (the directory holding the grete package, say a git worktree's src), as "
        "rows labelled client@<tree>, in the same rounds (repeatable: an A/B in one run)",
    )
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    for s in sections:
        if s not in ("throughput", "latency"):
            raise SystemExit(f"unknown section {s!r}; choose from throughput, latency")
    clients = select(args.clients, CLIENTS) if "throughput" in sections else []
    cases = {name: CASES[name] for name in select(args.cases, list(CASES))}
    if args.quick:
        cases = {k: Case(**{**c.__dict__, "n": c.n // 10}) for k, c in cases.items()}
    if "throughput" not in sections:
        cases = {}
    lat_clients = select(args.latency_clients, LATENCY_CLIENTS) if "latency" in sections else []
    trees: dict[str, Path] = {}
    for src in args.grete_src:
        tree = src.resolve()
        if not (tree / "grete" / "__init__.py").is_file():
            raise SystemExit(f"--grete-src {src}: no grete package there")
        trees[tree_label(tree, set(trees))] = tree
    clients = with_trees(clients, trees)
    lat_clients = with_trees(lat_clients, trees)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    lat_cases = latency_cases(args.rate, duration) if lat_clients else {}

    jars: Path | None = None
    if "java" in clients:
        try:
            from grete.testing.jars import ensure_kafka_jars

            jars = ensure_kafka_jars()
        except Exception as exc:  # Java/Maven missing: the other clients still run
            print(f"note: no Kafka jars ({exc}); skipping java", file=sys.stderr)

    load_before = os.getloadavg()[0]
    cluster: Any = None
    if args.bootstrap:
        bootstrap = args.bootstrap
        from grete.testing.admin import make_admin

        brokers = len(make_admin(bootstrap, None).broker_ids(10.0) or {0})
    else:
        from grete.testing.cluster import KafkaCluster

        # Brokers as in production (C2 JIT, G1, Kafka's 1 GiB heap), not the quick-start
        # JVMs the tests use: client-side differences show only on a warm, fast broker.
        cluster = KafkaCluster(num_brokers=args.brokers, tuned_for_tests=False, heap_mb=1024)
        cluster.start()
        bootstrap, brokers = cluster.bootstrap_servers, args.brokers
    try:
        bench = Bench(args, bootstrap, brokers, jars, trees)
        if args.warmup and (cases or lat_cases):
            warm_for = args.warmup_seconds
            if warm_for is None:
                warm_for = 10.0 if args.quick else 150.0
            warm_brokers(bench, warm_for, args.quick)
        if args.warmup and cases:
            # Then one unreported run per case (its codec, its batch shapes).
            print("warming up the brokers (one unreported run per case)...", file=sys.stderr)
            for case in cases.values():
                bench.run(case, "confluent" if case.topics > 1 else "grete-b2000")
        rows: list[Row] = []
        for case in cases.values():
            # Best of --repeat runs, each to a fresh topic: on a shared machine the
            # best run is the least disturbed one. Rounds go through every client in
            # turn (not one client's runs back to back), so a disturbance that lasts
            # a while (the broker rolling or deleting segments, another process) hits
            # each client's runs alike. Any failed run fails the row.
            # A case of many topics runs the clients that name the topic per call only.
            case_clients = [
                c for c in clients if case.topics == 1 or split_client(c)[0] in MULTI_TOPIC_CLIENTS
            ]
            by_client: dict[str, list[Row]] = {client: [] for client in case_clients}
            for _ in range(args.repeat):
                for client in case_clients:
                    by_client[client].append(bench.run(case, client))
            for client in case_clients:
                tries = by_client[client]
                failed = [t for t in tries if t.msgs_s is None]
                row = failed[0] if failed else max(tries, key=lambda t: t.msgs_s or 0.0)
                if not failed and len(tries) > 1:
                    row = replace(
                        row,
                        median=statistics.median(t.msgs_s or 0.0 for t in tries),
                        cpu_us=statistics.median(t.cpu_us or 0.0 for t in tries),
                        cpu_sys_us=statistics.median(t.cpu_sys_us or 0.0 for t in tries),
                    )
                rows.append(row)
                speed = f"{row.msgs_s:,.0f} msg/s" if row.msgs_s else ""
                runs = ", ".join(
                    f"{t.msgs_s:,.0f}" + (f" at {t.cpu_us:.2f} us" if t.cpu_us else "")
                    for t in tries
                    if t.msgs_s
                )
                print(
                    f"  {case.name:11} {client:22} {speed:>16}  {row.note}  (runs: {runs})",
                    file=sys.stderr,
                    flush=True,
                )
        lat_rows: list[LatRow] = []
        for case in lat_cases.values():
            for client in lat_clients:
                # One run each: a latency run is long and its percentiles already
                # summarise many samples; best-of would hide the disturbances it measures.
                lrow = bench.run_latency(case, client)
                lat_rows.append(lrow)
                p99 = f"p99 {lrow.p99:.1f} ms" if lrow.p99 is not None else ""
                cpu = f"{lrow.cpu_us:.2f} us/msg" if lrow.cpu_us is not None else ""
                print(
                    f"  {case.name:11} {client:22} {p99:>16} {cpu:>13}  {lrow.note}",
                    file=sys.stderr,
                    flush=True,
                )
        shutil.rmtree(bench.tmp, ignore_errors=True)
    finally:
        if cluster is not None:
            cluster.close()

    setup = (
        f"{brokers} broker{'s' if brokers > 1 else ''}, {args.partitions} partitions, "
        f"replication factor {min(3, brokers)}{', quick run' if args.quick else ''}"
    )
    # Other processes' CPU use skews every number; say how busy the machine was.
    print(f"load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end  ")
    for line in environment():
        print(f"{line}  ")
    if rows:
        print(f"\n## Produce throughput ({setup})\n")
        if args.repeat > 1:
            print(
                f"best of {args.repeat} (and the median run); CPU: the median of the runs' "
                "client CPU (user + system, all threads) over the timed section, a message\n"
            )
        else:
            print("CPU: the client's CPU (user + system, all threads) in the timed section\n")
        for label, tree in trees.items():
            print(f"@{label}: grete from {tree}  ")
        if trees:
            print()
        print(table(rows, cases))
    if lat_rows:
        print(f"\n## Produce-to-acknowledgement latency ({setup})\n")
        print(
            f"{args.rate:,} msgs/s for {duration:g} s, linger 5 ms; time from the produce "
            "call to the delivery callback (grete-bg: callback=, confluent: on_delivery "
            "served by poll(), aiokafka: future done-callback). CPU: the client's (user + "
            "system, all threads) over the paced run and its flush, a message.\n"
        )
        print(latency_table(lat_rows, lat_cases, args.rate))


if __name__ == "__main__":
    main()
