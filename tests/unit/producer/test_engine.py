"""ProduceEngine driven by hand with fake broker answers (no I/O, no broker)."""

from __future__ import annotations

from typing import Any

import pytest

from grete.errors import (
    InvalidRecord,
    KafkaConnectionError,
    KafkaError,
    LeaderNotAvailable,
    MessageSizeTooLarge,
    NotEnoughReplicas,
    NotLeaderOrFollower,
)
from grete.producer.batch import ProducerBatch
from grete.producer.engine import Plan, ProduceEngine
from grete.producer.errors import DeliveryTimeoutError, OutcomeUnknownError
from grete.protocol.records import decode_batches

TOPIC = "t"
NOT_LEADER = 6
NOT_ENOUGH_REPLICAS = 19
MESSAGE_TOO_LARGE = 10
OUT_OF_ORDER = 45
DUPLICATE = 46

Done = tuple[ProducerBatch, int, int, "KafkaError | None"]


class Harness:
    """An engine, a record of what it finished, and a controllable clock."""

    def __init__(
        self, *, idempotent: bool = False, leaders: dict[int, int] | None = None, **kw: Any
    ) -> None:
        self.done: list[Done] = []
        kw.setdefault("max_retries", 3)
        kw.setdefault("retry_backoff_s", 0.1)
        kw.setdefault("retry_backoff_max_s", 1.0)
        self.engine = ProduceEngine(
            on_done=lambda b, o, t, e: self.done.append((b, o, t, e)),
            acks=-1 if idempotent else 1,
            timeout_ms=1000,
            idempotent=idempotent,
            **kw,
        )
        if idempotent:
            self.engine.set_producer_id(4000, 0)
        self.leaders: dict[int, int | None] = dict(leaders or {0: 1, 1: 1, 2: 2})
        self.now = 100.0
        self.next_offset: dict[int, int] = {}

    def leader_of(self, topic: str, partition: int) -> int | None:
        assert topic == TOPIC
        return self.leaders.get(partition)

    def add(self, partition: int, n: int, start: int = 0) -> ProducerBatch:
        batch = ProducerBatch(TOPIC, partition, self.now)
        for i in range(start, start + n):
            batch.append(None, f"{partition}-{i}".encode(), None, 1_700_000_000_000, i, 10)
        self.engine.add(batch)
        return batch

    def plan(self) -> list[Plan]:
        return self.engine.plan(self.now, self.leader_of)

    def answer(self, plan: Plan, codes: dict[int, int] | None = None) -> None:
        """Answer every batch of ``plan``; ``codes`` maps partition -> error code."""
        codes = codes or {}
        parts: list[dict[str, Any]] = []
        for batch in plan.batches:
            code = codes.get(batch.partition, 0)
            base = -1
            if code == 0:
                base = self.next_offset.get(batch.partition, 0)
                self.next_offset[batch.partition] = base + len(batch)
            parts.append(
                {
                    "index": batch.partition,
                    "error_code": code,
                    "base_offset": base,
                    "log_append_time_ms": -1,
                    "error_message": None,
                    "record_errors": [],
                }
            )
        body = {"responses": [{"name": TOPIC, "partition_responses": parts}]}
        self.engine.on_response(plan, body, self.now)

    def only_plan(self) -> Plan:
        plans = self.plan()
        assert len(plans) == 1, plans
        return plans[0]

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _confirmed(h: Harness, partition: int) -> None:
    """As if a batch of ``partition`` had been acknowledged under this producer
    id: the broker holds our state, so batches may be pipelined."""
    h.engine._partitions[(TOPIC, partition)].confirmed = True


def _sequence_of(plan: Plan, partition: int) -> tuple[int, int, int]:
    """(producer_id, epoch, base_sequence) as encoded in the request bytes."""
    for topic in plan.body["topic_data"]:
        for p in topic["partition_data"]:
            if p["index"] == partition:
                (b,) = decode_batches(p["records"])
                return b.producer_id, b.producer_epoch, b.base_sequence
    raise AssertionError(f"partition {partition} not in plan")


def _values_sent(plan: Plan, partition: int) -> list[bytes | None]:
    for topic in plan.body["topic_data"]:
        for p in topic["partition_data"]:
            if p["index"] == partition:
                return [r.value for b in decode_batches(p["records"]) for r in b.records]
    raise AssertionError(f"partition {partition} not in plan")


