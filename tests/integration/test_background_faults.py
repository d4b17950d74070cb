"""The BackgroundProducer while a broker is SIGKILLed and restarted, twice, or silent.

(a) idempotent, acks=-1: nothing lost, nothing duplicated, per-partition and
    per-key order equal to send order, every future resolved successfully;
(b) acks=1 without idempotence and no retries: every future resolves; every
    success is in the log at its reported offset (or lost where Kafka's acks=1
    may lose it), never elsewhere and never twice; a failure the broker refused
    (``maybe_written`` False) is not in the log, and some messages are refused
    by construction (stamped past the topic's accepted timestamps);
(c) one broker silent (SIGSTOP): partitions led by the others keep being
    acknowledged while it is silent; its own wait, then are delivered.

Everything is read back with confluent-kafka (librdkafka).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from grete.client import KafkaClient
from grete.errors import InvalidTimestamp, KafkaTimeoutError
from grete.partitioners import partition_id_for_key
from grete.producer import BackgroundProducer, DeliveryFuture

from ._brokers import restart_all
from ._consume import high_watermarks, read_messages

pytest.importorskip("confluent_kafka")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NUM_PARTITIONS = 6
NUM_KEYS = 1000
# (a) sends at least this many; it keeps sending until both kill cycles are
# over (so both happen mid-run), up to IDEMPOTENT_MAX. See the test docstring.
IDEMPOTENT_MESSAGES = int(os.environ.get("GRETE_BG_FAULT_MESSAGES", "1000000"))
IDEMPOTENT_MAX = int(os.environ.get("GRETE_BG_FAULT_MAX", str(3 * IDEMPOTENT_MESSAGES)))
ACKS1_MESSAGES = int(os.environ.get("GRETE_BG_FAULT_ACKS1_MESSAGES", "200000"))
PRODUCE_BUDGET_S = 150.0
READ_BUDGET_S = 120.0
DOWN_S = 3.0
# How long before a kill an acks=1 answer may come and its record still be lost:
# the followers' lag (they stay in sync up to replica.lag.time.max.ms, 30 s).
ACKS1_LAG_S = 30.0
# acks=1 test: every REFUSE_EVERY-th message is stamped FUTURE_MS ahead, past its
# topic's message.timestamp.after.max.ms: the broker refuses its batch
# (INVALID_TIMESTAMP), so refused messages exist whatever the kills do.
REFUSE_EVERY = 10_007
FUTURE_MS = 24 * 3600 * 1000


def _key(i: int) -> bytes:
    return b"key-%03d" % (i % NUM_KEYS)


def _value(i: int) -> bytes:
    # key + that key's sequence number: the i-th message overall. Keys and
    # values of one length each, as most real traffic: the stage's records
    # are then encoded as runs where they are placed (ProducerBatch.add_run),
    # and batches sent again after a kill are encoded from their columns.
    return b"key-%03d:%09d" % (i % NUM_KEYS, i // NUM_KEYS)


def _read(kafka_cluster: Any, topic: str, expected: int) -> dict[int, list[tuple[int, bytes]]]:
    """(offset, value) per partition, from offset 0, until ``expected`` arrived
    and 2 s more (to catch duplicates past the end); bounded by READ_BUDGET_S."""
    out: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for msg in read_messages(
        kafka_cluster,
        topic,
        NUM_PARTITIONS,
        expected,
        settle_s=2.0,
        timeout_s=READ_BUDGET_S,
        group_prefix="grete-bg-faults",
    ):
        out[msg.partition()].append((msg.offset(), msg.value()))
    return out


def _log_size(kafka_cluster: Any, topic: str) -> int:
    """Records in ``topic``'s partitions (the sum of their high watermarks:
    written from offset 0, nothing deleted, no control records). Asked again
    while a leader just restarted says its high watermark is not caught up
    (OFFSET_NOT_AVAILABLE), bounded (``high_watermarks``)."""
    marks = high_watermarks(
        kafka_cluster.bootstrap_servers, {topic: NUM_PARTITIONS}, timeout_s=60.0
    )
    return sum(marks.values())


@dataclass
class _Killer:
    """Kills the leader of a partition, waits DOWN_S, restarts it, waits until
    the metadata lists every broker again; ``cycles`` times."""

    kafka_cluster: Any
    topic: str
    cycles: int = 2
    first_delay_s: float = 1.0
    kills: list[tuple[int, float]] = field(default_factory=list)
    restarted: list[float] = field(default_factory=list)
    down: set[int] = field(default_factory=set)
    # Partitions the victim led when it was killed (acks=1 may lose there).
    victim_partitions: set[int] = field(default_factory=set)
    # Per kill, in order: the partitions its victim led.
    kill_partitions: list[set[int]] = field(default_factory=list)
    error: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = KafkaClient(self.kafka_cluster.bootstrap_servers)
        try:
            if self.stop.wait(self.first_delay_s):
                return
            for cycle in range(self.cycles):
                client.update_cluster()
                leader = client.topics[self.topic].partitions[cycle % NUM_PARTITIONS].leader
                assert leader is not None
                victim = self.kafka_cluster.broker(leader.id)
                led = {
                    p
                    for p, part in client.topics[self.topic].partitions.items()
                    if part.leader is not None and part.leader.id == leader.id
                }
                self.victim_partitions.update(led)
                self.kill_partitions.append(led)
                self.down.add(leader.id)
                victim.kill()
                self.kills.append((leader.id, time.monotonic()))
                time.sleep(DOWN_S)
                restart_all(self.kafka_cluster)
                self.down.discard(leader.id)
                self.restarted.append(time.monotonic())
                if cycle + 1 < self.cycles and self.stop.wait(1.0):
                    return
        except BaseException as exc:  # reported by the test
            self.error.append(exc)
        finally:
            client.close()


def _needs_harness(kafka_cluster: Any) -> None:
    if not hasattr(kafka_cluster, "brokers") or not hasattr(kafka_cluster, "wait_for_brokers"):
        pytest.skip("needs the harness's own brokers")
    assert all(b.is_running for b in kafka_cluster.brokers)


def _produce_while_killing(
    producer: BackgroundProducer,
    killer: _Killer,
    minimum: int,
    maximum: int,
    callback: Callable[[DeliveryFuture], None],
    keep: Callable[[int, DeliveryFuture], None] | None,
    refuse_every: int = 0,
) -> tuple[int, float, float]:
    """Produce message 0, 1, ... until the killer is done and at least
    ``minimum`` were sent (or PRODUCE_BUDGET_S has passed: then fewer are
    checked). Never cut short by the clock while the killer runs, so both
    kills come mid-run however slowly brokers restart (the killer is bounded
    by its restart timeouts); ``maximum`` only bounds memory. Every
    ``refuse_every``-th message (if set) is stamped a day ahead, which a
    topic with ``message.timestamp.after.max.ms`` refuses (INVALID_TIMESTAMP)
    with its whole batch. Returns (count, t0, end)."""
    thread = threading.Thread(target=killer.run, name="killer", daemon=True)
    t0 = time.monotonic()
    thread.start()
    i = 0
    produce = producer.produce
    try:
        while i < maximum:
            if i & 255 == 0:
                enough = i >= minimum or time.monotonic() - t0 > PRODUCE_BUDGET_S
                if enough and not thread.is_alive():
                    break
                if enough:
                    # Keep a trickle going until both kill cycles are over,
                    # without running into ``maximum`` first (a fast producer
                    # did, and the second kill never came).
                    time.sleep(0.05)
            if refuse_every and i % refuse_every == refuse_every // 2:
                f = produce(
                    _value(i),
                    partition_key=_key(i),
                    callback=callback,
                    timestamp=int(time.time() * 1000) + FUTURE_MS,
                )
            else:
                f = produce(_value(i), partition_key=_key(i), callback=callback)
            if keep is not None:
                keep(i, f)
            i += 1
        end = time.monotonic()
    finally:
        if i >= maximum:
            killer.stop.set()
        thread.join(400.0)
    assert not thread.is_alive(), "the killer thread hung"
    assert not killer.error, killer.error
    return i, t0, end


@pytest.mark.timeout(420)
def test_idempotent_background_producer_survives_two_leader_kills(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """At least GRETE_BG_FAULT_MESSAGES (default 1,000,000) keyed messages, and
    more while the two kill/restart cycles are not over yet, so that both
    kills hit the producer mid-run (fewer if PRODUCE_BUDGET_S runs out first:
    whatever was sent is checked). Measured on a loaded 2-core machine: 1M in
    33 s alone, 78 s beside another test session; about 1.5-2.5 min per run."""
    _needs_harness(kafka_cluster)
    name = topic_factory(partitions=NUM_PARTITIONS, replication_factor=3)
    where = [partition_id_for_key(_key(k), NUM_PARTITIONS) for k in range(NUM_KEYS)]
    client = KafkaClient(kafka_cluster.bootstrap_servers)
    ok = [0]
    failed: list[tuple[bytes | None, BaseException | None]] = []
    sampled: dict[int, DeliveryFuture] = {}

    def done(f: DeliveryFuture) -> None:
        err = f.exception(timeout=0)
        if err is None:
            ok[0] += 1
        elif len(failed) < 100:
            failed.append((f.value, err))
        else:
            failed.append((None, None))

    def keep(i: int, f: DeliveryFuture) -> None:
        if i % 997 == 0:
            sampled[i] = f

    killer = _Killer(kafka_cluster, name)
    try:
        producer = BackgroundProducer(client.cluster, client.topics[name], required_acks=-1)
        assert producer._sender.engine.idempotent
        count, t0, end = _produce_while_killing(
            producer, killer, IDEMPOTENT_MESSAGES, IDEMPOTENT_MAX, done, keep
        )
        left = producer.flush(timeout=PRODUCE_BUDGET_S)
        flushed = time.monotonic()
        producer.close(timeout=10.0)
        metrics = producer.metrics()
    finally:
        killer.stop.set()
        client.close()
        restart_all(kafka_cluster)
    print(
        f"\n{count} messages: produce() {end - t0:.1f}s, flushed at {flushed - t0:.1f}s "
        f"({count / (flushed - t0):.0f} msg/s); kills at "
        f"{[(n, round(t - t0, 1)) for n, t in killer.kills]}, back at "
        f"{[round(t - t0, 1) for t in killer.restarted]}; metrics {metrics}"
    )
    assert len(killer.kills) == 2 and len(killer.restarted) == 2
    assert all(t < end for _, t in killer.kills), "a kill came after produce() finished"
    assert left == 0
    assert failed == [], failed[:5]
    assert ok[0] == count

    log = _read(kafka_cluster, name, count)
    total = 0
    for p in range(NUM_PARTITIONS):
        got = log.get(p, [])
        total += len(got)
        offsets = [o for o, _ in got]
        values = [v for _, v in got]
        want = [_value(i) for i in range(count) if where[i % NUM_KEYS] == p]
        if values != want:
            dupes = len(values) - len(set(values))
            missing = len(set(want) - set(values))
            first_bad = next(
                (i for i, (a, b) in enumerate(zip(values, want, strict=False)) if a != b), None
            )
            pytest.fail(
                f"partition {p}: read {len(values)}, want {len(want)}; {dupes} duplicate(s), "
                f"{missing} missing, first difference at {first_bad}"
            )
        assert offsets == list(range(len(offsets))), f"partition {p}: offsets not 0..n-1"
    assert total == count
    # Per key, the sequence numbers come in order 0, 1, 2, ... (implied by the
    # per-partition check, verified directly on a few keys as a cross-check).
    for k in (0, 1, NUM_KEYS - 1):
        seq = [int(v.split(b":")[1]) for _, v in log[where[k]] if v.split(b":")[0] == _key(k)]
        assert seq == list(range(len(seq))) and len(seq) == len(range(k, count, NUM_KEYS))
    # Reported offsets agree with the log.
    assert sampled
    for i, f in sampled.items():
        r = f.result(timeout=0)
        assert r.partition == where[i % NUM_KEYS]
        assert log[r.partition][r.offset] == (r.offset, _value(i))


@pytest.mark.timeout(420)
def test_acks1_background_producer_reports_honestly_through_leader_kills(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """acks=1, no idempotence, max_retries=0: failures are certain while a
    leader is down. Every future resolves; successes are in the log at their
    offset (except acks=1 writes the killed leader had not replicated yet,
    which Kafka itself may lose; only counted on the killed leaders'
    partitions); refused messages (``maybe_written`` False) are not in the log."""
    _needs_harness(kafka_cluster)
    name = topic_factory(
        partitions=NUM_PARTITIONS,
        replication_factor=3,
        config={"message.timestamp.after.max.ms": str(3600 * 1000)},
    )
    client = KafkaClient(kafka_cluster.bootstrap_servers)
    futures: list[DeliveryFuture] = []
    # When each future resolved (the sender thread runs the callback as the answer lands).
    resolved_at: dict[int, float] = {}
    killer = _Killer(kafka_cluster, name)
    try:
        producer = BackgroundProducer(
            client.cluster,
            client.topics[name],
            required_acks=1,
            max_retries=0,
            retry_backoff_ms=100,
            delivery_timeout_ms=60_000,
        )
        assert not producer._sender.engine.idempotent
        count, t0, end = _produce_while_killing(
            producer,
            killer,
            ACKS1_MESSAGES,
            5 * ACKS1_MESSAGES,
            lambda f: resolved_at.__setitem__(id(f), time.monotonic()),
            lambda i, f: futures.append(f),
            refuse_every=REFUSE_EVERY,
        )
        left = producer.flush(timeout=PRODUCE_BUDGET_S)
        producer.close(timeout=10.0)
    finally:
        killer.stop.set()
        client.close()
        restart_all(kafka_cluster)
    assert left == 0
    assert len(killer.kills) == 2 and all(t < end for _, t in killer.kills)
    assert len(futures) == count and all(f.done() for f in futures)

    # Failures and acks=1 losses leave fewer than ``count`` in the log: read
    # up to its end, as the brokers report it, and check that all was read.
    size = _log_size(kafka_cluster, name)
    log = _read(kafka_cluster, name, size)
    assert sum(len(entries) for entries in log.values()) >= size, "the log was not read whole"
    at: dict[tuple[int, int], bytes] = {}
    where_value: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for p, entries in log.items():
        for o, v in entries:
            at[(p, o)] = v
            where_value[v].append((p, o))
    risky = killer.victim_partitions
    successes = failures = refused = maybe = stamped_refused = 0
    lost_acked: dict[int, int] = defaultdict(int)
    lost_when: list[tuple[int, float]] = []
    # Acknowledged, not at the reported offset, but in the log elsewhere: the
    # reported offset is wrong (or the message was written twice). No acks=1
    # loss explains that: with max_retries=0 a message is sent once, and a
    # record a follower copied keeps its offset.
    misplaced: list[tuple[int, tuple[int, int], list[tuple[int, int]]]] = []
    # Each message is in the log at most once (max_retries=0: sent once).
    twice = {v: where for v, where in where_value.items() if len(where) > 1}
    stamped_ok: list[int] = []
    for i, f in enumerate(futures):
        err = f.exception(timeout=0)
        v = _value(i)
        stamped = i % REFUSE_EVERY == REFUSE_EVERY // 2
        if err is None:
            successes += 1
            if stamped:
                stamped_ok.append(i)
            r = f.result(timeout=0)
            if at.get((r.partition, r.offset)) != v:
                if v in where_value:
                    misplaced.append((i, (r.partition, r.offset), where_value[v]))
                else:
                    lost_acked[r.partition] += 1
                    lost_when.append((r.partition, resolved_at[id(f)]))
        else:
            failures += 1
            if f.maybe_written:
                maybe += 1
            else:
                refused += 1
                if stamped and isinstance(err, InvalidTimestamp):
                    stamped_refused += 1
                assert v not in where_value, (
                    f"message {i} failed with {err!r} and maybe_written=False, "
                    f"yet it is in the log at {where_value[v]}"
                )
    print(
        f"\nacks=1: {count} messages in {end - t0:.1f}s: {successes} ok, {failures} failed "
        f"({refused} refused, {stamped_refused} of them stamped ahead, {maybe} maybe "
        f"written); acked but not in the log per partition: {dict(lost_acked)} (killed "
        f"leaders' partitions: {sorted(risky)}); acked at another offset: {len(misplaced)}"
    )
    assert successes + failures == count
    assert successes > 0
    assert not misplaced, f"acknowledged at one offset, in the log at another: {misplaced[:5]}"
    assert not twice, f"{len(twice)} message(s) in the log twice: {list(twice.items())[:5]}"
    # The broker refuses every message stamped a day ahead (whatever else its
    # batch ran into): none succeeds, and the refused checks above check some.
    assert not stamped_ok, f"messages stamped a day ahead were acknowledged: {stamped_ok[:5]}"
    assert stamped_refused > 0, "no INVALID_TIMESTAMP refusal: the refused check checked nothing"
    assert refused > 0
    assert set(lost_acked) <= risky, (lost_acked, risky)
    # acks=1 loses only what a killed leader acknowledged and its followers had
    # not copied yet: on a partition that kill's victim led, answered before the
    # kill and within the followers' allowed lag of it; never after it.
    # (A count bound, count // 20, failed in CI: 15,334 of 265,728 lost, about
    # 1.7 s of those partitions' traffic, on a loaded machine whose followers lag.)
    # ``w`` is when the callback ran, after the answer: a busy sender thread
    # runs it later, so the window's end is not the kill but the victim's
    # restart (nothing answered by the victim is newer than its kill, and it
    # is down DOWN_S at least).
    kills = [
        (t, back, led)
        for (_, t), back, led in zip(
            killer.kills, killer.restarted, killer.kill_partitions, strict=True
        )
    ]
    stale = [
        (p, round(w - t0, 2))
        for p, w in lost_when
        if not any(p in led and t - ACKS1_LAG_S <= w <= back for t, back, led in kills)
    ]
    assert not stale, (
        f"{len(stale)} message(s) lost though no kill explains them ((partition, answered "
        f"at s) {stale[:5]}; kills at "
        f"{[(round(t - t0, 2), sorted(led)) for t, _, led in kills]})"
    )


SILENT_S = 2.5
# How long the others' messages may take while the victim is still silent. A
# producer stalled by the silent broker would wait for its request timeout
# (socket_timeout_ms, 30 s) before anything else moved.
OTHERS_WAIT_S = 15.0


def test_a_silent_broker_does_not_stall_partitions_led_by_others(
    kafka_cluster: Any, topic_factory: Any
) -> None:
    """One broker stops answering (SIGSTOP: its connections stay open, nothing
    comes back). Messages produced meanwhile to partitions led by the others
    are acknowledged while it is still silent; none of its own is (they wait
    for it), and they are delivered once it answers again. Everything is read
    back.

    No latency bound: the product promises none. The silence lasts until the
    others' messages are acknowledged (up to OTHERS_WAIT_S, well short of the
    30 s request timeout that alone would end a stall). One replica per
    partition, so a silence past the broker session timeout (3 s: the victim
    is fenced) moves no leader and loses no acks=1 write."""
    _needs_harness(kafka_cluster)
    name = topic_factory(partitions=NUM_PARTITIONS, replication_factor=1)
    client = KafkaClient(kafka_cluster.bootstrap_servers)
    producer = BackgroundProducer(
        client.cluster,
        client.topics[name],
        required_acks=1,
        enable_idempotence=False,
        linger_ms=1,
        delivery_timeout_ms=60_000,
    )
    sent: list[tuple[int, bytes, float, DeliveryFuture]] = []

    def produce(partition: int, i: int) -> None:
        value = b"silent-%d-%05d" % (partition, i)
        future = producer.produce(value, partition=partition)
        sent.append((partition, value, time.monotonic(), future))

    try:
        client.update_cluster()
        partitions = client.topics[name].partitions
        victim_id = partitions[0].leader.id  # type: ignore[union-attr]
        others = [p for p, part in partitions.items() if part.leader.id != victim_id]  # type: ignore[union-attr]
        mine = [p for p in partitions if p not in others]
        assert others, "every partition led by one broker"
        for p in partitions:  # connections to every leader, before the silence
            produce(p, 0)
        assert producer.flush(timeout=30) == 0
        victim = kafka_cluster.broker(victim_id)
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        silent_from = time.monotonic()
        try:
            i = 1
            while time.monotonic() - silent_from < SILENT_S:
                for p in partitions:
                    produce(p, i)
                i += 1
                time.sleep(0.05)
            during = [s for s in sent if s[2] >= silent_from]
            theirs = [f for p, _, _, f in during if p in others]
            deadline = time.monotonic() + OTHERS_WAIT_S
            for f in theirs:
                with contextlib.suppress(KafkaTimeoutError):  # counted below
                    f.exception(timeout=max(0.0, deadline - time.monotonic()))
            # Read while the victim is still stopped.
            unresolved = sum(1 for f in theirs if not f.done())
            theirs_failed = [f.exception(timeout=0) for f in theirs if f.done()]
            theirs_failed = [e for e in theirs_failed if e is not None]
            stalled = [f for p, _, _, f in during if p in mine and not f.done()]
            mine_during = [f for p, _, _, f in during if p in mine]
            silent_for = time.monotonic() - silent_from
        finally:
            os.kill(pid, signal.SIGCONT)
        assert theirs and unresolved == 0, (
            f"{unresolved} of {len(theirs)} message(s) to partitions led by the others still "
            f"unacknowledged after {silent_for:.1f} s of one broker's silence"
        )
        assert not theirs_failed, theirs_failed[:5]
        # Nothing of the silent broker's resolved while it was stopped.
        assert len(stalled) == len(mine_during) > 0, (len(stalled), len(mine_during))
        assert producer.flush(timeout=60) == 0
        failed = [(p, f.exception(timeout=0)) for p, _, _, f in sent if f.exception(timeout=0)]
        assert not failed, failed[:5]
    finally:
        producer.close(timeout=30)
        client.close()
    expected = {(p, v) for p, v, _, _ in sent}
    got = {
        (msg.partition(), msg.value())
        for msg in read_messages(
            kafka_cluster, name, NUM_PARTITIONS, len(expected), group_prefix="grete-silent"
        )
    }
    assert got == expected, (len(got), len(expected))
