"""Errors of the producers (exported by :mod:`grete` and :mod:`grete.producer`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grete.errors import ConfigurationError, KafkaError

if TYPE_CHECKING:
    from grete.producer.message import DeliveryResult


class InvalidMessageError(ConfigurationError, TypeError):
    """A message the producer cannot send as given (wrong type or shape, a
    negative timestamp, a partition the topic does not have). Raised before
    anything is sent."""


class ProducerClosedError(KafkaError):
    """The producer was closed."""


class ProducerQueueFullError(KafkaError):
    """The producer holds ``max_queued_messages`` / ``max_buffer_bytes`` already
    and ``block_on_queue_full`` is off, or the wait for space ran out."""

    retriable = True


class DeliveryTimeoutError(KafkaError):
    """A message's ``delivery_timeout_ms`` ran out before it was acknowledged."""

    def __init__(
        self,
        topic: str,
        partition: int,
        maybe_written: bool,
        last_error: KafkaError | None = None,
    ) -> None:
        how = "it may have been written" if maybe_written else "it was not written"
        why = "" if last_error is None else f"; last error: {last_error}"
        super().__init__(f"delivery to {topic}/{partition} timed out ({how}){why}")
        self.maybe_written = maybe_written
        #: What the last attempt ran into (also the exception's ``__cause__``).
        self.last_error = last_error
        self.__cause__ = last_error


class OutcomeUnknownError(KafkaError):
    """An idempotent producer had to take a new epoch while a message's
    earlier send had no answer: it may be in the log (``maybe_written``), and
    sending it again under the new epoch could write it twice, so it was not."""

    maybe_written = True

    def __init__(self, topic: str, partition: int) -> None:
        super().__init__(
            f"delivery to {topic}/{partition} has an unknown outcome: it was sent, no answer "
            "came, and the producer had to take a new epoch before it could be resent "
            "safely (it may have been written; it was not sent again, to never write it twice)"
        )


@dataclass(frozen=True)
class MessageFailure:
    """Why one message of a ``produce()`` call was not acknowledged.

    ``maybe_written`` is True when a send's outcome was unknown (the
    connection broke or timed out after the request left): the message may
    be in the log. False means the broker refused it: it was not written.
    """

    index: int
    error: KafkaError
    maybe_written: bool


class ProduceFailureError(KafkaError):
    """Some messages of a ``produce()`` call were not acknowledged.

    ``results[i]`` is the :class:`~grete.DeliveryResult` of message ``i`` or
    None when it failed; ``failures`` says, per failed message, why and
    whether it may have been written anyway.
    """

    def __init__(
        self, results: Sequence[DeliveryResult | None], failures: Sequence[MessageFailure]
    ) -> None:
        first = failures[0]
        super().__init__(
            f"{len(failures)} of {len(results)} message(s) failed; "
            f"first: message {first.index}: {first.error}"
        )
        self.results = list(results)
        self.failures = list(failures)


class TransactionError(KafkaError):
    """A transactional producer's error (see :class:`TransactionStateError`,
    :class:`TransactionAbortableError`, :class:`TransactionFatalError`)."""


class TransactionStateError(TransactionError):
    """A call the transaction's state does not allow (``produce()`` outside
    a transaction, ``commit_transaction()`` before ``begin_transaction()``,
    ``begin_transaction()`` twice...). Nothing was done."""


class TransactionAbortableError(TransactionError):
    """The transaction cannot commit (a message failed, a call timed out in
    a way that left it in doubt): call ``abort_transaction()``, then begin
    again. ``__cause__`` says what failed."""


class TransactionFatalError(TransactionError):
    """The producer cannot go on (fenced by a newer instance with the same
    ``transactional_id``, not authorized, a broker that does not support
    transactions): close it. ``__cause__`` is the broker's error."""


class TransactionAbortedError(TransactionError):
    """The message's transaction was aborted before the message was sent:
    it was not written."""

    maybe_written = False