def test_success_assigns_offsets_and_finishes() -> None:
    h = Harness()
    b0, b2 = h.add(0, 3), h.add(2, 2)
    plans = h.plan()
    assert sorted(p.node_id for p in plans) == [1, 2]
    assert h.engine.in_flight == 2 and h.engine.queued == 0
    for p in plans:
        h.answer(p)
    assert h.engine.idle
    offsets = {b.partition: (o, e) for b, o, _t, e in h.done}
    assert offsets == {0: (0, None), 2: (0, None)}
    assert {id(b) for b, *_ in h.done} == {id(b0), id(b2)}
    # A second batch of the same partition gets the next offsets from the broker.
    h.add(0, 4, start=3)
    h.answer(h.only_plan())
    assert h.done[-1][1] == 3


def test_one_request_per_broker_carries_one_batch_per_partition() -> None:
    h = Harness()
    h.add(0, 1)
    h.add(1, 1)
    plan = h.only_plan()  # partitions 0 and 1 share leader 1
    assert plan.node_id == 1 and len(plan.batches) == 2
    assert {b.partition for b in plan.batches} == {0, 1}


def test_stale_metadata_error_requeues_with_backoff_without_spending_an_attempt() -> None:
    h = Harness()
    batch = h.add(0, 2)
    plan = h.only_plan()
    h.answer(plan, {0: NOT_LEADER})
    assert h.done == []
    assert h.engine.needs_metadata
    assert h.engine.queued == 1 and h.engine.in_flight == 0
    # Backing off: nothing to send now, and the engine says when to wake.
    assert h.plan() == []
    wake = h.engine.next_retry_at(h.now)
    assert wake is not None and 100.0 + 0.08 <= wake <= 100.0 + 0.12
    h.advance(0.13)
    retry = h.only_plan()
    # A moved leader is a wait for metadata, bounded by the delivery timeout,
    # not one of max_retries (a failover takes seconds).
    assert retry.batches == [batch] and batch.attempts == 1
    h.answer(retry)
    assert [(b, e) for b, _o, _t, e in h.done] == [(batch, None)]


def test_backoff_grows_and_is_capped() -> None:
    h = Harness(max_retries=10, retry_backoff_s=0.1, retry_backoff_max_s=0.3)
    h.add(0, 1)
    waits = []
    for _ in range(5):
        h.answer(h.only_plan(), {0: NOT_LEADER})
        wake = h.engine.next_retry_at(h.now)
        assert wake is not None
        waits.append(wake - h.now)
        h.advance(wake - h.now + 1e-6)
    assert waits[0] == pytest.approx(0.1, rel=0.25)
    assert waits[1] == pytest.approx(0.2, rel=0.25)
    assert all(w <= 0.3 * 1.2 + 1e-9 for w in waits)
    assert waits[-1] == pytest.approx(0.3, rel=0.25)


def test_retriable_error_spends_an_attempt() -> None:
    h = Harness()
    batch = h.add(0, 1)
    h.answer(h.only_plan(), {0: NOT_ENOUGH_REPLICAS})
    assert h.done == [] and h.engine.queued == 1
    h.advance(0.2)
    h.answer(h.only_plan())
    assert batch.attempts == 2 and h.done[0][3] is None


def test_retry_backoff_stays_capped_after_thousands_of_attempts() -> None:
    # An unlimited retry budget and a long delivery timeout: 2 ** 1024 no
    # longer fits a float, which once killed the sender thread.
    h = Harness(max_retries=2_147_483_647, delivery_timeout_s=1e9)
    batch = h.add(0, 1)
    batch.attempts = 5000
    h.answer(h.only_plan(), {0: NOT_ENOUGH_REPLICAS})
    assert batch.attempts == 5001 and h.done == []
    assert 0.8 <= batch.retry_at - h.now <= 1.2  # retry_backoff_max_s, jittered
    h.advance(2.0)
    batch.waits = 5000  # waits for a leader back off the same way
    h.answer(h.only_plan(), {0: NOT_LEADER})
    assert h.done == [] and batch.retry_at - h.now <= 1.0


