"""Transactions: the state machine of a transactional producer and the
requests it makes of the transaction and group coordinators.

States (:class:`TransactionState`)::

    UNINITIALIZED --init_transactions()--> INITIALIZING --> READY
    READY --begin_transaction()--> IN_TRANSACTION
    IN_TRANSACTION --commit_transaction()--> COMMITTING --> READY
    IN_TRANSACTION | ABORTABLE_ERROR --abort_transaction()--> ABORTING --> READY
    IN_TRANSACTION | COMMITTING --a message or an offset commit failed--> ABORTABLE_ERROR
    any --fenced, not authorized, unsupported--> FATAL_ERROR (close the producer)

User calls run on the caller's thread: they check the state, queue one
operation (:class:`Op`) and wait for it, bounded by their timeout (a call
that timed out may be made again: it waits for the same operation). The
operations run on the sender thread, in :meth:`TransactionManager.step`,
called by ``Driver.step``: FindCoordinator, InitProducerId,
AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn are sent
without blocking and each answer is applied by a later step, as the driver
does for metadata. ``produce()`` is refused outside a transaction through the
core's ``refusal`` (the inline paths already check it).

Two protocols (KIP-890): with ``transaction.version`` >= 2 finalized by the
coordinator and Produce v12 / EndTxn v5 spoken, a partition joins the
transaction through Produce itself, offsets through TxnOffsetCommit, and
every EndTxn bumps the epoch (its answer carries the new one); otherwise
(Kafka 3.x) AddPartitionsToTxn before a partition's first batch (the
engine's ``gate``), AddOffsetsToTxn before TxnOffsetCommit, Produce at most
v11 and EndTxn at most v4.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from grete.errors import ConfigurationError, KafkaTimeoutError
from grete.producer.errors import (
    TransactionAbortableError,
    TransactionAbortedError,
    TransactionFatalError,
    TransactionStateError,
)
from grete.producer.txn_sender import TransactionSender
from grete.producer.txn_state import FATAL_CODES, NOT_IN_TRANSACTION, Op, TransactionState

__all__ = [
    "FATAL_CODES",
    "NOT_IN_TRANSACTION",
    "TransactionManager",
    "TransactionState",
]


class TransactionManager(TransactionSender):
    """See the module docstring. One per transactional producer core."""

    # -- user calls (any thread) ---------------------------------------------

    def init(self, timeout: float | None) -> None:
        with self.lock:
            op = self.op
            if op is None or op.kind != "init":
                if self.state is TransactionState.FATAL_ERROR:
                    raise self._fatal()
                if self.state is not TransactionState.UNINITIALIZED:
                    raise TransactionStateError(
                        f"init_transactions() in state {self.state.value}: called once, first"
                    )
                self.state = TransactionState.INITIALIZING
                op = self.op = Op("init")
        self._wait(op, timeout, "init_transactions")

    def begin(self) -> None:
        with self.lock:
            self._check_usable()
            if self.state is not TransactionState.READY:
                raise TransactionStateError(
                    f"begin_transaction() in state {self.state.value}"
                    + (" (call init_transactions() first)" if self._uninitialized() else "")
                )
            self.state = TransactionState.IN_TRANSACTION
            self.added.clear()
            self._to_add.clear()
            self._offsets_added = False
            self._started = False
            self.core.refuse(None)  # produce() allowed again

    def commit(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.state is TransactionState.ABORTABLE_ERROR and self._recover:
            # A message met INVALID_PRODUCER_EPOCH: fenced, or only timed out?
            # The sender is asking the coordinator; its answer decides which
            # error this commit raises.
            self._probe_done.wait(timeout)
        with self.lock:
            op = self.op
            if op is None or op.kind != "commit":
                self._check_usable()
                if self.state is TransactionState.ABORTABLE_ERROR:
                    raise TransactionAbortableError(
                        f"the transaction cannot commit: {self.error}; call abort_transaction()"
                    ) from self.error
                if self.state is not TransactionState.IN_TRANSACTION:
                    raise TransactionStateError(f"commit_transaction() in state {self.state.value}")
                if op is not None:
                    raise TransactionStateError(f"commit_transaction() while {op.kind} runs")
                self.state = TransactionState.COMMITTING
                self.core.refuse(NOT_IN_TRANSACTION)
                op = self.op = Op("commit")
        # Every message of the transaction acknowledged first (they are all
        # in it: produce() is refused from now on); the sender then ends it.
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.core.flush(left)
        self.core.network.wakeup()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self._wait(op, left, "commit_transaction")

    def abort(self, timeout: float | None) -> None:
        with self.lock:
            op = self.op
            if op is None or op.kind != "abort":
                if self.state is TransactionState.FATAL_ERROR:
                    raise self._fatal()
                if op is not None and op.kind == "offsets":
                    # Still trying (it timed out for its caller): given up.
                    op.finish(TransactionAbortableError("the transaction was aborted"))
                    self.op = op = None
                if self.state not in (
                    TransactionState.IN_TRANSACTION,
                    TransactionState.ABORTABLE_ERROR,
                ):
                    raise TransactionStateError(f"abort_transaction() in state {self.state.value}")
                if op is not None:
                    raise TransactionStateError(f"abort_transaction() while {op.kind} runs")
                self.state = TransactionState.ABORTING
                self.core.refuse(NOT_IN_TRANSACTION)
                op = self.op = Op("abort")
        # What was not sent yet is not written: failed here, before the sender
        # takes it (the engine's queue is emptied on the sender thread).
        self.core.fail_unsent(TransactionAbortedError("the transaction was aborted; not sent"))
        self.core.network.wakeup()
        self._wait(op, timeout, "abort_transaction")

    def send_offsets(
        self,
        offsets: Mapping[tuple[str, int], int],
        group_id: str,
        *,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        timeout: float | None,
    ) -> None:
        if not isinstance(group_id, str) or not group_id:
            raise ConfigurationError(f"group_id must be a non-empty str, not {group_id!r}")
        topics: dict[str, list[dict[str, Any]]] = {}
        for key, offset in dict(offsets).items():
            topic, partition = key
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise ConfigurationError(f"offset of {key!r} must be an int >= 0, not {offset!r}")
            topics.setdefault(topic, []).append(
                {
                    "partition_index": partition,
                    "committed_offset": offset,
                    "committed_leader_epoch": -1,
                    "committed_metadata": "",
                }
            )
        with self.lock:
            self._check_usable()
            if self.op is not None and self.op.kind == "offsets":
                op = self.op  # called again after a timeout: wait for it
            else:
                if self.state is not TransactionState.IN_TRANSACTION:
                    raise TransactionStateError(
                        f"send_offsets_to_transaction() in state {self.state.value}"
                    )
                if self.op is not None:
                    raise TransactionStateError(
                        f"send_offsets_to_transaction() while {self.op.kind} runs"
                    )
                op = self.op = Op("offsets")
                op.offsets = topics
                op.group = {
                    "group_id": group_id,
                    "generation_id": generation_id,
                    "member_id": member_id,
                    "group_instance_id": group_instance_id,
                    "coordinator": None,
                }
                op.step = "add" if not self.v2 else "find group"
        self.core.network.wakeup()
        self._wait(op, timeout, "send_offsets_to_transaction")

    def closing(self) -> None:
        """The producer closes: an open transaction is not committed (the
        coordinator aborts it at its timeout, or the next instance's
        init_transactions() does); its unsent messages fail, not written,
        and a call waiting is told."""
        with self.lock:
            open_txn = self.state in (
                TransactionState.IN_TRANSACTION,
                TransactionState.ABORTABLE_ERROR,
                TransactionState.COMMITTING,
                TransactionState.ABORTING,
            )
            op, self.op = self.op, None
        if op is not None:
            op.finish(TransactionStateError(f"the producer was closed during {op.kind}"))
        if open_txn:
            self.core.fail_unsent(
                TransactionAbortedError("the producer was closed with its transaction open")
            )

    def _wait(self, op: Op, timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not op.done.is_set():
            if self.core.stopped.is_set():
                raise TransactionFatalError(f"{what}: the producer's sender thread stopped")
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                raise KafkaTimeoutError(
                    f"{what} did not complete within {timeout:.1f}s; "
                    "it goes on: call it again to wait"
                )
            op.done.wait(left)
        if op.error is not None:
            raise op.error
