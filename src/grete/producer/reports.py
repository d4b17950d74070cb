"""The background producer's delivery reports queue (pykafka's
``delivery_reports=True``): first in, first out, unbounded here (the producer
bounds it: an unread report still counts against ``max_queued_messages``).

Not ``queue.Queue``: its ``put()`` takes a lock and notifies per report, and
the sender thread putting a finished batch's thousands of reports one by one
contended with the thread reading them at every item, a fraction of the
speed of futures. Here the sender adds a
batch's reports under one lock with one notify, and ``get()`` pops without a
lock whenever a report is there (``deque.popleft`` is atomic).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReportQueue(Generic[T]):
    """A FIFO of reports: :meth:`put_many` adds, :meth:`get` takes one."""

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._ready = threading.Condition(threading.Lock())

    def __len__(self) -> int:
        return len(self._items)

    def put_many(self, items: Iterable[T]) -> None:
        """Add ``items`` in order, and wake every reader waiting for one."""
        with self._ready:
            self._items.extend(items)
            self._ready.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> T:
        """The oldest report; with ``block``, wait up to ``timeout`` seconds
        (None: for ever) for one. Raises ``queue.Empty`` (as ``queue.Queue``
        does) when there is none in time."""
        items = self._items
        try:
            return items.popleft()
        except IndexError:
            pass
        if not block:
            raise queue.Empty
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while True:
                # Checked under the lock put_many() holds: no wake-up is missed.
                try:
                    return items.popleft()
                except IndexError:
                    pass
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty
                self._ready.wait(left)