def test_stale_metadata_waits_end_at_the_delivery_timeout() -> None:
    h = Harness(max_retries=0, delivery_timeout_s=3.0)
    batch = h.add(0, 1)
    for _ in range(50):  # bounded: 50 x 0.5 s is far past the 3 s timeout
        plans = h.plan()
        if plans:
            h.answer(plans[0], {0: NOT_LEADER})
        if h.done:
            break
        h.advance(0.5)
    ((b, _o, _t, error),) = h.done
    assert b is batch and isinstance(error, DeliveryTimeoutError)
    assert isinstance(error.last_error, NotLeaderOrFollower)
    assert h.now - 100.0 >= 3.0


def test_max_retries_exhausted_fails_with_the_broker_error() -> None:
    h = Harness(max_retries=2)
    batch = h.add(0, 1)
    sends = 0
    for _ in range(10):  # bounded; expect 3 sends (1 + 2 retries)
        plans = h.plan()
        if not plans:
            if h.engine.idle:
                break
            h.advance(2.0)
            continue
        sends += 1
        h.answer(plans[0], {0: NOT_ENOUGH_REPLICAS})
    assert sends == 3
    assert h.engine.idle
    ((b, offset, _t, error),) = h.done
    assert b is batch and offset == -1
    assert isinstance(error, NotEnoughReplicas)


def test_non_retriable_error_fails_at_once() -> None:
    h = Harness()
    h.add(0, 1)
    h.answer(h.only_plan(), {0: 87})  # INVALID_RECORD: not retriable
    # The code's own class (docs/guarantees.rst, "Broker refuses the batch"),
    # refused: certainly not written.
    ((_b, offset, _t, error),) = h.done
    assert type(error) is InvalidRecord and error.code == 87, error
    assert offset == -1 and not error.retriable
    assert h.engine.idle


def test_duplicate_sequence_counts_as_success() -> None:
    h = Harness(idempotent=True)
    batch = h.add(0, 2)
    plan = h.only_plan()
    # Whatever base_offset comes with the code, the broker does not say where
    # the earlier write landed: the result's offset is -1 (docs/guarantees.rst).
    body = {
        "responses": [
            {
                "name": TOPIC,
                "partition_responses": [
                    {
                        "index": 0,
                        "error_code": DUPLICATE,
                        "base_offset": 7,
                        "log_append_time_ms": -1,
                        "error_message": None,
                        "record_errors": [],
                    }
                ],
            }
        ]
    }
    h.engine.on_response(plan, body, h.now)
    assert [(b, o, e) for b, o, _t, e in h.done] == [(batch, -1, None)]
    assert not h.engine.needs_epoch_bump
    assert h.engine.idle


def test_message_too_large_splits_multi_record_batch_in_order() -> None:
    h = Harness(max_in_flight=1)
    h.add(0, 4)
    later = h.add(0, 1, start=4)
    plan = h.only_plan()
    assert _values_sent(plan, 0) == [b"0-0", b"0-1", b"0-2", b"0-3"]
    h.answer(plan, {0: MESSAGE_TOO_LARGE})
    assert h.done == []
    sent: list[bytes | None] = []
    for _ in range(10):
        plans = h.plan()
        if not plans:
            break
        for p in plans:
            sent += _values_sent(p, 0)
            h.answer(p)
    assert sent == [b"0-0", b"0-1", b"0-2", b"0-3", b"0-4"]
    assert all(e is None for *_, e in h.done)
    handles = [list(b.handles) for b, *_ in h.done]
    assert handles == [[0, 1], [2, 3], [4]]
    assert h.done[-1][0] is later
    # Offsets follow the split halves in order.
    assert [o for _b, o, _t, _e in h.done] == [0, 2, 4]


def test_message_too_large_split_under_idempotence_keeps_order_with_pipelining() -> None:
    h = Harness(idempotent=True)
    h.add(0, 4)
    h.add(0, 1, start=4)
    _confirmed(h, 0)
    log: dict[int, list[bytes | None]] = {0: [], 1: [], 2: []}
    next_seq = {0: 0, 1: 0, 2: 0}
    big, small = h.plan()  # both in flight
    h.answer(big, {0: MESSAGE_TOO_LARGE})
    h.answer(small, {0: _land_one(small, small.batches[0], log, next_seq)})
    assert log[0] == []  # the later batch was refused as out of order
    for _ in range(20):
        if h.engine.idle:
            break
        if h.engine.needs_producer_id:
            h.engine.set_producer_id(4000, h.engine.producer_epoch + 1)
            next_seq[0] = 0  # the broker starts the new epoch at sequence 0
        for p in h.plan():
            h.answer(p, {0: _land_one(p, p.batches[0], log, next_seq)})
    assert h.engine.idle
    assert log[0] == [b"0-0", b"0-1", b"0-2", b"0-3", b"0-4"]
    assert all(e is None for *_, e in h.done)


