"""The sender-thread half of a transactional producer: its state, the
events the core reports (a batch failed, a partition's batch wants to go)
and the requests to the transaction and group coordinators, sent without
blocking by :meth:`TransactionSender.step` (called from ``Driver.step``).
The user calls are in :mod:`grete.producer.transactions`, whose docstring
has the state machine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grete.connection import Pending
from grete.errors import KafkaError, error_for_code
from grete.producer.errors import (
    TransactionAbortableError,
    TransactionAbortedError,
    TransactionFatalError,
)
from grete.producer.txn_state import (
    CONCURRENT_BACKOFF_S,
    CONCURRENT_TRANSACTIONS,
    COORDINATOR_LOAD_IN_PROGRESS,
    FATAL_CODES,
    FIND_AGAIN,
    INVALID_PRODUCER_EPOCH,
    OPERATION_NOT_ATTEMPTED,
    TRY_AGAIN,
    Op,
    TransactionState,
)
from grete.protocol import messages as m
from grete.protocol.errors import error_info

if TYPE_CHECKING:
    from grete.producer.core import ProducerCore

log = logging.getLogger("grete.producer.transactions")


class TransactionSender:
    """State and sender-thread steps of a transactional producer (see the module docstring)."""

    def __init__(self, core: ProducerCore, transactional_id: str, timeout_ms: int) -> None:
        self.core = core
        self.id = transactional_id
        self.timeout_ms = timeout_ms
        self.network = core.network
        self.engine = core.engine
        self.lock = threading.Lock()  # state and op, between user threads and the sender
        self.state = TransactionState.UNINITIALIZED
        self.op: Op | None = None
        self.error: KafkaError | None = None  # why ABORTABLE_ERROR / FATAL_ERROR
        # Transactions v2 (KIP-890), decided from the coordinator at init.
        self.v2 = False
        self.coordinator: int | None = None
        self._find: Pending | None = None  # FindCoordinator for the transaction
        self._pending: Pending | None = None  # the one other request in flight
        self._on_answer: Callable[[dict[str, Any]], None] | None = None
        self._next_try = 0.0
        self._failures = 0
        # Partitions of the open transaction: added (or enrolled by Produce in
        # v2), being added, waiting to be added; offsets added (v1).
        self.added: set[tuple[str, int]] = set()
        self._adding: set[tuple[str, int]] = set()
        self._to_add: set[tuple[str, int]] = set()
        self._offsets_added = False
        self._started = False  # anything sent in this transaction (v2: nothing to end)
        self._bump = False  # an epoch bump is due once the transaction ended (v1)
        # The coordinator bumped our epoch (transaction timed out): the abort
        # is an InitProducerId with the current id and epoch, not an EndTxn.
        self._recover = False
        # The InitProducerId that tells the two apart: the new epoch (the
        # transaction timed out: abortable) or PRODUCER_FENCED (fatal). A
        # commit waits for its answer before it says which.
        self._probing = False
        self._recovered = False
        self._probe_done = threading.Event()
        # The node of the request in flight is the group coordinator (an
        # offsets commit): a failure sends it to find that one again.
        self._pending_group = False
        self.engine.transactional_id = transactional_id
        self.engine.gate = self.gate

    def _check_usable(self) -> None:
        if self.state is TransactionState.FATAL_ERROR:
            raise self._fatal()

    def _uninitialized(self) -> bool:
        return self.state in (TransactionState.UNINITIALIZED, TransactionState.INITIALIZING)

    def _fatal(self) -> TransactionFatalError:
        error = TransactionFatalError(
            f"the transactional producer cannot go on: {self.error}; close it"
        )
        error.__cause__ = self.error
        return error

    def _abortable(self) -> TransactionAbortableError:
        error = TransactionAbortableError(
            f"the transaction cannot commit: {self.error}; call abort_transaction()"
        )
        error.__cause__ = self.error
        return error

    # -- events from the sender thread ----------------------------------------

    def gate(self, topic: str, partition: int) -> bool:
        """The engine's gate: may a batch of this partition be sent now? In
        v1 only once AddPartitionsToTxn added the partition."""
        if self.state not in (TransactionState.IN_TRANSACTION, TransactionState.COMMITTING):
            # Failed or aborting: nothing more goes out in this transaction
            # (under v2 a Produce would enrol the partition in a new one).
            return False
        key = (topic, partition)
        self._started = True
        if self.v2 or key in self.added:
            self.added.add(key)
            return True
        if key not in self._adding:
            self._to_add.add(key)
        return False

    def batch_failed(self, error: KafkaError) -> None:
        """A message of the transaction failed: it cannot commit (or, for a
        fencing error, the producer cannot go on)."""
        if isinstance(error, TransactionAbortedError):
            return
        code = getattr(error, "code", -1)
        cause = getattr(error, "last_error", None)
        if cause is not None and getattr(cause, "code", -1) in FATAL_CODES:
            code = cause.code
        with self.lock:
            if code in FATAL_CODES:
                self._become_fatal(error)
            elif self.state in (TransactionState.IN_TRANSACTION, TransactionState.COMMITTING):
                if code == INVALID_PRODUCER_EPOCH:
                    self._recover = True
                self._become_abortable(error)

    def _become_abortable(self, error: KafkaError) -> None:
        """(Under the lock.) A commit waiting is told at once."""
        self.state = TransactionState.ABORTABLE_ERROR
        self.error = error
        self.core.refuse(
            f"the transaction cannot commit ({error}): call abort_transaction()",
            TransactionAbortableError,
        )
        if self.op is not None and self.op.kind in ("commit", "offsets"):
            self.op.finish(self._abortable())
            self.op = None

    def _become_fatal(self, error: KafkaError) -> None:
        """(Under the lock.)"""
        log.error("transactional producer %r cannot go on: %s", self.id, error)
        self.state = TransactionState.FATAL_ERROR
        self.error = error
        self._probing = False
        self._probe_done.set()
        self.core.refuse(
            f"the transactional producer cannot go on: {error}; close it", TransactionFatalError
        )
        if self.op is not None:
            self.op.finish(self._fatal())
            self.op = None

    # -- the sender thread's step -------------------------------------------

    def step(self, now: float) -> None:
        """Apply answers that came, then send what is due next (one request
        at a time, besides FindCoordinator)."""
        if self._find is not None and self._find.done:
            self._found(self._find)
        if self._pending is not None and self._pending.done:
            pending, handler = self._pending, self._on_answer
            self._pending = self._on_answer = None
            assert handler is not None
            to_group, self._pending_group = self._pending_group, False
            try:
                response = pending.result()
            except KafkaError as exc:  # the connection broke or timed out
                self._lost(now, exc, to_group)
            else:
                handler(response)
        if self._pending is not None or self._find is not None or now < self._next_try:
            return
        with self.lock:
            op, state = self.op, self.state
        if state is TransactionState.FATAL_ERROR:
            return
        if self._recover and not (self._probing or self._recovered):
            if self.coordinator is None:
                self._send_find(now)
            elif self.engine.in_flight == 0:
                # INVALID_PRODUCER_EPOCH on a message: timed out, or fenced?
                self._probing = True
                self._send_init_pid(bump=True)
            return
        needs_pid = self.engine.producer_id < 0 or self.engine.needs_epoch_bump
        if (
            op is None
            and not self._to_add
            and not (needs_pid and state is not TransactionState.UNINITIALIZED)
        ):
            return
        if (
            op is not None
            and op.kind in ("commit", "abort")
            and not (self._started or self.added or self._offsets_added)
        ):
            # Nothing of this transaction reached a broker: it ends here,
            # without its coordinator.
            (self._abort_step if op.kind == "abort" else self._commit_step)(op)
            return
        if self.coordinator is None:
            self._send_find(now)
            return
        if op is not None and op.kind == "init":
            self._send_init_pid(bump=False)
        elif op is not None and op.kind == "abort":
            self._abort_step(op)
        elif (
            needs_pid
            and self.engine.in_flight == 0
            and (state is not TransactionState.IN_TRANSACTION or not self._started)
        ):
            self._send_init_pid(bump=True)
        elif (
            self._to_add
            and not self.v2
            and state in (TransactionState.IN_TRANSACTION, TransactionState.COMMITTING)
        ):
            self._send_add_partitions()
        elif op is not None and op.kind == "offsets":
            self._offsets_step(op, now)
        elif op is not None and op.kind == "commit":
            self._commit_step(op)

    def _lost(self, now: float, error: KafkaError, to_group: bool) -> None:
        """A request's node could not be reached: find its coordinator again
        (the group's, for an offsets commit), after a backoff."""
        if self._adding:
            # An AddPartitionsToTxn without an answer: asked again (the gate
            # holds those partitions' batches until they are added).
            self._to_add |= self._adding
            self._adding = set()
        op = self._offsets_op()
        if to_group and op is not None:
            op.step = "find group"
            self._retry_later(now, error, find=False)
        else:
            self._retry_later(now, error, find=True)

    def _retry_later(self, now: float, error: KafkaError, *, find: bool) -> None:
        self._failures += 1
        if find:
            self.coordinator = None
        backoff = min(1.0, self.engine.retry_backoff_s * self._failures)
        self._next_try = now + backoff
        log.info("transaction request failed (%s); again in %.2fs", error, backoff)

    def _send(
        self,
        node: int,
        api: Any,
        body: dict[str, Any],
        handler: Callable[[Any], None],
        cap: int | None = None,
        *,
        to_group: bool = False,
    ) -> None:
        try:
            self._pending = self.network.send(node, api, body, cap=cap, wait_connect=False)
            self._on_answer = handler
            self._pending_group = to_group
        except KafkaError as exc:
            if exc.retriable:
                self._lost(time.monotonic(), exc, to_group)
            else:
                with self.lock:
                    self._become_fatal(exc)

    def _broker_error(self, code: int, what: str) -> None:
        """A coordinator's error code that is not success: find the
        coordinator again, try again later, or give up (fatal / abortable)."""
        now = time.monotonic()
        error = error_for_code(code, f"{what} for transactional id {self.id!r}")
        if code in FIND_AGAIN:
            self._retry_later(now, error, find=True)
        elif code == CONCURRENT_TRANSACTIONS:
            self._next_try = now + CONCURRENT_BACKOFF_S
        elif code in TRY_AGAIN or error_info(code).retriable:
            self._retry_later(now, error, find=False)
        else:
            with self.lock:
                if (
                    code in FATAL_CODES
                    or self._probing
                    or (self.op is not None and self.op.kind == "init")
                ):
                    self._become_fatal(error)
                elif self.state in (TransactionState.IN_TRANSACTION, TransactionState.COMMITTING):
                    if code == INVALID_PRODUCER_EPOCH:
                        self._recover = True
                    self._become_abortable(error)
                else:
                    # Aborting: the coordinator aborts the transaction at its
                    # timeout anyway; this producer cannot go on reliably.
                    self._become_fatal(error)

    # FindCoordinator ---------------------------------------------------------

    def _send_find(self, now: float) -> None:
        nodes = self.network.known_nodes or [-1]
        node = nodes[self._failures % len(nodes)]
        body = {"key": self.id, "key_type": 1, "coordinator_keys": [self.id]}
        try:
            self._find = self.network.send(node, m.FIND_COORDINATOR, body, wait_connect=False)
        except KafkaError as exc:
            self._retry_later(now, exc, find=False)

    def _found(self, pending: Pending) -> None:
        self._find = None
        now = time.monotonic()
        try:
            body = pending.result()
        except KafkaError as exc:
            self._retry_later(now, exc, find=False)
            return
        entry = (body.get("coordinators") or [body])[0]
        code = entry.get("error_code", 0)
        if code:
            if code in FATAL_CODES:
                with self.lock:
                    self._become_fatal(error_for_code(code, f"FindCoordinator for {self.id!r}"))
                return
            self._retry_later(now, error_for_code(code, "FindCoordinator"), find=False)
            return
        self.coordinator = entry["node_id"]

    # InitProducerId ---------------------------------------------------------

    def _send_init_pid(self, *, bump: bool) -> None:
        engine = self.engine
        body = {
            "transactional_id": self.id,
            "transaction_timeout_ms": self.timeout_ms,
            "producer_id": engine.producer_id if bump else -1,
            "producer_epoch": engine.producer_epoch if bump else -1,
        }
        assert self.coordinator is not None
        self._send(self.coordinator, m.INIT_PRODUCER_ID, body, self._pid_answer)

    def _pid_answer(self, body: dict[str, Any]) -> None:
        code = body["error_code"]
        if code:
            self._broker_error(code, "InitProducerId")
            return
        self._failures = 0
        self.v2 = self._speaks_v2()
        self.core.driver.produce_cap = 12 if self.v2 else 11
        log.info(
            "transactional id %r: producer id %s epoch %s (transactions v%d)",
            self.id,
            body["producer_id"],
            body["producer_epoch"],
            2 if self.v2 else 1,
        )
        self.engine.set_producer_id(body["producer_id"], body["producer_epoch"])
        with self.lock:
            op = self.op
            if op is not None and op.kind == "init":
                self.state = TransactionState.READY
                self.op = None
                op.finish()
                return
        if self._probing:
            # Not fenced: the coordinator had aborted the transaction at its
            # timeout; this is the new epoch. The abort now ends locally.
            self._probing = False
            self._recovered = True
            self._probe_done.set()

    def _speaks_v2(self) -> bool:
        """Transactions v2: the coordinator finalizes transaction.version >= 2
        and speaks EndTxn v5 and Produce v12."""
        assert self.coordinator is not None
        try:
            conn = self.network.connection(self.coordinator, wait=False)
        except KafkaError:
            return self.v2
        versions = conn.api_versions
        return (
            conn.features.get("transaction.version", 0) >= 2
            and versions.get(m.END_TXN.key, (0, 0))[1] >= 5
            and versions.get(m.PRODUCE.key, (0, 0))[1] >= 12
        )

    # AddPartitionsToTxn (v1) ------------------------------------------------

    def _send_add_partitions(self) -> None:
        adding = self._to_add
        self._to_add = set()
        self._adding = adding
        topics: dict[str, list[int]] = {}
        for topic, partition in sorted(adding):
            topics.setdefault(topic, []).append(partition)
        body = {
            "v3_and_below_transactional_id": self.id,
            "v3_and_below_producer_id": self.engine.producer_id,
            "v3_and_below_producer_epoch": self.engine.producer_epoch,
            "v3_and_below_topics": [{"name": t, "partitions": p} for t, p in topics.items()],
        }
        assert self.coordinator is not None
        self._send(self.coordinator, m.ADD_PARTITIONS_TO_TXN, body, self._added_answer, cap=3)
        if self._pending is None:  # not sent: ask again later
            self._to_add |= adding
            self._adding = set()

    def _added_answer(self, body: dict[str, Any]) -> None:
        adding, self._adding = self._adding, set()
        worst = 0
        for topic in body.get("results_by_topic_v3_and_below") or ():
            for p in topic["results_by_partition"]:
                key = (topic["name"], p["partition_index"])
                code = p["partition_error_code"]
                if code == 0:
                    self.added.add(key)
                    adding.discard(key)
                elif worst in (0, OPERATION_NOT_ATTEMPTED):
                    worst = code
        self._to_add |= adding  # not added: asked again (or failed below)
        if worst:
            self._broker_error(worst, "AddPartitionsToTxn")
        else:
            self._failures = 0

    # send_offsets_to_transaction --------------------------------------------

    def _offsets_step(self, op: Op, now: float) -> None:
        engine = self.engine
        group = op.group
        if op.step == "add":  # v1: the group's offsets join the transaction first
            body = {
                "transactional_id": self.id,
                "producer_id": engine.producer_id,
                "producer_epoch": engine.producer_epoch,
                "group_id": group["group_id"],
            }
            assert self.coordinator is not None
            self._send(self.coordinator, m.ADD_OFFSETS_TO_TXN, body, self._offsets_added_answer)
        elif op.step == "find group":
            nodes = self.network.known_nodes or [-1]
            body = {
                "key": group["group_id"],
                "key_type": 0,
                "coordinator_keys": [group["group_id"]],
            }
            self._send(
                nodes[self._failures % len(nodes)],
                m.FIND_COORDINATOR,
                body,
                self._group_found,
                to_group=True,
            )
        else:  # "commit"
            body = {
                "transactional_id": self.id,
                "group_id": group["group_id"],
                "producer_id": engine.producer_id,
                "producer_epoch": engine.producer_epoch,
                "generation_id": group["generation_id"],
                "member_id": group["member_id"],
                "group_instance_id": group["group_instance_id"],
                "topics": [{"name": t, "partitions": p} for t, p in op.offsets.items()],
            }
            self._send(
                group["coordinator"],
                m.TXN_OFFSET_COMMIT,
                body,
                self._offsets_committed,
                cap=5 if self.v2 else 4,
                to_group=True,
            )

    def _offsets_op(self) -> Op | None:
        """The send_offsets operation an answer belongs to (None: aborted since)."""
        op = self.op
        return op if op is not None and op.kind == "offsets" else None

    def _offsets_added_answer(self, body: dict[str, Any]) -> None:
        if self._offsets_op() is None:
            return
        code = body["error_code"]
        if code:
            self._broker_error(code, "AddOffsetsToTxn")
            return
        self._failures = 0
        self._offsets_added = True
        self._started = True
        op = self._offsets_op()
        if op is not None:
            op.step = "find group"

    def _group_found(self, body: dict[str, Any]) -> None:
        op = self._offsets_op()
        if op is None:
            return
        entry = (body.get("coordinators") or [body])[0]
        code = entry.get("error_code", 0)
        if code:
            self._broker_error(code, "FindCoordinator (group)")
            return
        op.group["coordinator"] = entry["node_id"]
        op.step = "commit"

    def _offsets_committed(self, body: dict[str, Any]) -> None:
        if self._offsets_op() is None:
            return
        worst = 0
        for topic in body["topics"]:
            for p in topic["partitions"]:
                worst = worst or p["error_code"]
        op = self._offsets_op()
        if worst in FIND_AGAIN or worst == COORDINATOR_LOAD_IN_PROGRESS:
            if op is not None:
                op.step = "find group"
            self._retry_later(
                time.monotonic(), error_for_code(worst, "TxnOffsetCommit"), find=False
            )
            return
        if worst:
            self._broker_error(worst, "TxnOffsetCommit")
            return
        self._failures = 0
        self._started = True
        with self.lock:
            if op is not None and self.op is op:
                self.op = None
                op.finish()

    # EndTxn -----------------------------------------------------------------

    def _commit_step(self, op: Op) -> None:
        # The caller flushed: every message is acknowledged or failed (a
        # failure made the state ABORTABLE_ERROR and finished this op).
        if (
            self.state is not TransactionState.COMMITTING
            or not self.engine.idle
            or len(self.core.accs)
        ):
            return
        self._end(True)

    def _abort_step(self, op: Op) -> None:
        engine = self.engine
        if engine.queued:
            # Queued but not sent (retries and batches of partitions not yet
            # added included): never written in this transaction.
            engine.fail_all(TransactionAbortedError("the transaction was aborted; not sent"))
        if engine.in_flight:
            return  # their answers first: the transaction ends after them
        if len(self.core.accs):
            return  # (fail_unsent on the caller's thread is emptying them)
        if self._recover:
            # The coordinator aborted at its timeout and bumped the epoch: an
            # InitProducerId with the current id and epoch took the new one
            # (step), and there is no transaction left to end.
            if self._recovered:
                self._ended()
            return
        if engine.needs_epoch_bump and not self.v2:
            # Batches that left their sequence (failed after being sent): the
            # coordinator aborts with the old epoch, then a new epoch.
            self._bump = True
        self._end(False)

    def _end(self, commit: bool) -> None:
        if not self._started and not (self.added or self._offsets_added):
            # Nothing reached a broker in this transaction: nothing to end.
            self._ended()
            return
        body = {
            "transactional_id": self.id,
            "producer_id": self.engine.producer_id,
            "producer_epoch": self.engine.producer_epoch,
            "committed": commit,
        }
        assert self.coordinator is not None
        self._send(self.coordinator, m.END_TXN, body, self._end_answer, cap=5 if self.v2 else 4)

    def _end_answer(self, body: dict[str, Any]) -> None:
        code = body["error_code"]
        if code:
            self._broker_error(code, "EndTxn")
            return
        self._failures = 0
        if self.v2 and body.get("producer_epoch", -1) >= 0:
            # Transactions v2 bump the epoch at every end.
            self.engine.set_producer_id(body["producer_id"], body["producer_epoch"])
        elif self._bump:
            self.engine.needs_epoch_bump = True
        self._bump = False
        self._ended()

    def _ended(self) -> None:
        with self.lock:
            op = self.op
            self.state = TransactionState.READY
            self.error = None
            self.op = None
            self.added.clear()
            self._to_add.clear()
            self._offsets_added = False
            self._started = False
            self._recover = False
            self._recovered = False
            self._probe_done.clear()
        if op is not None:
            op.finish()
