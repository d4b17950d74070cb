"""What the front ends have in common: the engine their validated options
describe (:func:`engine_for`, the sync ``Producer``'s too), and, over a
producer core, ``flush()``, ``close()``, ``metrics()`` and the context
manager (:class:`CoreFrontEnd`). A front end adds an API around the core,
never a second copy of its work."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from grete.producer.engine import DoneCallback, ProduceEngine
from grete.producer.metrics import Metrics

if TYPE_CHECKING:
    from typing_extensions import Self

    from grete.producer.config import ProducerConfig
    from grete.producer.core import ProducerCore


class CoreFrontEnd:
    """Base of :class:`~grete.KafkaProducer` and :class:`~grete.BackgroundProducer`."""

    _core: ProducerCore
    _closed: bool
    _finalizer: weakref.finalize[Any, Any]

    def flush(self, timeout: float | None = None) -> int:
        """Send everything queued and wait for its reports; returns how many
        messages are still unreported (0 unless ``timeout`` ran out)."""
        return self._core.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Deliver or fail everything queued, then stop the sender thread.

        Bounded: within ``timeout`` seconds (default: ``delivery_timeout_ms``)
        every queued message has been reported, failed ones with the reason.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._core.close(timeout)

    def metrics(self) -> dict[str, Any]:
        """Counters and timings: messages/bytes sent, batches, retries,
        errors, queue depth, request latency percentiles (ms), and per topic
        (``"topics"``: name -> messages_sent, bytes_sent, batches, retries,
        errors). The sender thread also logs them at DEBUG (see
        ``metrics_log_interval_ms``)."""
        return self._core.snapshot()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def engine_for(
    config: ProducerConfig, on_done: DoneCallback, metrics: Metrics | None = None
) -> ProduceEngine:
    """The engine a front end's validated options describe."""
    return ProduceEngine(
        on_done=on_done,
        acks=config.required_acks,
        timeout_ms=config.ack_timeout_ms,
        compression=config.compression,
        compression_level=config.compression_level,
        max_retries=config.max_retries,
        delivery_timeout_s=config.delivery_timeout_s,
        retry_backoff_s=config.retry_backoff_s,
        retry_backoff_max_s=config.retry_backoff_max_s,
        max_request_size=config.max_request_size,
        max_in_flight=config.max_in_flight,
        idempotent=config.enable_idempotence,
        metrics=metrics,
    )
