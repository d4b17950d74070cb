"""The states of a transactional producer, the error codes its coordinators'
answers are sorted by, and one user call in progress (see
:mod:`grete.producer.transactions`)."""

from __future__ import annotations

import enum
import threading
from typing import Any

from grete.errors import KafkaError

# Error codes with a meaning here (protocol/errors.py has them all).
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
CONCURRENT_TRANSACTIONS = 51
OPERATION_NOT_ATTEMPTED = 55
REQUEST_TIMED_OUT = 7
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TXN_STATE = 48
#: The producer cannot go on: fenced, not authorized, not supported.
FATAL_CODES = frozenset({31, 35, 43, 49, 52, 53, 90})
# The coordinator aborted the transaction at its timeout and bumped the epoch
# (KIP-588): abortable; the abort then takes the new epoch with
# InitProducerId instead of EndTxn.
INVALID_PRODUCER_EPOCH = 47
FIND_AGAIN = frozenset({COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR})
TRY_AGAIN = frozenset(
    {
        COORDINATOR_LOAD_IN_PROGRESS,
        CONCURRENT_TRANSACTIONS,
        OPERATION_NOT_ATTEMPTED,
        REQUEST_TIMED_OUT,
        UNKNOWN_TOPIC_OR_PARTITION,
    }
)
# How soon a request refused as "concurrent transactions" is tried again (the
# coordinator is still writing the last transaction's markers).
CONCURRENT_BACKOFF_S = 0.02

#: Why produce() is refused while no transaction is open (see ProducerCore.refusal).
NOT_IN_TRANSACTION = "produce() outside a transaction: call begin_transaction() first"


class TransactionState(enum.Enum):
    """The states of a transactional producer (see the module docstring)."""

    UNINITIALIZED = "uninitialized"
    INITIALIZING = "initializing"
    READY = "ready"
    IN_TRANSACTION = "in transaction"
    COMMITTING = "committing"
    ABORTING = "aborting"
    ABORTABLE_ERROR = "abortable error"
    FATAL_ERROR = "fatal error"


class Op:
    """One user call carried out on the sender thread."""

    __slots__ = ("done", "error", "group", "kind", "metadata", "offsets", "step")

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "init", "commit", "abort" or "offsets"
        self.done = threading.Event()
        self.error: KafkaError | None = None
        # send_offsets_to_transaction's: its progress, the group and the offsets.
        self.step = ""
        self.group: dict[str, Any] = {}
        self.offsets: dict[str, list[dict[str, Any]]] = {}
        self.metadata: None = None

    def finish(self, error: KafkaError | None = None) -> None:
        self.error = error
        self.done.set()