def test_message_too_large_on_single_record_fails_alone() -> None:
    h = Harness(max_in_flight=1)
    big = h.add(0, 1)
    small = h.add(0, 1, start=1)
    h.answer(h.only_plan(), {0: MESSAGE_TOO_LARGE})
    assert len(h.done) == 1
    b, _o, _t, error = h.done[0]
    assert b is big and isinstance(error, MessageSizeTooLarge)
    assert big.maybe_written is False
    h.answer(h.only_plan())
    assert h.done[-1][0] is small and h.done[-1][3] is None


def test_transport_error_marks_maybe_written_and_keeps_sequence() -> None:
    h = Harness(idempotent=True)
    batch = h.add(0, 3)
    first = h.only_plan()
    seq = _sequence_of(first, 0)
    assert seq == (4000, 0, 0)
    sent = first.body["topic_data"][0]["partition_data"][0]["records"]
    batch.release_encoding()  # as Driver._send_request does once the request is framed
    h.engine.on_transport_error(first, KafkaConnectionError("reset"), h.now, sent=True)
    assert batch.maybe_written and h.engine.needs_metadata and h.done == []
    h.advance(5.0)
    retry = h.only_plan()
    assert _sequence_of(retry, 0) == seq
    # Same identity, encoded again: the very same bytes go out again.
    assert retry.body["topic_data"][0]["partition_data"][0]["records"] == sent
    h.answer(retry)
    assert h.done[0][3] is None


def test_unsent_transport_error_does_not_mark_maybe_written() -> None:
    h = Harness(max_retries=0, delivery_timeout_s=1.0)
    batch = h.add(0, 1)
    h.engine.on_transport_error(h.only_plan(), KafkaConnectionError("refused"), h.now, sent=False)
    # Nothing left the machine: not written, and no attempt spent; it waits.
    assert batch.maybe_written is False and h.done == [] and batch.attempts == 0
    h.advance(1.5)
    h.engine.on_transport_error(h.only_plan(), KafkaConnectionError("refused"), h.now, sent=False)
    # Out of time: a delivery timeout (as expire() would say), naming the last error.
    (error,) = [e for *_, e in h.done]
    assert isinstance(error, DeliveryTimeoutError) and not error.maybe_written
    assert isinstance(error.last_error, KafkaConnectionError) and "refused" in str(error)
    assert batch.maybe_written is False


def test_idempotent_sequences_per_partition_survive_retries() -> None:
    h = Harness(idempotent=True)
    a0, a1 = h.add(0, 3), h.add(1, 5)
    plan = h.only_plan()
    assert _sequence_of(plan, 0) == (4000, 0, 0)
    assert _sequence_of(plan, 1) == (4000, 0, 0)
    h.answer(plan, {1: NOT_LEADER})  # partition 0 succeeds, 1 is retried
    b0, b1 = h.add(0, 2, start=3), h.add(1, 1, start=5)
    h.advance(5.0)
    seen: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(10):
        plans = h.plan()
        if not plans:
            break
        for p in plans:
            for b in p.batches:
                seen[b.partition].append(_sequence_of(p, b.partition)[2])
            h.answer(p)
    # Partition 0 continues at 3; partition 1 resends 0 first, then 5.
    assert seen == {0: [3], 1: [0, 5]}
    assert a1.base_sequence == 0 and b1.base_sequence == 5 and b0.base_sequence == 3
    assert a0.base_sequence == 0
    assert h.engine.idle and all(e is None for *_, e in h.done)


def test_out_of_order_behind_retried_batch_is_requeued_without_an_attempt() -> None:
    h = Harness(idempotent=True, max_retries=1)
    first = h.add(0, 2)
    second = h.add(0, 2, start=2)
    _confirmed(h, 0)
    p1, p2 = h.plan()  # max_in_flight lets the second batch go before the first is answered
    assert p1.batches == [first] and p2.batches == [second]
    h.answer(p1, {0: NOT_LEADER})
    h.answer(p2, {0: OUT_OF_ORDER})
    assert h.done == [] and not h.engine.needs_epoch_bump
    assert second.attempts == 0  # the refusal did not count
    h.advance(5.0)
    order: list[list[bytes | None]] = []
    for _ in range(10):
        plans = h.plan()
        if not plans:
            break
        for p in plans:
            order.append(_values_sent(p, 0))
            assert _sequence_of(p, 0)[2] == p.batches[0].base_sequence
            h.answer(p)
    assert order == [[b"0-0", b"0-1"], [b"0-2", b"0-3"]]
    assert [b for b, *_ in h.done] == [first, second]
    assert all(e is None for *_, e in h.done)
    assert (first.base_sequence, second.base_sequence) == (0, 2)


