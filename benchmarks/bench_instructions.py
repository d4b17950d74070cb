"""CPU instructions per message of produce() (BackgroundProducer, KafkaProducer), by valgrind.

Run: .venv/bin/python benchmarks/bench_instructions.py [--messages N] [--src DIR ...]

Wall-clock speed on a shared 2-core machine moves by +-40% within minutes, so a
change worth 3% to the hot path cannot be seen in msgs/s. Instructions executed
can: with the hash seed fixed, no other thread running and a clock that moves by
the count of calls, a count repeats within ~20 instructions a message (two runs of
one tree: 9,044 and 9,061, unkeyed).
Fewer instructions is not always faster (cache misses, branch mispredictions), but
on this path, an interpreter executing bytecodes, it has tracked speed well.

Each case runs in a child process under ``valgrind --tool=cachegrind``; the child
builds a producer for a topic of 3 partitions led by a broker that does not exist
(nothing is sent), parks the sender thread (so only the calling thread runs), calls
``produce()`` N times and then encodes every batch as the sender would
(``ProducerBatch.encode``). Counting the whole child once with one round of N
messages and once with three, the difference divided by 2N is the cost of one
message, start-up and imports cancelled out. Columns:

* produce: ``produce()`` alone, in the calling thread (keyed: placing the stage and
  encoding runs included, as they happen there);
* + encode: also the sender's encoding of the batches (unkeyed batches are encoded
  there, keyed ones only framed).

``noop`` is the floor: the same loop calling a Python function of produce()'s
signature that does nothing. ``unkeyed``/``keyed`` go through
``BackgroundProducer.produce(value, partition_key=...)``; ``kafka-unkeyed``/
``kafka-keyed`` are the same loops through ``KafkaProducer.produce("t", value,
key=...)`` (one topic; n/a for a tree without KafkaProducer). With ``--src`` the same
cases run against other source trees (say a ``git worktree`` of the last commit), for
an A/B in one table:

    git worktree add --detach /tmp/grete-base c6da480
    .venv/bin/python benchmarks/bench_instructions.py --src src --src /tmp/grete-base/src

The child reaches into internals, under their current names (``ProducerCore.run``,
``grete.producer.fast._time_ns``) or, for trees from before the shared producer core,
the old ones (``background._Sender.run``, ``background._time_ns``).

Needs valgrind (Debian: ``apt install valgrind``); says so when it is missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CASES = ("noop", "unkeyed", "keyed", "kafka-unkeyed", "kafka-keyed")
# The cases that need grete.KafkaProducer: n/a for a tree without it.
KAFKA_CASES = ("kafka-unkeyed", "kafka-keyed")
HERE = Path(__file__).resolve()
DEFAULT_SRC = HERE.parent.parent / "src"


def _park_sender() -> None:
    """The sender thread parked for good: only the calling thread's work is counted.
    The thread's target is ``ProducerCore.run`` (grete.producer.core); before the
    front ends shared a core, ``background._Sender.run``."""
    try:
        from grete.producer import core
    except ImportError:
        import grete.producer.background as background

        background._Sender.run = lambda self: None  # type: ignore[method-assign,attr-defined,unused-ignore]
    else:
        core.ProducerCore.run = lambda self: None  # type: ignore[method-assign,attr-defined,unused-ignore]


def _fix_clock() -> None:
    """A clock that moves 3.3 us a call (300k messages/s), not with valgrind's
    pace: how records are encoded depends on their timestamps' spread (one byte a
    delta up to 255 ms), which would otherwise vary run to run. A C callable, as
    time.time_ns is: no Python frame added to the count.

    The hand-tuned produce paths read ``grete.producer.fast._time_ns`` (before:
    ``background._time_ns``); any other grete module's ``_time_ns`` gets the same
    clock, so no path reads the real one."""
    import itertools

    clock = itertools.count(1_700_000_000_000_000_000, 3_333).__next__
    try:
        import grete.producer.fast as fast
    except ImportError:
        import grete.producer.background as background

        background._time_ns = clock  # type: ignore[attr-defined,unused-ignore]
    else:
        fast._time_ns = clock  # type: ignore[attr-defined,unused-ignore]
    for name, module in list(sys.modules.items()):
        if name.startswith("grete.") and hasattr(module, "_time_ns"):
            module._time_ns = clock  # type: ignore[attr-defined]


def _detach_finalizers(producer: object) -> None:
    """Its sender never runs: nothing to close when the producer is collected.

    Found among the producer's referents, whatever the attribute is called. Not
    through ``vars(producer)``: reading an instance's ``__dict__`` turns its inline
    attribute values into a dict, and every ``self._x`` in produce() then misses
    its specialised load (2,400 instructions a message more, for nothing)."""
    import gc
    import weakref

    for value in gc.get_referents(producer):
        if isinstance(value, weakref.finalize):
            value.detach()


def _drain(producer: object) -> list[Any]:
    """Every open batch, closed as the sender would take them when flushing."""
    import time

    core = getattr(producer, "_core", None)
    if core is not None:  # a front end over the shared ProducerCore
        with core.lock:
            batches: list[Any] = core.accs.drain(time.monotonic(), force=True)
        return batches
    p: Any = producer  # before: the BackgroundProducer's own sender and accumulator
    with p._sender.lock:
        batches = p._acc.drain(time.monotonic(), force=True)
    return batches


def child(case: str, messages: int, rounds: int, encode: bool) -> None:
    """One counted run (in the child process, under valgrind)."""
    import random
    import socket

    import grete
    from grete import BackgroundProducer
    from grete.cluster import Broker, Cluster, Partition, Topic
    from grete.connection import ConnectionConfig
    from grete.network import Network
    from grete.protocol.compression import CompressionType

    kafka_producer: Any = getattr(grete, "KafkaProducer", None)
    if case in KAFKA_CASES and kafka_producer is None:
        raise SystemExit(f"{case}: this tree has no grete.KafkaProducer")
    _park_sender()
    _fix_clock()

    with socket.socket() as s:  # a port nobody listens on: nothing is ever sent
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    network = Network([("127.0.0.1", port)], ConnectionConfig(connect_timeout_s=0.5))
    cluster = Cluster(network)
    broker = Broker(1, "127.0.0.1", port)
    cluster.brokers = {1: broker}
    topic = Topic(cluster, "t")
    for i in range(3):
        part = Partition(topic, i)
        part.leader = broker
        topic.partitions[i] = part
    # Known to the cluster by name too: KafkaProducer looks topics up per call.
    cluster._topics["t"] = topic

    rnd = random.Random(1)
    values = [rnd.randbytes(100) for _ in range(messages)]
    keys = [rnd.randbytes(16) for _ in range(messages)]

    def noop(
        value: object,
        partition_key: object = None,
        timestamp: object = None,
        headers: object = None,
        partition: object = None,
        callback: object = None,
    ) -> None:
        return None

    options: dict[str, Any] = {
        "required_acks": 1,
        "linger_ms": 60_000,
        "batch_size": 10_000,
        "max_queued_messages": messages + 1,
        "max_buffer_bytes": 1 << 30,
        "partitioner": None,
    }
    for _ in range(rounds):
        producer: Any
        if case in KAFKA_CASES:
            # A Cluster, as BackgroundProducer gets (KafkaProducer takes a KafkaClient
            # or a Cluster): no broker is needed to build it.
            producer = kafka_producer(cluster, **options)
        else:
            producer = BackgroundProducer(cluster, topic, **options)
        _detach_finalizers(producer)
        produce = producer.produce
        if case == "keyed":
            for i, v in enumerate(values):
                produce(v, partition_key=keys[i])
        elif case == "unkeyed":
            for v in values:
                produce(v)
        elif case == "kafka-keyed":
            for i, v in enumerate(values):
                produce("t", v, key=keys[i])
        elif case == "kafka-unkeyed":
            for v in values:
                produce("t", v)
        else:
            for i, v in enumerate(values):
                noop(v, partition_key=keys[i])
        if encode:
            for batch in _drain(producer):
                batch.encode(CompressionType.NONE, None)


def count(src: Path, case: str, messages: int, rounds: int, encode: bool) -> int:
    """Instructions the whole child executed."""
    cmd = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        str(HERE),
        "--child",
        case,
        "--messages",
        str(messages),
        "--rounds",
        str(rounds),
    ]
    if encode:
        cmd.append("--encode")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(src)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise SystemExit(f"valgrind run failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_message(src: Path, case: str, messages: int, encode: bool) -> float:
    one = count(src, case, messages, 1, encode)
    three = count(src, case, messages, 3, encode)
    return (three - one) / (2 * messages)


def has_kafka_producer(tree: Path) -> bool:
    return "KafkaProducer" in (tree / "grete" / "__init__.py").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages a round")
    parser.add_argument(
        "--src",
        action="append",
        type=Path,
        help="a source tree to count (repeatable; default: this checkout's src)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help="of " + ", ".join(CASES))
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--encode", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.child:
        child(args.child, args.messages, args.rounds, args.encode)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench_instructions needs valgrind on PATH (Debian: apt install valgrind)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
    trees = [p.resolve() for p in (args.src or [DEFAULT_SRC])]
    for tree in trees:
        if not (tree / "grete" / "__init__.py").is_file():
            parser.error(f"--src {tree}: no grete package there")

    print(f"Python {platform.python_version()}, {args.messages:,} messages a round, 100 B values,")
    print("16 B keys, 3 partitions; instructions a message (valgrind cachegrind)\n")
    print("| case | tree | produce | + encode |")
    print("|---|---|--:|--:|")
    for case in cases:
        for tree in trees:
            if case in KAFKA_CASES and not has_kafka_producer(tree):
                print(f"| {case} | {tree} | n/a: no KafkaProducer | |", flush=True)
                continue
            alone = per_message(tree, case, args.messages, encode=False)
            cell = "" if case == "noop" else f"{per_message(tree, case, args.messages, True):,.0f}"
            print(f"| {case} | {tree} | {alone:,.0f} | {cell} |", flush=True)


if __name__ == "__main__":
    main()
