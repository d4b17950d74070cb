"""``grete perf``: the counterpart of Kafka's kafka-producer-perf-test.

Latency is per message, from the ``produce()`` call to its delivery callback
(``--sync``: from the start of the ``produce(list)`` call to its return, for each
message of the chunk), as ProducerPerformance measures it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from grete.cli.common import make_client
from grete.cli.config import UsageError
from grete.cli.produce import PARTITIONERS, flag_properties
from grete.errors import ConfigurationError, KafkaError
from grete.producer import BackgroundProducer, DeliveryFuture, ProduceFailureError, Producer

# Latency samples kept, at most (Kafka's tool keeps 500,000 too): every n-th
# message is sampled so memory stays bounded for any --num-records.
MAX_SAMPLES = 500_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", required=True, help="the topic to produce to")
    p.add_argument("--num-records", type=int, required=True, metavar="N", help="messages to send")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--record-size", type=int, metavar="BYTES", help="value size of each message")
    size.add_argument(
        "--payload-file",
        metavar="FILE",
        help="values drawn at random from this file's lines (see --payload-delimiter)",
    )
    p.add_argument(
        "--payload-delimiter",
        default="\\n",
        metavar="DELIM",
        help="separator of payloads in --payload-file (default: newline)",
    )
    p.add_argument(
        "--throughput",
        type=float,
        required=False,
        default=-1,
        metavar="MSGS_PER_SEC",
        help="throttle to at most this many messages/s (-1: unlimited, the default)",
    )
    p.add_argument(
        "--print-interval-ms",
        type=int,
        default=5000,
        metavar="MS",
        help="how often to print a progress line (default 5000, as Kafka's tool)",
    )
    p.add_argument(
        "--producer-props",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="kafka-producer-perf-test's spelling of --producer-property (several at once)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object at the end only")
    p.add_argument(
        "--sync",
        action="store_true",
        help="measure the synchronous Producer's produce(list), --chunk-size messages per call",
    )
    p.add_argument(
        "--chunk-size", type=int, default=10_000, metavar="N", help="messages per call with --sync"
    )
    p.add_argument(
        "--compression",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="compression.type (default none)",
    )
    p.add_argument("--acks", choices=["0", "1", "-1", "all"], help="acks (default all)")
    p.add_argument(
        "--partitioner",
        choices=sorted(PARTITIONERS),
        default="sticky",
        help="default sticky, as the Java client",
    )


class PerfStats:
    """Kafka's ProducerPerformance.Stats: windows for the periodic lines, and
    sampled latencies for the percentiles. ``record`` runs on one thread at a
    time (the sender's callbacks, or the main thread with --sync)."""

    def __init__(self, num_records: int, interval_ms: int, quiet: bool) -> None:
        self.start = time.monotonic()
        self.sampling = max(1, num_records // MAX_SAMPLES)
        self.samples: list[float] = []
        self.count = 0
        self.bytes = 0
        self.total_latency = 0.0
        self.max_latency = 0.0
        self.errors = 0
        self.reasons: dict[str, int] = {}
        self._lock = threading.Lock()
        self._interval_s = interval_ms / 1000
        self._quiet = quiet
        self._window_start = self.start
        self._window_count = 0
        self._window_bytes = 0
        self._window_latency = 0.0
        self._window_max = 0.0
        self.end = self.start

    def record(self, latency_ms: float, size: int, now: float) -> None:
        if self.count % self.sampling == 0:
            self.samples.append(latency_ms)
        self.count += 1
        self.bytes += size
        self.total_latency += latency_ms
        if latency_ms > self.max_latency:
            self.max_latency = latency_ms
        self._window_count += 1
        self._window_bytes += size
        self._window_latency += latency_ms
        if latency_ms > self._window_max:
            self._window_max = latency_ms
        if now - self._window_start >= self._interval_s:
            self._print_window(now)

    def fail(self, error: BaseException, count: int = 1) -> None:
        reason = f"{type(error).__name__}: {error}"
        with self._lock:
            self.errors += count
            self.reasons[reason] = self.reasons.get(reason, 0) + count

    def _print_window(self, now: float) -> None:
        elapsed = max(now - self._window_start, 1e-9)
        n = self._window_count
        if not self._quiet:
            print(
                f"{n} records sent, {n / elapsed:.1f} records/sec "
                f"({self._window_bytes / elapsed / 1024 / 1024:.2f} MB/sec), "
                f"{self._window_latency / max(n, 1):.1f} ms avg latency, "
                f"{self._window_max:.1f} ms max latency.",
                flush=True,
            )
        self._window_start = now
        self._window_count = self._window_bytes = 0
        self._window_latency = self._window_max = 0.0

    def summary(self) -> dict[str, Any]:
        elapsed = max(self.end - self.start, 1e-9)
        lat = sorted(self.samples)

        def pct(q: float) -> float:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else 0.0

        return {
            "records": self.count,
            "errors": self.errors,
            "elapsed_s": round(elapsed, 3),
            "records_per_sec": round(self.count / elapsed, 1),
            "mb_per_sec": round(self.bytes / elapsed / 1024 / 1024, 3),
            "bytes": self.bytes,
            "latency_ms": {
                "avg": round(self.total_latency / self.count, 3) if self.count else 0.0,
                "p50": pct(0.5),
                "p95": pct(0.95),
                "p99": pct(0.99),
                "p99.9": pct(0.999),
                "max": round(self.max_latency, 3),
            },
        }


class Throttle:
    """Kafka's ThroughputThrottler, simplified: sleep when ahead of the target
    rate. Each sleep is bounded by the time the schedule is ahead."""

    def __init__(self, per_second: float, start: float) -> None:
        self.per_second = per_second
        self.start = start

    def wait(self, sent: int) -> None:
        if self.per_second <= 0:
            return
        ahead = sent / self.per_second - (time.monotonic() - self.start)
        if ahead > 0.001:
            time.sleep(ahead)


def _payloads(args: argparse.Namespace) -> list[bytes]:
    if args.record_size is not None:
        if args.record_size < 0:
            raise UsageError("--record-size must be >= 0")
        # One random payload reused for every message, as Kafka's tool does:
        # the benchmark measures the client, not the random generator.
        rng = random.Random(0)
        return [bytes(rng.randrange(65, 91) for _ in range(args.record_size))]
    delimiter = args.payload_delimiter.encode().decode("unicode_escape").encode()
    try:
        data = Path(args.payload_file).read_bytes()
    except OSError as exc:
        raise UsageError(f"--payload-file {args.payload_file}: {exc.strerror or exc}") from None
    payloads = [p for p in data.split(delimiter) if p]
    if not payloads:
        raise UsageError(f"--payload-file {args.payload_file}: no payloads in it")
    return payloads


def run(args: argparse.Namespace) -> int:
    if args.num_records < 1:
        raise UsageError("--num-records must be at least 1")
    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    if args.print_interval_ms < 1:
        raise UsageError("--print-interval-ms must be at least 1")
    payloads = _payloads(args)
    args.producer_property = [
        *(getattr(args, "producer_property", None) or []),
        *args.producer_props,
    ]
    args.flag_properties = flag_properties(args)
    client, settings = make_client(args)
    with client:
        topic = client.topics[args.topic]
        partitioner = PARTITIONERS[args.partitioner]()
        stats = PerfStats(args.num_records, args.print_interval_ms, quiet=args.json)
        kwargs = {"required_acks": -1, **(settings.sync if args.sync else settings.background)}
        try:
            if args.sync:
                producer: Any = Producer(client.cluster, topic, partitioner=partitioner, **kwargs)
            else:
                producer = BackgroundProducer(
                    client.cluster, topic, partitioner=partitioner, **kwargs
                )
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        stats.start = stats._window_start = time.monotonic()
        if args.sync:
            _run_sync(producer, args, payloads, stats)
        else:
            _run_background(producer, args, payloads, stats)
        stats.end = time.monotonic()
    result = stats.summary()
    result.update(
        mode="sync" if args.sync else "background",
        num_records=args.num_records,
        topic=args.topic,
    )
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        lat = result["latency_ms"]
        print(
            f"{result['records']} records sent, {result['records_per_sec']:.1f} records/sec "
            f"({result['mb_per_sec']:.2f} MB/sec), {lat['avg']:.2f} ms avg latency, "
            f"{lat['max']:.2f} ms max latency, {lat['p50']:.0f} ms 50th, {lat['p95']:.0f} ms 95th, "
            f"{lat['p99']:.0f} ms 99th, {lat['p99.9']:.0f} ms 99.9th.",
            flush=True,
        )
    for reason, count in sorted(stats.reasons.items(), key=lambda kv: -kv[1]):
        sys.stderr.write(f"grete: {count:,} x {reason}\n")
    return 0 if stats.errors == 0 and stats.count == args.num_records else 1


def _run_background(
    producer: BackgroundProducer, args: argparse.Namespace, payloads: list[bytes], stats: PerfStats
) -> None:
    record, fail, clock = stats.record, stats.fail, time.monotonic

    def make_callback(sent_at: float) -> Any:
        def done(future: DeliveryFuture) -> None:
            error = future.exception(0)
            if error is not None:
                fail(error)
            else:
                now = clock()
                value = future.value
                record((now - sent_at) * 1000, len(value) if value else 0, now)

        return done

    throttle = Throttle(args.throughput, stats.start)
    single = payloads[0] if len(payloads) == 1 else None
    choice = random.choice
    try:
        for i in range(args.num_records):
            value = single if single is not None else choice(payloads)
            try:
                producer.produce(value, callback=make_callback(clock()))
            except KafkaError as exc:
                fail(exc)
            throttle.wait(i + 1)
    finally:
        producer.close()


def _run_sync(
    producer: Producer, args: argparse.Namespace, payloads: list[bytes], stats: PerfStats
) -> None:
    throttle = Throttle(args.throughput, stats.start)
    single = payloads[0] if len(payloads) == 1 else None
    sent = 0
    while sent < args.num_records:  # bounded: sent grows by >= 1 per round
        n = min(args.chunk_size, args.num_records - sent)
        chunk = [single] * n if single is not None else [random.choice(payloads) for _ in range(n)]
        t0 = time.monotonic()
        try:
            results: Any = producer.produce(chunk)
        except ProduceFailureError as exc:
            results = exc.results
            for failure in exc.failures:
                stats.fail(failure.error)
        except KafkaError as exc:
            stats.fail(exc, n)
            results = []
        now = time.monotonic()
        latency = (now - t0) * 1000
        for result, value in zip(results, chunk, strict=False):
            if result is not None:
                stats.record(latency, len(value), now)
        sent += n
        throttle.wait(sent)
    producer.close()