def test_out_of_order_without_earlier_batch_bumps_epoch() -> None:
    h = Harness(idempotent=True)
    batch = h.add(0, 2)
    h.answer(h.only_plan(), {0: OUT_OF_ORDER})
    assert h.engine.needs_epoch_bump and h.engine.needs_producer_id
    h.advance(5.0)
    assert h.plan() == []  # nothing goes out until the new epoch
    h.engine.set_producer_id(4000, 1)
    assert batch.base_sequence is None
    plan = h.only_plan()
    assert _sequence_of(plan, 0) == (4000, 1, 0)
    h.answer(plan)
    assert h.done[-1][3] is None


def test_epoch_bump_resets_every_partition_sequence() -> None:
    h = Harness(idempotent=True)
    h.add(0, 3)
    h.add(1, 4)
    for p in h.plan():
        h.answer(p)
    h.add(0, 1, start=3)
    h.add(1, 1, start=4)
    h.engine.set_producer_id(4000, 7)
    plan = h.only_plan()
    assert _sequence_of(plan, 0) == (4000, 7, 0)
    assert _sequence_of(plan, 1) == (4000, 7, 0)


def test_failed_sequenced_batch_forces_epoch_bump() -> None:
    h = Harness(idempotent=True, max_in_flight=1)
    h.add(0, 1)
    later = h.add(0, 1, start=1)
    h.answer(h.only_plan(), {0: 87})  # INVALID_RECORD: fails for good
    assert len(h.done) == 1 and h.done[0][3] is not None
    # A gap in the sequence: later batches wait for a new epoch.
    assert h.engine.needs_epoch_bump
    assert h.plan() == []
    h.engine.set_producer_id(4000, 1)
    plan = h.only_plan()
    assert plan.batches == [later] and _sequence_of(plan, 0) == (4000, 1, 0)


def test_in_flight_batch_behind_a_failed_one_survives_the_epoch_bump() -> None:
    h = Harness(idempotent=True)
    h.add(0, 1)
    later = h.add(0, 1, start=1)
    _confirmed(h, 0)
    p1, p2 = h.plan()
    h.answer(p1, {0: 87})  # fails for good: sequence 0 never lands
    h.answer(p2, {0: OUT_OF_ORDER})  # so sequence 1 is refused
    assert h.engine.needs_epoch_bump
    h.engine.set_producer_id(4000, 1)
    h.advance(5.0)
    plan = h.only_plan()
    assert plan.batches == [later] and _sequence_of(plan, 0) == (4000, 1, 0)
    h.answer(plan)
    assert h.done[-1][0] is later and h.done[-1][3] is None


def test_no_leader_waits_are_bounded_by_the_delivery_timeout() -> None:
    h = Harness(max_retries=2, leaders={0: None}, delivery_timeout_s=12.0)  # type: ignore[dict-item]
    h.add(0, 1)
    start = h.now
    for _ in range(10):
        assert h.plan() == []
        assert h.engine.needs_metadata
        if h.done:
            break
        h.advance(5.0)
    # Waiting spent no attempt (max_retries=2 would have ended it at the third
    # look); it ended at the first look past the delivery timeout, with the
    # error docs/guarantees.rst names ("Leader killed, leader moved").
    assert h.now - start == 15.0
    ((_b, offset, _t, error),) = h.done
    assert isinstance(error, DeliveryTimeoutError), error
    assert isinstance(error.last_error, LeaderNotAvailable), error.last_error
    assert not error.maybe_written
    assert offset == -1
    assert h.engine.idle


