"""Transactional produce throughput and commit latency: grete against confluent-kafka.

Issue 27's benchmark. Each client sends N messages of 100 B (``--messages``, 200,000)
to a topic of 6 partitions, replication factor 3, in transactions: ``begin``, produce,
``commit`` every 1,000 messages or every 100 ms, whichever comes first (the time is
counted from ``begin_transaction``), until all N are committed. Clients:

* grete: ``client.producer(transactional_id=..., linger_ms=5)`` (a ``KafkaProducer``:
  acks=all, idempotent), ``produce(topic, value)`` per message, futures dropped;
* confluent: ``confluent_kafka.Producer`` with ``transactional.id``, ``acks=all``,
  ``enable.idempotence=true``, ``linger.ms=5``; ``produce(topic, value)`` per message,
  delivery reports counted by ``on_delivery`` (served by ``poll(0)`` every 1,000
  messages and by ``commit_transaction`` itself).

Every round runs each client once, in its own child process (so its CPU is its own),
to a fresh topic with a fresh transactional id; the order of the clients alternates
from round to round. ``init_transactions()`` and the topic's metadata come before the
clock; the clock runs from the first ``begin_transaction`` to the return of the last
``commit_transaction``. Reported, the median over ``--rounds`` (3):

* msgs/s: N over the timed section;
* CPU us/msg: the child's user + system CPU (``getrusage(RUSAGE_SELF)``: every
  thread, librdkafka's and grete's sender included) over the timed section, per
  message. The brokers share the machine's cores: msgs/s swings, CPU a message is
  the steadier figure;
* commit p50/p99: the wall time of each ``commit_transaction()`` call (it sends what
  is still queued, waits for the acknowledgements, then EndTxn), over every commit of
  every round pooled.

A round counts only if the client saw every message acknowledged with no error
*and* a ``read_committed`` consumer reads exactly N messages from the topic.
Everything is bounded: a round's child is killed after ``--timeout`` seconds (it
dumps every thread's stack to its stderr first, kept under the run's directory).

    .venv/bin/python benchmarks/bench_transactions.py                 # starts 3 brokers
    .venv/bin/python benchmarks/bench_transactions.py --bootstrap 127.0.0.1:19092
    .venv/bin/python benchmarks/bench_transactions.py --messages 50000 --rounds 1
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import json
import os
import platform
import random
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLIENTS = ("grete", "confluent")
PARTITIONS = 6
REPLICATION = 3
SIZE = 100
COMMIT_EVERY = 1_000
COMMIT_INTERVAL_S = 0.100
LINGER_MS = 5

# ---------------------------------------------------------------------------- child side


def cpu_now() -> float:
    """User + system CPU seconds of this process so far, every thread's included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_values(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(SIZE) for _ in range(n)]


@dataclass
class Result:
    acked: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    commits: list[float] = field(default_factory=list)  # seconds per commit_transaction
    error: str | None = None


def transact(
    values: list[bytes],
    produce: Any,
    begin: Any,
    commit: Any,
    poll: Any,
    result: Result,
) -> None:
    """The timed loop both clients run: begin, produce, commit after COMMIT_EVERY
    messages or once COMMIT_INTERVAL_S passed since begin, whichever first; a
    transaction is begun only for a message to put in it, so no commit is empty.
    ``poll`` (if any) after every commit. Fills result.seconds, .cpu, .commits."""
    clock = time.perf_counter
    commits = result.commits
    interval = COMMIT_INTERVAL_S
    every = COMMIT_EVERY
    cpu0 = cpu_now()
    t0 = clock()
    started = t0
    count = 0
    for value in values:
        if not count:
            begin()
            started = clock()
        produce(value)
        count += 1
        if count == every or clock() - started >= interval:
            c0 = clock()
            commit()
            commits.append(clock() - c0)
            count = 0
            if poll is not None:
                poll()
    if count:
        c0 = clock()
        commit()
        commits.append(clock() - c0)
    end = clock()
    result.cpu = cpu_now() - cpu0
    result.seconds = end - t0


