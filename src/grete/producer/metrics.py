"""Counters and timings a user can read (``producer.metrics()``)."""

from __future__ import annotations

from collections import deque
from typing import Any

# Latencies kept for percentiles: the most recent ones only, so memory stays
# bounded on a producer that runs for months.
_LATENCY_WINDOW = 4096


class TopicMetrics:
    """One topic's counters (``metrics()["topics"][name]``)."""

    __slots__ = ("batches", "bytes_sent", "errors", "messages_sent", "retries")

    def __init__(self) -> None:
        self.messages_sent = 0
        self.bytes_sent = 0
        self.batches = 0
        self.retries = 0
        self.errors = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in sorted(self.__slots__)}


class Metrics:
    """Plain counters, updated by the engine and the sender (single writer each)."""

    def __init__(self) -> None:
        self.messages_sent = 0
        self.bytes_sent = 0
        self.batches = 0
        self.requests = 0
        self.retries = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self.topics: dict[str, TopicMetrics] = {}

    def topic(self, name: str) -> TopicMetrics:
        """``name``'s counters, made on first use."""
        counters = self.topics.get(name)
        if counters is None:
            counters = self.topics[name] = TopicMetrics()
        return counters

    def request_latency(self, seconds: float) -> None:
        self._latencies.append(seconds * 1000)

    def snapshot(self) -> dict[str, Any]:
        lat = sorted(self._latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

        out = {
            "messages_sent": self.messages_sent,
            "bytes_sent": self.bytes_sent,
            "batches": self.batches,
            "requests": self.requests,
            "retries": self.retries,
            "errors": self.errors,
            "request_latency_ms": {
                "p50": pct(0.5),
                "p95": pct(0.95),
                "p99": pct(0.99),
                "max": lat[-1] if lat else None,
            },
            "topics": {name: t.snapshot() for name, t in list(self.topics.items())},
        }
        return out
