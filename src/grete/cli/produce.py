"""``grete produce``: lines from stdin or files to a topic, as Kafka's console producer."""

from __future__ import annotations

import argparse
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, TypeVar

from grete.cli.common import human_bytes, make_client, stderr_is_tty
from grete.cli.config import UsageError, parse_pairs
from grete.client import KafkaClient
from grete.errors import ConfigurationError, KafkaError
from grete.partitioners import (
    RoundRobinPartitioner,
    StickyPartitioner,
    hashing_partitioner,
    random_partitioner,
)
from grete.producer import (
    BackgroundProducer,
    DeliveryFuture,
    Message,
    ProduceFailureError,
    Producer,
)

PARTITIONERS: dict[str, Callable[[], Any]] = {
    # Java's default: sticky for unkeyed messages, murmur2 (Java-compatible) for keys.
    "sticky": StickyPartitioner,
    "hash": lambda: hashing_partitioner,
    "random": lambda: random_partitioner,
    "round-robin": RoundRobinPartitioner,
}

# Kafka's console producer --property keys we understand.
_READER_PROPERTIES = ("parse.key", "key.separator", "ignore.error")

PROGRESS_INTERVAL_S = 0.5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", required=True, help="the topic to produce to")
    p.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="read lines from these files in turn ('-' is stdin; default: stdin)",
    )
    p.add_argument(
        "--parse-key",
        action="store_true",
        help="split each line into key and value at the first --key-separator",
    )
    p.add_argument(
        "--key-separator",
        metavar="SEP",
        help="key/value separator for --parse-key (default: a tab, as Kafka's tool)",
    )
    p.add_argument(
        "--property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="console-producer line reader settings: parse.key, key.separator, "
        "ignore.error (true: a line without separator is sent without key)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a header added to every message (repeatable)",
    )
    # Second spellings: kafka-console-producer's own flag names.
    p.add_argument(
        "--compression",
        "--compression-codec",
        choices=["none", "gzip", "snappy", "lz4", "zstd"],
        help="compression.type (default none)",
    )
    p.add_argument(
        "--acks",
        "--request-required-acks",
        choices=["0", "1", "-1", "all"],
        help="acks (default all: every in-sync replica, idempotent)",
    )
    p.add_argument(
        "--partitioner",
        choices=sorted(PARTITIONERS),
        default="sticky",
        help="sticky (default; keyed messages by murmur2, as the Java client), "
        "hash (murmur2; random without key), random, round-robin",
    )
    p.add_argument(
        "--sync",
        action="store_true",
        help="use the synchronous Producer: produce(list) per --chunk-size lines "
        "(default: the BackgroundProducer, one produce() per line)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        metavar="N",
        help="lines per produce() call with --sync (default 10000)",
    )
    progress = p.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress line on stderr even when it is not a terminal",
    )
    progress.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress line (the default unless stderr is a terminal, and lines "
        "do not come from one)",
    )


class Stats:
    """Counts of one run. Deliveries are counted by one thread (the sender's
    callbacks, or the main thread with --sync); failures can come from both,
    so they take a lock."""

    def __init__(self) -> None:
        self.read = 0
        self.acked = 0
        self.bytes_acked = 0
        self.failed = 0
        self.partitions: dict[int, list[int]] = {}  # id -> [count, last offset]
        self.reasons: dict[str, list[int]] = {}  # reason -> [count, first line]
        self._lock = threading.Lock()
        self.start = time.monotonic()

    def ack(self, partition: int, offset: int, size: int) -> None:
        self.acked += 1
        self.bytes_acked += size
        entry = self.partitions.get(partition)
        if entry is None:
            self.partitions[partition] = [1, offset]
        else:
            entry[0] += 1
            if offset > entry[1]:
                entry[1] = offset

    def fail(self, lineno: int, error: BaseException | str) -> None:
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self._lock:
            self.failed += 1
            entry = self.reasons.get(reason)
            if entry is None:
                self.reasons[reason] = [1, lineno]
            else:
                entry[0] += 1
                entry[1] = min(entry[1], lineno)

    def delivered(self, lineno: int, future: DeliveryFuture) -> None:
        """The BackgroundProducer's callback (on its sender thread)."""
        error = future.exception(0)
        if error is not None:
            self.fail(lineno, error)
            return
        result = future.result(0)
        size = (len(future.value) if future.value else 0) + (len(future.key) if future.key else 0)
        self.ack(result.partition, result.offset, size)

    def progress_line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        return (
            f"{self.read:,} read, {self.acked:,} acknowledged, {self.failed:,} failed, "
            f"{self.acked / elapsed:,.0f} msg/s"
        )