def test_acks_zero_finishes_without_offsets() -> None:
    done: list[Done] = []
    engine = ProduceEngine(
        on_done=lambda b, o, t, e: done.append((b, o, t, e)), acks=0, timeout_ms=1000
    )
    batch = ProducerBatch(TOPIC, 0, 0.0)
    batch.append(None, b"x", None, 1, 0, 5)
    engine.add(batch)
    (plan,) = engine.plan(0.0, lambda t, p: 1)
    assert plan.expect_response is False
    engine.on_response(plan, None, 0.0)
    assert done == [(batch, -1, -1, None)] and engine.idle


def test_per_partition_order_never_violated_under_random_failures() -> None:
    import random

    rng = random.Random(7)
    h = Harness(idempotent=True, max_retries=50, retry_backoff_s=0.01, retry_backoff_max_s=0.05)
    expected: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    for i in range(30):
        p = i % 3
        b = h.add(p, 2, start=i * 2)
        expected[p] += list(b.values)  # type: ignore[arg-type]
    # A simulated log: what the broker accepted, by sequence, with dedupe.
    log: dict[int, list[bytes | None]] = {0: [], 1: [], 2: []}
    next_seq = {0: 0, 1: 0, 2: 0}
    outstanding: list[Plan] = []
    for _ in range(2000):
        if h.engine.idle:
            break
        outstanding += h.plan()
        if not outstanding:
            h.advance(0.06)
            continue
        plan = outstanding.pop(rng.randrange(len(outstanding)) if rng.random() < 0.3 else 0)
        if rng.random() < 0.1:
            lands = rng.random() < 0.5
            if lands:
                _land(plan, log, next_seq)
            h.engine.on_transport_error(plan, KafkaConnectionError("x"), h.now, sent=True)
            continue
        codes: dict[int, int] = {}
        for b in plan.batches:
            if rng.random() < 0.15:
                codes[b.partition] = NOT_LEADER
            else:
                codes[b.partition] = _land_one(plan, b, log, next_seq)
        h.answer(plan, codes)
    assert h.engine.idle
    assert all(e is None for *_, e in h.done), [e for *_, e in h.done if e]
    assert log == expected


def _land(plan: Plan, log: dict[int, list[bytes | None]], next_seq: dict[int, int]) -> None:
    for b in plan.batches:
        _land_one(plan, b, log, next_seq)


def _land_one(
    plan: Plan, batch: ProducerBatch, log: dict[int, list[bytes | None]], next_seq: dict[int, int]
) -> int:
    """The broker's idempotence check for one batch: 0, DUPLICATE or OUT_OF_ORDER."""
    p = batch.partition
    _pid, _epoch, seq = _sequence_of(plan, p)
    if seq == next_seq[p]:
        log[p] += _values_sent(plan, p)
        next_seq[p] += len(batch)
        return 0
    if seq < next_seq[p]:
        return DUPLICATE
    return OUT_OF_ORDER


def test_out_of_order_with_only_later_batches_in_flight_bumps_the_epoch() -> None:
    """The broker lost the partition's sequence state and refuses every batch:
    a *later* batch in flight must not excuse the head's refusal (that resent
    both forever, never consuming an attempt nor bumping the epoch)."""
    h = Harness(idempotent=True)
    first, second = h.add(0, 2), h.add(0, 2, start=2)
    for _ in range(50):
        if h.engine.idle or h.engine.needs_producer_id:
            break
        plans = h.plan()
        if not plans:
            h.advance(2.0)
            continue
        for p in plans:
            h.answer(p, {0: OUT_OF_ORDER})
    assert h.engine.needs_producer_id, "OUT_OF_ORDER on the head must lead to a new epoch"
    h.engine.set_producer_id(4000, 1)
    h.advance(5.0)
    for _ in range(10):
        plans = h.plan()
        if not plans:
            break
        for p in plans:
            h.answer(p)
    assert [b for b, *_ in h.done] == [first, second]
    assert all(e is None for *_, e in h.done)
    assert (first.base_sequence, second.base_sequence) == (0, 2)


@pytest.mark.parametrize("code", [7, 20])
def test_errors_after_append_mark_maybe_written(code: int) -> None:
    h = Harness(max_retries=0)
    batch = h.add(0, 1)
    h.answer(h.only_plan(), {0: code})
    ((b, _o, _t, error),) = h.done
    assert b is batch and error is not None and batch.maybe_written is True


