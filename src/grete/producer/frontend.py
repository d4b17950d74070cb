"""What every front end over a producer core has in common: ``flush()``,
``close()``, ``metrics()`` and the context manager. (A front end adds an
API around the core, never a second copy of its work.)"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

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