def run_grete(spec: dict[str, Any], values: list[bytes], result: Result) -> None:
    from grete import KafkaClient  # type: ignore[attr-defined,unused-ignore]

    topic = spec["topic"]
    call_timeout = spec["call_timeout"]
    client = KafkaClient(spec["bootstrap"])
    try:
        client.topics[topic]  # metadata fetched before the clock
        producer = client.producer(
            transactional_id=spec["transactional_id"],
            linger_ms=LINGER_MS,
            required_acks=-1,
        )
        try:
            producer.init_transactions(call_timeout)
            send = producer.produce

            def produce(value: bytes) -> None:
                send(topic, value)

            def commit() -> None:
                producer.commit_transaction(call_timeout)

            transact(values, produce, producer.begin_transaction, commit, None, result)
            metrics = producer.metrics()
            result.acked = metrics["messages_sent"]
            if metrics["errors"]:
                result.error = f"{metrics['errors']} message(s) failed"
        finally:
            producer.close(10)
    finally:
        client.close()


def run_confluent(spec: dict[str, Any], values: list[bytes], result: Result) -> None:
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

    topic = spec["topic"]
    call_timeout = spec["call_timeout"]
    p = Producer(
        {
            "bootstrap.servers": spec["bootstrap"],
            "transactional.id": spec["transactional_id"],
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": LINGER_MS,
            "on_delivery": on_delivery,
        }
    )
    p.list_topics(topic, timeout=call_timeout)  # connect + metadata before the clock
    p.init_transactions(call_timeout)
    send = p.produce

    def produce(value: bytes) -> None:
        send(topic, value)

    def commit() -> None:
        p.commit_transaction(call_timeout)

    def poll() -> None:
        p.poll(0)

    transact(values, produce, p.begin_transaction, commit, poll, result)
    remaining = p.flush(10)
    result.acked = counts["ok"]
    if first_error:
        result.error = f"{counts['err']} message(s) failed: {first_error[0]}"
    elif remaining:
        result.error = f"{remaining} message(s) still queued after the last commit"


RUNNERS = {"grete": run_grete, "confluent": run_confluent}


def child_main(spec: dict[str, Any]) -> None:
    # Before the parent's kill: every thread's stack on stderr (a hang, diagnosed).
    faulthandler.dump_traceback_later(max(1.0, spec["timeout"] - 5), exit=True)
    values = make_values(spec["n"], spec["seed"])
    result = Result()
    try:
        RUNNERS[spec["client"]](spec, values, result)
    except Exception as exc:  # the parent reports it as FAILED
        result.error = f"{type(exc).__name__}: {exc}"
    faulthandler.cancel_dump_traceback_later()
    print(json.dumps(result.__dict__), flush=True)


# ---------------------------------------------------------------------------- parent side


@dataclass
class Run:
    client: str
    round: int
    msgs_s: float | None = None
    cpu_us: float | None = None
    commits: list[float] = field(default_factory=list)
    note: str = ""