def test_backlogged_while_batches_wait_or_in_flight_is_full() -> None:
    h = Harness()
    assert not h.engine.backlogged(TOPIC, 0)  # never seen
    h.add(0, 1)
    assert h.engine.backlogged(TOPIC, 0)  # queued, not sent
    plan = h.only_plan()
    assert h.engine.backlogged(TOPIC, 0)  # unconfirmed: one in flight is the limit
    h.answer(plan)
    h.add(0, 1)
    plan = h.only_plan()
    assert not h.engine.backlogged(TOPIC, 0)  # in flight, room for more
    for _ in range(h.engine.max_in_flight - 1):
        h.add(0, 1)
        h.plan()
    assert h.engine.backlogged(TOPIC, 0)  # max_in_flight requests out
    h.answer(plan)
    assert not h.engine.backlogged(TOPIC, 0)


def test_unconfirmed_partition_sends_one_batch_at_a_time() -> None:
    # A broker without our producer's state takes any first sequence: a failed
    # first batch and an accepted second one would swap places. So until a batch
    # is acknowledged under this producer id, one batch per partition in flight.
    h = Harness(idempotent=True)
    first, second = h.add(0, 2), h.add(0, 2, start=2)
    plan = h.only_plan()
    assert plan.batches == [first] and h.plan() == []
    h.answer(plan, {0: NOT_LEADER})  # retriable: first goes back, still alone
    h.advance(5.0)
    retry = h.only_plan()
    assert retry.batches == [first] and h.plan() == []
    h.answer(retry)
    third = h.add(0, 2, start=4)
    p2, p3 = h.plan()  # confirmed: pipelined again
    assert p2.batches == [second] and p3.batches == [third]
    h.answer(p2)
    h.answer(p3)
    assert [b for b, *_ in h.done] == [first, second, third]
    # A new producer id (or epoch) starts unconfirmed again.
    h.engine.set_producer_id(4001, 0)
    h.add(0, 1, start=6)
    h.add(0, 1, start=7)
    assert len(h.plan()) == 1


def test_without_idempotence_batches_are_pipelined_once_one_landed() -> None:
    h = Harness()
    h.add(0, 1)
    h.add(0, 1, start=1)
    first = h.only_plan()  # one at a time until the partition has an answer
    assert h.plan() == []
    h.answer(first)
    h.add(0, 1, start=2)
    assert len(h.plan()) == 2  # then pipelined


def test_without_idempotence_a_fresh_partition_keeps_order_through_a_retry() -> None:
    # A fresh topic answers its first request NOT_LEADER and accepts the next:
    # with both in flight they would swap places in the log (acks=1, no sequences).
    h = Harness()
    first, second = h.add(0, 2), h.add(0, 2, start=2)
    plan = h.only_plan()
    assert plan.batches == [first] and h.plan() == []
    h.answer(plan, {0: NOT_LEADER})
    h.advance(5.0)
    retry = h.only_plan()
    assert retry.batches == [first] and h.plan() == []
    h.answer(retry)
    then = h.only_plan()
    assert then.batches == [second]
    h.answer(then)
    # A retriable error later puts the partition back to one at a time.
    h.add(0, 1, start=4)
    h.add(0, 1, start=5)
    third = h.plan()
    assert len(third) == 2
    h.answer(third[0], {0: NOT_ENOUGH_REPLICAS})
    h.answer(third[1])  # landed meanwhile (the reorder max_in_flight > 1 allows)
    h.advance(5.0)
    h.add(0, 1, start=6)
    resend = h.only_plan()  # the failed batch again, alone
    assert _values_sent(resend, 0) == [b"0-4"] and h.plan() == []
    h.answer(resend)
    assert _values_sent(h.only_plan(), 0) == [b"0-6"]


def test_epoch_bump_fails_a_batch_with_an_unknown_outcome_instead_of_resending_it() -> None:
    """Resent under a new epoch, a batch that may have landed could be written
    twice (the broker dedupes by producer id, epoch and sequence): it fails
    with maybe_written, as in the Java client; a batch never sent goes on."""
    h = Harness(idempotent=True)
    unknown = h.add(0, 2)
    h.engine.on_transport_error(h.only_plan(), KafkaConnectionError("reset"), h.now, sent=True)
    assert unknown.maybe_written and unknown.base_sequence == 0 and h.done == []
    fresh = h.add(0, 1, start=2)
    h.engine.needs_epoch_bump = True
    h.engine.set_producer_id(4000, 1)
    ((batch, _, _, error),) = h.done
    assert batch is unknown and isinstance(error, OutcomeUnknownError)
    assert error.maybe_written and "may have been written" in str(error)
    h.advance(5.0)
    plan = h.only_plan()
    assert plan.batches == [fresh] and _sequence_of(plan, 0) == (4000, 1, 0)
    h.answer(plan)
    assert h.done[-1][0] is fresh and h.done[-1][3] is None and h.engine.idle


