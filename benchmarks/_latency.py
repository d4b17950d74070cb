"""Produce-to-acknowledgement latency at a fixed send rate (child side of bench_produce).

Each runner sends ``len(values)`` messages paced at ``rate`` msgs/s and records, per
message, the ``perf_counter()`` just before the produce call and the one in its
delivery callback. The difference is what an application waiting on a delivery
report sees: linger, batching, the broker's round trip *and* the client's own
scheduling (a confluent-kafka report is only seen when the application polls).

Before the clock starts every runner sends one message to each partition and waits
for it: connections to the leaders and (acks=all) the idempotent producer id are then
in place, so the percentiles describe a running application, not its first second.
The parent expects N plus those warm-up messages in the log (``warmup`` in the result).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Callable
from functools import partial
from typing import Any

# A run may fall behind its schedule on a loaded machine; past this many times the
# planned duration (plus slack for start-up) it gives up, so every run is bounded.
_OVERRUN_FACTOR = 3.0
_OVERRUN_SLACK_S = 10.0
_WARMUP_VALUE = b"warm-up"


class Pacer:
    """Which messages are due now, on a fixed schedule from the first send.

    Messages that fell behind are sent back to back (a burst) rather than skipped,
    so the count always reaches N and the achieved rate shows how far behind it got.
    Waiting happens between bursts through the client's own idle call (sleep, poll,
    asyncio.sleep): a busy-wait would hold the GIL against the client's I/O thread.
    """

    def __init__(self, n: int, rate: float) -> None:
        self.n = n
        self.rate = rate
        self.t0 = 0.0
        self.deadline = 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + _OVERRUN_FACTOR * self.n / self.rate + _OVERRUN_SLACK_S

    def due(self) -> int:
        """Index one past the last message whose send time has come."""
        return min(self.n, int((time.perf_counter() - self.t0) * self.rate) + 1)

    def wait_s(self, i: int) -> float:
        return max(0.0, self.t0 + i / self.rate - time.perf_counter())

    def expired(self) -> bool:
        return time.perf_counter() > self.deadline


def paced_loop(pacer: Pacer, send: Callable[[int], None], idle: Callable[[float], None]) -> int:
    """Send every message on schedule; returns how many were sent (N unless expired)."""
    pacer.start()
    i = 0
    n = pacer.n
    while i < n and not pacer.expired():
        upto = pacer.due()
        while i < upto:
            send(i)
            i += 1
        if i < n:
            idle(pacer.wait_s(i))
    return i


def cpu_now() -> tuple[float, float]:
    """User and system CPU seconds of this process (every thread) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def cpu_since(start: tuple[float, float]) -> dict[str, float]:
    """The CPU spent since ``start`` (a ``cpu_now()``): the paced run and its flush,
    what the application pays for sending at the rate (idle waits included)."""
    user, system = cpu_now()
    return {"cpu_user": user - start[0], "cpu_sys": system - start[1]}


def summarise(sent_at: list[float], acked_at: list[float], sent: int) -> dict[str, Any]:
    """Percentiles (ms) over the acknowledged messages; achieved send rate."""
    lat = sorted(
        (a - s) * 1000.0 for s, a in zip(sent_at[:sent], acked_at[:sent], strict=True) if a > 0.0
    )

    def pct(q: float) -> float | None:
        # Nearest rank: p99 of 20,000 samples is the 19,800th, an observed value.
        if not lat:
            return None
        return lat[min(len(lat) - 1, max(0, round(q * len(lat)) - 1))]

    span = sent_at[sent - 1] - sent_at[0] if sent > 1 else 0.0
    return {
        "sent": sent,
        "samples": len(lat),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] if lat else None,
        "rate": (sent - 1) / span if span > 0 else None,
    }


def run_grete_bg(spec: dict[str, Any], values: list[bytes]) -> dict[str, Any]:
    from grete import BackgroundProducer, KafkaClient
    from grete.protocol.compression import CompressionType

    n = len(values)
    sent_at = [0.0] * n
    acked_at = [0.0] * n
    errors: list[str] = []
    clock = time.perf_counter

    # Runs on grete's sender thread as each batch completes.
    def on_done(i: int, future: Any) -> None:
        err = future.exception()
        if err is None:
            acked_at[i] = clock()
        elif not errors:
            errors.append(repr(err))

    client = KafkaClient(spec["bootstrap"])
    try:
        producer = BackgroundProducer(
            client.cluster,
            client.topics[spec["topic"]],
            required_acks=spec["acks"],
            compression=CompressionType[spec["compression"].upper()],
            linger_ms=spec["linger_ms"],
            batch_size=10_000,
            partitioner=None,
        )
        produce = producer.produce
        parts = sorted(client.topics[spec["topic"]].partitions)
        for pid in parts:
            produce(_WARMUP_VALUE, partition=pid)
        if producer.flush(spec["timeout"]):
            raise TimeoutError("warm-up messages not acknowledged")

        def send(i: int) -> None:
            sent_at[i] = clock()
            produce(values[i], callback=partial(on_done, i))

        cpu0 = cpu_now()
        sent = paced_loop(Pacer(n, spec["rate"]), send, time.sleep)
        remaining = producer.flush(spec["timeout"])
        cpu = cpu_since(cpu0)
        producer.close(10)
    finally:
        client.close()
    out = summarise(sent_at, acked_at, sent)
    out.update(cpu)
    out["error"] = errors[0] if errors else (f"{remaining} unreported" if remaining else None)
    out["warmup"] = len(parts)
    return out