def run_child(argv: list[str], timeout: float) -> tuple[int, str, str, bool]:
    """Run ``argv`` in its own session with a hard deadline: (rc, stdout, stderr, timed out)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        timed_out = False
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: nothing else is hit
            proc.wait()
        out.seek(0)
        err.seek(0)
        return (
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            timed_out,
        )


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str) -> None:
        from grete.testing.admin import make_admin

        self.args = args
        self.bootstrap = bootstrap
        self.admin = make_admin(bootstrap, None)
        self.run_id = uuid.uuid4().hex[:6]
        self.seq = 0
        self.dir = Path(tempfile.mkdtemp(prefix="grete-bench-txn-"))

    def fresh_topic(self, client: str) -> str:
        from grete.testing.admin import wait_for_topic

        self.seq += 1
        name = f"bench-txn-{self.run_id}-{client}-{self.seq}"
        self.admin.create_topic(name, PARTITIONS, REPLICATION, {}, 30.0)
        wait_for_topic(self.admin, name, PARTITIONS, 30.0)
        return name

    def committed_count(self, topic: str, n: int) -> tuple[int, str | None]:
        """Messages a read_committed consumer reads from ``topic`` (bounded): every
        partition read to its end, waiting (up to 30 s) for the last markers."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-txn-{self.run_id}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
        try:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            count, at_end = 0, set()
            deadline = time.monotonic() + 30 + n / 20_000
            while time.monotonic() < deadline:
                for msg in c.consume(10_000, 0.5):
                    err = msg.error()
                    if err is None:
                        count += 1
                        at_end.discard(msg.partition())
                    elif err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                    else:
                        return count, f"consumer error: {err}"
                if len(at_end) == PARTITIONS and count >= n:
                    break
            return count, None
        finally:
            c.close()

    def run(self, client: str, n: int, rnd: int) -> Run:
        run = Run(client, rnd)
        topic = self.fresh_topic(client)
        spec = {
            "client": client,
            "bootstrap": self.bootstrap,
            "topic": topic,
            "transactional_id": f"bench-txn-{self.run_id}-{client}-{self.seq}",
            "n": n,
            "seed": self.args.seed,
            "timeout": self.args.timeout,
            "call_timeout": min(60.0, self.args.timeout / 2),
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        rc, out, err, timed_out = run_child(argv, self.args.timeout)
        log = self.dir / f"{client}-round{rnd}-{self.seq}.stderr"
        if err.strip():
            log.write_text(err)
        if timed_out:
            run.note = f"FAILED: timeout after {self.args.timeout:.0f}s (stacks: {log})"
            return run
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if rc != 0 or not lines:
            why = last_line(err or out)
            run.note = f"FAILED: rc={rc} {why}" + (f" (stderr: {log})" if err.strip() else "")
            return run
        res = json.loads(lines[-1])
        if res["acked"] != n or res["error"]:
            run.note = f"FAILED: {res['acked']:,}/{n:,} acked" + (
                f"; {res['error'][:200]}" if res["error"] else ""
            )
            return run
        count, problem = self.committed_count(topic, n)
        if problem or count != n:
            run.note = f"FAILED: read_committed reads {count:,} of {n:,}" + (
                f"; {problem}" if problem else ""
            )
            return run
        run.msgs_s = n / res["seconds"]
        run.cpu_us = res["cpu"] / n * 1e6
        run.commits = res["commits"]
        run.note = "ok"
        return run


def versions() -> str:
    parts = []
    try:
        import confluent_kafka

        parts.append(
            f"confluent-kafka {confluent_kafka.__version__} "
            f"(librdkafka {confluent_kafka.libversion()[0]})"
        )
    except ImportError:
        parts.append("confluent-kafka not installed")
    try:
        import grete

        parts.append(f"grete {getattr(grete, '__version__', '?')}")
    except ImportError:
        pass
    return ", ".join(parts)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() + (" (src/ modified)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help="use this running cluster (3 brokers or more)")
    ap.add_argument("--messages", type=int, default=200_000, help="messages per run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each client once a round)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma list of grete,confluent")
    ap.add_argument(
        "--warmup-messages",
        type=int,
        default=50_000,
        help="one unreported run per client first, of this many messages (0: none)",
    )
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per run")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            raise SystemExit(f"unknown client {c!r}; choose from {', '.join(CLIENTS)}")

    python = os.path.relpath(sys.executable)
    if python.startswith(".."):
        python = sys.executable
    command = " ".join(shlex.quote(a) for a in [python, *sys.argv]) + f" (in {os.getcwd()})"
    started = datetime.datetime.now().astimezone()
    load_before = os.getloadavg()[0]
    cluster: Any = None
    kafka = "?"
    if args.bootstrap:
        bootstrap = args.bootstrap
    else:
        from grete.testing.cluster import KafkaCluster

        # Brokers as in production (C2 JIT, G1, a 1 GiB heap), as bench_produce does.
        cluster = KafkaCluster(num_brokers=3, tuned_for_tests=False, heap_mb=1024)
        print("starting a 3-broker cluster...", file=sys.stderr, flush=True)
        cluster.start()
        bootstrap, kafka = cluster.bootstrap_servers, cluster.version
    runs: dict[str, list[Run]] = {c: [] for c in clients}
    try:
        bench = Bench(args, bootstrap)
        if args.warmup_messages > 0:
            for client in clients:
                w = bench.run(client, args.warmup_messages, 0)
                print(
                    f"  warm-up  {client:10} {fmt(w.msgs_s, ',.0f'):>10} msg/s  {w.note}",
                    file=sys.stderr,
                    flush=True,
                )
        for rnd in range(1, args.rounds + 1):
            # Alternate who goes first: a slow spell hits both clients alike.
            order = clients if rnd % 2 else clients[::-1]
            for client in order:
                r = bench.run(client, args.messages, rnd)
                runs[client].append(r)
                lat = (
                    f"commit p50 {pct(r.commits, 0.5) * 1e3:.1f} ms, "
                    f"p99 {pct(r.commits, 0.99) * 1e3:.1f} ms, {len(r.commits)} commits"
                    if r.commits
                    else ""
                )
                print(
                    f"  round {rnd} {client:10} {fmt(r.msgs_s, ',.0f'):>10} msg/s "
                    f"{fmt(r.cpu_us, '.2f'):>7} us/msg  {lat}  {r.note}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if cluster is not None:
            cluster.close()

    # ---- report
    print(f"# Transactional produce: grete vs confluent-kafka ({started:%Y-%m-%d %H:%M %Z})\n")
    print(f"- command: `{command}`  ")
    print(f"- commit: {git_commit()}  ")
    print(
        f"- machine: nproc {os.cpu_count()}, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}  "
    )
    print(f"- clients: {versions()}  ")
    print(
        f"- cluster: {'3 brokers started here, Kafka ' + kafka if cluster else bootstrap}; "
        f"topic of {PARTITIONS} partitions, RF {REPLICATION}, fresh per run  "
    )
    print(
        f"- load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        "(other processes share the cores)  "
    )
    print(
        f"- {args.messages:,} x {SIZE} B per run, acks=all, idempotent, linger 5 ms; commit "
        f"every {COMMIT_EVERY:,} messages or {COMMIT_INTERVAL_S * 1e3:.0f} ms after begin, "
        f"whichever first; {args.rounds} round(s), clients alternating, each run in its own "
        "child process\n"
    )
    print(
        "msgs/s and CPU: the median over the rounds (CPU: user + system, all threads of the "
        "client's process, over the timed section, a message); commit p50/p99: every "
        "commit_transaction() of every round pooled.\n"
    )
    print(
        "| client | msgs/s (median) | runs msgs/s | CPU us/msg (median) | commits/run "
        "| msgs/commit | commit p50 ms | commit p99 ms | result |"
    )
    print("|---|--:|---|--:|--:|--:|--:|--:|---|")
    summary: dict[str, dict[str, float]] = {}
    for client in clients:
        rs = runs[client]
        ok = [r for r in rs if r.msgs_s is not None]
        failed = [r for r in rs if r.msgs_s is None]
        note = "ok" if not failed else "; ".join(f"round {r.round}: {r.note}" for r in failed)
        if not ok:
            print(f"| {client} | - | - | - | - | - | - | - | {note} |")
            continue
        pooled = [c for r in ok for c in r.commits]
        s = {
            "msgs_s": statistics.median(r.msgs_s or 0.0 for r in ok),
            "cpu_us": statistics.median(r.cpu_us or 0.0 for r in ok),
            "p50": pct(pooled, 0.5) * 1e3,
            "p99": pct(pooled, 0.99) * 1e3,
            "commits": statistics.median(len(r.commits) for r in ok),
        }
        summary[client] = s
        each = ", ".join(f"{r.msgs_s:,.0f}" for r in ok)
        print(
            f"| {client} | {s['msgs_s']:,.0f} | {each} | {s['cpu_us']:.2f} | "
            f"{s['commits']:.0f} | {args.messages / s['commits']:,.0f} | {s['p50']:.1f} | "
            f"{s['p99']:.1f} | {note} |"
        )
    if "grete" in summary and "confluent" in summary:
        g, c = summary["grete"], summary["confluent"]
        paired = [
            (a.msgs_s or 0.0) / (b.msgs_s or 1.0)
            for a, b in zip(runs["grete"], runs["confluent"], strict=True)
            if a.msgs_s and b.msgs_s
        ]
        ratio = g["msgs_s"] / c["msgs_s"]
        print(
            f"\ngrete/confluent: throughput {ratio:.2f}x (median of the rounds' own ratios "
            f"{statistics.median(paired):.2f}x: "
            + ", ".join(f"{x:.2f}" for x in paired)
            + f"); CPU a message {g['cpu_us'] / c['cpu_us']:.2f}x; commit p50 "
            f"{g['p50'] / c['p50']:.2f}x, p99 {g['p99'] / c['p99']:.2f}x. "
            f"Target throughput >= 1.0x: {'met' if ratio >= 1.0 else 'NOT met'}."
        )
    if any(bench.dir.iterdir()):
        print(f"\nchildren's stderr (client logs, stacks of a run that hung): {bench.dir}")


if __name__ == "__main__":
    main()