def test_plans_builds_each_request_only_when_the_one_before_was_taken() -> None:
    h = Harness(leaders={0: 1, 1: 2})
    first, second = h.add(0, 3), h.add(1, 3)
    plans = h.engine.plans(h.now, h.leader_of)
    plan = next(plans)
    (taken,) = plan.batches
    other = second if taken is first else first
    assert other._encoded is None  # the other node's request is not built yet
    assert next(plans).batches == [other]
    assert list(plans) == []


def test_a_request_that_could_not_go_out_is_not_overtaken_by_the_next_one() -> None:
    # Two batches of one pipelined partition go in two requests to one node. The
    # first cannot be sent (nothing left the machine): its batch is back at the head,
    # so the second request, built after it, must not take the batch behind it.
    h = Harness(leaders={0: 1})
    h.add(0, 1)
    _confirmed(h, 0)
    b1, b2 = h.add(0, 3), h.add(0, 3)
    h.engine._partitions[(TOPIC, 0)].queue.pop(0)  # the first batch: as if acknowledged
    h.engine._queued -= 1
    plans = h.engine.plans(h.now, h.leader_of)
    plan = next(plans)
    assert plan.batches == [b1]
    h.engine.on_transport_error(plan, KafkaConnectionError("refused"), h.now, sent=False)
    assert list(plans) == []  # b2 waits behind b1
    queue = h.engine._partitions[(TOPIC, 0)].queue
    assert queue == [b1, b2] and h.engine.queued == 2


def test_no_request_is_built_after_an_earlier_one_forced_a_new_epoch() -> None:
    # Two nodes, two requests. The first fails for good before the second is
    # built (the driver sends each before asking for the next): its sequences are
    # gone, so the second would be refused as out of order under the old epoch.
    h = Harness(idempotent=True, leaders={0: 1, 1: 2})
    h.add(0, 3)
    h.add(1, 3)
    plans = h.engine.plans(h.now, h.leader_of)
    plan = next(plans)
    h.engine.on_send_error(plan, KafkaError("refused"), h.now)
    assert h.engine.needs_producer_id
    assert list(plans) == []
    (waiting,) = [s for s in h.engine._partitions.values() if s.queue]
    assert waiting.queue[0].base_sequence is None  # no sequence under the old epoch
    h.engine.set_producer_id(4000, 1)
    (after,) = h.plan()
    assert _sequence_of(after, after.batches[0].partition) == (4000, 1, 0)


def test_a_request_that_cannot_be_sent_fails_its_batches_without_maybe_written() -> None:
    h = Harness(leaders={0: 1})
    batch = h.add(0, 3)
    plan = h.only_plan()
    error = KafkaError("no Produce version in common")
    h.engine.on_send_error(plan, error, h.now)
    assert h.done == [(batch, -1, -1, error)]
    assert not batch.maybe_written and h.engine.idle and not h.engine.needs_producer_id


def test_expire_names_the_last_error_of_a_batch_waiting_for_a_retry() -> None:
    # A batch queued for a retry (or waiting for a leader) whose delivery
    # timeout runs out in expire(): its DeliveryTimeoutError says why.
    h = Harness(delivery_timeout_s=3.0)
    batch = h.add(0, 1)
    h.answer(h.only_plan(), {0: NOT_ENOUGH_REPLICAS})
    h.engine.expire(h.now + 5.0, lambda b: b.created + 3.0)
    ((b, _o, _t, error),) = h.done
    assert b is batch and isinstance(error, DeliveryTimeoutError)
    assert error.last_error is not None and error.last_error.code == NOT_ENOUGH_REPLICAS
    assert error.__cause__ is error.last_error

    h = Harness(delivery_timeout_s=3.0, leaders={0: None})
    h.add(0, 1)
    assert h.plan() == []  # no leader: waits (not an attempt)
    h.engine.expire(h.now + 5.0, lambda b: b.created + 3.0)
    ((_b, _o, _t, error),) = h.done
    assert isinstance(error, DeliveryTimeoutError)
    assert "no leader" in str(error.last_error)