def run_confluent(spec: dict[str, Any], values: list[bytes]) -> dict[str, Any]:
    from confluent_kafka import Producer

    n = len(values)
    sent_at = [0.0] * n
    acked_at = [0.0] * n
    errors: list[str] = []
    clock = time.perf_counter

    def on_delivery(i: int, err: Any, _msg: Any) -> None:
        if err is None:
            acked_at[i] = clock()
        elif not errors:
            errors.append(str(err))

    p = Producer(
        {
            "bootstrap.servers": spec["bootstrap"],
            "acks": spec["acks"],
            "compression.type": spec["compression"],
            "linger.ms": spec["linger_ms"],
            "enable.idempotence": spec["acks"] == -1,
        }
    )
    topic = spec["topic"]
    parts = sorted(p.list_topics(topic, timeout=10).topics[topic].partitions)
    for pid in parts:
        p.produce(topic, _WARMUP_VALUE, partition=pid)
    if p.flush(spec["timeout"]):
        raise TimeoutError("warm-up messages not acknowledged")
    produce = p.produce

    def send(i: int) -> None:
        sent_at[i] = clock()
        produce(topic, values[i], on_delivery=partial(on_delivery, i))
        p.poll(0)

    # Between bursts the application waits in poll(): delivery reports are served as
    # soon as librdkafka has them, the best case for confluent-kafka's latency.
    cpu0 = cpu_now()
    sent = paced_loop(Pacer(n, spec["rate"]), send, p.poll)
    remaining = p.flush(spec["timeout"])
    cpu = cpu_since(cpu0)
    out = summarise(sent_at, acked_at, sent)
    out.update(cpu)
    out["error"] = errors[0] if errors else (f"{remaining} still queued" if remaining else None)
    out["warmup"] = len(parts)
    return out


async def _aiokafka(spec: dict[str, Any], values: list[bytes]) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    n = len(values)
    sent_at = [0.0] * n
    acked_at = [0.0] * n
    errors: list[str] = []
    clock = time.perf_counter

    def on_done(i: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled():
            errors.append("cancelled")
        elif fut.exception() is None:
            acked_at[i] = clock()
        elif not errors:
            errors.append(repr(fut.exception()))

    producer = AIOKafkaProducer(
        bootstrap_servers=spec["bootstrap"],
        acks="all" if spec["acks"] == -1 else spec["acks"],
        compression_type=None if spec["compression"] == "none" else spec["compression"],
        enable_idempotence=spec["acks"] == -1,
        linger_ms=spec["linger_ms"],
    )
    await producer.start()
    try:
        topic = spec["topic"]
        parts = sorted(await producer.partitions_for(topic))
        warm = [await producer.send(topic, _WARMUP_VALUE, partition=pid) for pid in parts]
        await asyncio.wait_for(asyncio.gather(*warm), timeout=spec["timeout"])
        pacer = Pacer(n, spec["rate"])
        futures: list[asyncio.Future[Any]] = []
        cpu0 = cpu_now()
        pacer.start()
        i = 0
        # paced_loop's shape, with awaits: send() may wait for buffer space.
        while i < n and not pacer.expired():
            upto = pacer.due()
            while i < upto:
                sent_at[i] = clock()
                fut = await producer.send(topic, values[i])
                fut.add_done_callback(partial(on_done, i))
                futures.append(fut)
                i += 1
            if i < n:
                await asyncio.sleep(pacer.wait_s(i))
        await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), timeout=spec["timeout"]
        )
        await asyncio.sleep(0)  # let the done callbacks scheduled by gather's futures run
        cpu = cpu_since(cpu0)
    finally:
        await producer.stop()
    out = summarise(sent_at, acked_at, i)
    out.update(cpu)
    out["error"] = errors[0] if errors else None
    out["warmup"] = len(parts)
    return out


def run_aiokafka(spec: dict[str, Any], values: list[bytes]) -> dict[str, Any]:
    return asyncio.run(_aiokafka(spec, values))


RUNNERS: dict[str, Callable[[dict[str, Any], list[bytes]], dict[str, Any]]] = {
    "grete-bg": run_grete_bg,
    "confluent": run_confluent,
    "aiokafka": run_aiokafka,
}