class Progress:
    """A progress line on stderr, rewritten in place by a ticker thread (so it
    moves while stdin is quiet, and while the last messages are delivered)."""

    def __init__(self, stats: Stats, stream: IO[str]) -> None:
        self._stats = stats
        self._stream = stream
        self._stop = threading.Event()
        self._width = 0
        self._thread = threading.Thread(target=self._run, name="grete-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        line = self._stats.progress_line()
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write("\r" + line + " " * pad)
        self._stream.flush()

    def _run(self) -> None:
        # Ends when __exit__ sets the event; wait() is the only pause.
        while not self._stop.wait(PROGRESS_INTERVAL_S):
            self._draw()


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _stdin_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _lines(paths: list[str]) -> Iterator[bytes]:
    """Input lines as bytes, without their line end (``\\n`` or ``\\r\\n``,
    as Java's readLine); bounded by the input itself."""
    for path in paths or ["-"]:
        if path == "-":
            stream: IO[bytes] = sys.stdin.buffer
            close = False
        else:
            try:
                stream = open(path, "rb")  # noqa: SIM115 - closed below, per file
            except OSError as exc:
                raise UsageError(f"{path}: {exc.strerror or exc}") from None
            close = True
        try:
            for line in stream:
                if line.endswith(b"\n"):
                    line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
                yield line
        finally:
            if close:
                stream.close()


class LineReader:
    """Turns a line into (key, value), as Kafka's console producer's LineMessageReader."""

    def __init__(self, args: argparse.Namespace) -> None:
        props = parse_pairs(args.property, "--property")
        unknown = sorted(set(props) - set(_READER_PROPERTIES))
        if unknown:
            raise UsageError(
                f"--property {unknown[0]}: unknown (known: {', '.join(_READER_PROPERTIES)})"
            )
        truthy = ("true", "1", "yes")
        self.parse_key = args.parse_key or props.get("parse.key", "").lower() in truthy
        separator = args.key_separator
        if separator is None:
            separator = props.get("key.separator", "\t")
        if self.parse_key and not separator:
            raise UsageError("--key-separator must not be empty")
        self.separator = separator.encode()
        self.ignore_error = props.get("ignore.error", "").lower() in truthy

    def split(self, line: bytes) -> tuple[bytes | None, bytes] | None:
        """(key, value), or None for a line that needs a key and has no separator."""
        if not self.parse_key:
            return None, line
        key, sep, value = line.partition(self.separator)
        if sep:
            return key, value
        return (None, line) if self.ignore_error else None


def _headers(pairs: list[str]) -> list[tuple[str, bytes | None]] | None:
    if not pairs:
        return None
    out: list[tuple[str, bytes | None]] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {pair!r}: expected KEY=VALUE")
        out.append((key, value.encode()))
    return out


def flag_properties(args: argparse.Namespace) -> dict[str, str]:
    """The dedicated flags as producer properties (they win over the others)."""
    props: dict[str, str] = {}
    if getattr(args, "acks", None) is not None:
        props["acks"] = args.acks
    if getattr(args, "compression", None) is not None:
        props["compression.type"] = args.compression
    return props


def run(args: argparse.Namespace) -> int:
    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    reader = LineReader(args)
    headers = _headers(args.header)
    args.flag_properties = flag_properties(args)
    # By default only on a terminal, and not while a person types the lines
    # there: the progress line would overwrite what they type.
    typing = (not args.files or "-" in args.files) and _stdin_tty()
    show = args.progress if args.progress is not None else stderr_is_tty() and not typing
    client, settings = make_client(args)
    with client:
        topic = client.topics[args.topic]
        partitioner = PARTITIONERS[args.partitioner]()
        stats = Stats()
        interrupted = False
        with Progress(stats, sys.stderr) if show else _NoProgress():
            runner = _run_sync if args.sync else _run_background
            kwargs = settings.sync if args.sync else settings.background
            try:
                runner(client, topic, partitioner, kwargs, args, reader, headers, stats)
            except KeyboardInterrupt:
                interrupted = True
        _summary(args.topic, stats, interrupted)
    if interrupted:
        return 130
    return 0 if stats.failed == 0 and stats.acked == stats.read else 1


_P = TypeVar("_P", Producer, BackgroundProducer)


def _make_producer(
    cls: type[_P], client: KafkaClient, topic: Any, partitioner: Any, kwargs: dict[str, Any]
) -> _P:
    """Either producer from the command line's settings; a bad combination is a
    usage error. Kafka's tools default to acks=all (idempotent); so does the CLI."""
    try:
        settings = {"required_acks": -1, **kwargs}
        return cls(client.cluster, topic, partitioner=partitioner, **settings)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _run_background(
    client: KafkaClient,
    topic: Any,
    partitioner: Any,
    kwargs: dict[str, Any],
    args: argparse.Namespace,
    reader: LineReader,
    headers: list[tuple[str, bytes | None]] | None,
    stats: Stats,
) -> None:
    producer = _make_producer(BackgroundProducer, client, topic, partitioner, kwargs)
    delivered = stats.delivered
    try:
        for lineno, line in enumerate(_lines(args.files), 1):
            stats.read += 1
            kv = reader.split(line)
            if kv is None:
                stats.fail(lineno, "no key separator on the line")
                continue
            try:
                producer.produce(
                    kv[1],
                    partition_key=kv[0],
                    headers=headers,
                    callback=functools.partial(delivered, lineno),
                )
            except KafkaError as exc:  # too large, queue full: this line only
                stats.fail(lineno, exc)
    finally:
        # Delivers (or fails, within delivery.timeout.ms) everything queued;
        # every callback has run when it returns.
        producer.close()


def _run_sync(
    client: KafkaClient,
    topic: Any,
    partitioner: Any,
    kwargs: dict[str, Any],
    args: argparse.Namespace,
    reader: LineReader,
    headers: list[tuple[str, bytes | None]] | None,
    stats: Stats,
) -> None:
    producer = _make_producer(Producer, client, topic, partitioner, kwargs)
    chunk: list[Any] = []
    sizes: list[int] = []
    linenos: list[int] = []

    def send() -> None:
        try:
            results: Any = producer.produce(chunk)
        except ProduceFailureError as exc:
            results = exc.results
            for failure in exc.failures:
                stats.fail(linenos[failure.index], failure.error)
        except KafkaError as exc:  # the whole call failed: every line of it
            for lineno in linenos:
                stats.fail(lineno, exc)
            results = []
        for result, size in zip(results, sizes, strict=False):
            if result is not None:
                stats.ack(result.partition, result.offset, size)
        chunk.clear()
        sizes.clear()
        linenos.clear()

    for lineno, line in enumerate(_lines(args.files), 1):
        stats.read += 1
        kv = reader.split(line)
        if kv is None:
            stats.fail(lineno, "no key separator on the line")
            continue
        key, value = kv
        if headers is not None:
            chunk.append(Message(value, key=key, headers=headers))
        elif key is not None:
            chunk.append((key, value))
        else:
            chunk.append(value)
        sizes.append(len(value) + (len(key) if key else 0))
        linenos.append(lineno)
        if len(chunk) >= args.chunk_size:
            send()
    if chunk:
        send()


def _summary(topic: str, stats: Stats, interrupted: bool) -> None:
    elapsed = max(time.monotonic() - stats.start, 1e-9)
    err = sys.stderr
    head = "interrupted: " if interrupted else ""
    err.write(
        f"grete: {head}{stats.acked:,} of {stats.read:,} messages acknowledged by {topic!r} "
        f"({human_bytes(stats.bytes_acked)}) in {elapsed:.2f}s: "
        f"{stats.acked / elapsed:,.0f} msg/s, {human_bytes(stats.bytes_acked / elapsed)}/s\n"
    )
    for pid in sorted(stats.partitions):
        count, last = stats.partitions[pid]
        where = f"last offset {last:,}" if last >= 0 else "offsets not reported (acks=0)"
        plural = "" if count == 1 else "s"
        err.write(f"  partition {pid}: {count:,} message{plural}, {where}\n")
    if not stats.reasons:
        err.write("  errors: none\n")
    else:
        err.write(f"  errors: {stats.failed:,} message(s) failed\n")
        ranked = sorted(stats.reasons.items(), key=lambda kv: (-kv[1][0], kv[1][1]))
        for reason, (count, first) in ranked:
            err.write(f"    {count:,} x {reason} (first at line {first})\n")
    err.flush()
