"""Every producer option in one table, and the one place that validates them.

Each front end (:data:`FRONT_ENDS`) hands the options it was given to
:func:`resolve`, which returns a :class:`ProducerConfig`. So an option has the same
name, meaning, bounds and error everywhere: a
:class:`~grete.errors.ConfigurationError` that names the option and shows the
value, such as ``batch_size must be an integer >= 1, not 0``. :data:`OPTIONS`
lists every option with its default per front end; ``docs/options.rst`` shows
it as a table (a test checks that the page matches it).

The rules that tie options together:

- ``compression_level`` must suit ``compression`` (see
  :func:`~grete.protocol.compression.validate_level`);
- ``retry_backoff_max_ms`` may not be below ``retry_backoff_ms``;
- ``enable_idempotence=None`` means on exactly when ``required_acks=-1``, and
  ``True`` with any other ``required_acks`` is refused;
- ``max_in_flight`` is 1..5 with idempotence, 1..1000 without.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from grete.errors import ConfigurationError
from grete.partitioners import random_partitioner
from grete.protocol.compression import LEVEL_RANGES, CompressionType, validate_level

__all__ = [
    "FRONT_ENDS",
    "OPTIONS",
    "Option",
    "ProducerConfig",
    "defaults",
    "given",
    "options_for",
    "resolve",
]

#: The classes that take these options, by name.
FRONT_ENDS = ("Producer", "BackgroundProducer", "KafkaProducer")

#: How an option's value is checked (see :func:`_check`).
Kind = Literal[
    "int",  # an int (not a bool) in low..high; low may name an earlier option
    "number",  # an int or a float (not a bool), finite, >= low
    "bool",
    "callable",  # None too where None is the front end's default
    "compression",  # a CompressionType, its int value or its name
    "level",  # compression_level: validate_level(compression, value)
    "acks",  # 0, 1, -1 or "all"
    "idempotence",  # True, False or None (then: required_acks == -1)
    "in_flight",  # an int in 1..5 with idempotence, 1..1000 without
    "txn_id",  # None or a non-empty str
]


@dataclass(frozen=True, slots=True, eq=False)  # eq=False: hashable (defaults is a dict)
class Option:
    """One option: what it means, its default per front end, what it accepts."""

    name: str
    #: What it does, for users (the docs table's "meaning").
    doc: str
    #: The default of each front end that takes the option; a front end missing
    #: here does not take it.
    defaults: Mapping[str, Any]
    kind: Kind
    #: The lowest value accepted: a number, or the name of an earlier option.
    low: float | str | None = None
    #: The highest value accepted (kind "int" only).
    high: int | None = None
    #: Values refused with the defaults of every front end (for the tests).
    bad: tuple[Any, ...] = ()

    @property
    def fallback(self) -> Any:
        """What a front end that does not take the option holds in its
        :class:`ProducerConfig`: KafkaProducer's default, else
        BackgroundProducer's (else Producer's)."""
        return next(self.defaults[f] for f in reversed(FRONT_ENDS) if f in self.defaults)


def _every(value: Any) -> dict[str, Any]:
    return dict.fromkeys(FRONT_ENDS, value)


def _threaded(value: Any) -> dict[str, Any]:
    """The default of the front ends with a sender thread."""
    return dict.fromkeys(("BackgroundProducer", "KafkaProducer"), value)


def _split(sync: Any, threaded: Any) -> dict[str, Any]:
    return {"Producer": sync, **_threaded(threaded)}


_INT32_MAX = 2**31 - 1

#: Every option, in the order they are checked (an option that depends on
#: another comes after it).
OPTIONS: tuple[Option, ...] = (
    Option(
        "partitioner",
        "partitioner(partitions, key) -> Partition: where each message goes. "
        "None: DefaultPartitioner() (Java's: murmur2 of the key, sticky without one).",
        _split(random_partitioner, None),
        "callable",
        bad=(42, "random"),
    ),
    Option(
        "compression",
        "The codec of every record batch.",
        _every(CompressionType.NONE),
        "compression",
        bad=("brotli", 7, True),
    ),
    Option(
        "compression_level",
        "The codec's level (gzip 1..9, lz4 1..17, zstd -131072..22); None: the "
        "codec's default. snappy and none take no level.",
        _every(None),
        "level",
        bad=(3, "high"),
    ),
    Option(
        "max_retries",
        "How many times a batch the brokers failed is sent again (waiting for a new "
        "leader spends none: delivery_timeout_ms bounds it).",
        _split(3, _INT32_MAX),
        "int",
        low=0,
        bad=(-1, 1.5, True),
    ),
    Option(
        "retry_backoff_ms",
        "The wait before a first retry; it doubles per attempt (with jitter) up to "
        "retry_backoff_max_ms.",
        _every(100),
        "int",
        low=0,
        bad=(-1, 0.5),
    ),
    Option(
        "retry_backoff_max_ms",
        "The longest wait between retries.",
        _every(1_000),
        "int",
        low="retry_backoff_ms",
        bad=(50, "1s"),
    ),
    Option(
        "required_acks",
        "0: no answer; 1: the leader has it; -1 (or 'all'): every in-sync replica has it.",
        _split(1, -1),
        "acks",
        bad=(2, "1", True),
    ),
    Option(
        "ack_timeout_ms",
        "How long a broker may wait for its replicas (the Produce request's timeout).",
        _split(10_000, 30_000),
        "int",
        low=1,
        high=_INT32_MAX,
        bad=(0, 2**31),
    ),
    Option(
        "batch_size",
        "The most messages (not bytes) in one record batch.",
        _split(200, 10_000),
        "int",
        low=1,
        bad=(0, "200"),
    ),
    Option(
        "max_request_size",
        "The most bytes in one Produce request; a larger message fails alone with "
        "MessageSizeTooLarge.",
        _every(1 << 20),
        "int",
        low=1024,
        bad=(1023, None),
    ),
    Option(
        "transactional_id",
        "Makes the producer transactional (init_transactions(), begin/commit/abort): "
        "one id per producer instance that must survive its restarts; None: not transactional.",
        {"KafkaProducer": None},
        "txn_id",
        bad=("", 7),
    ),
    Option(
        "transaction_timeout_ms",
        "How long the coordinator lets a transaction stay open before aborting it.",
        {"KafkaProducer": 60_000},
        "int",
        low=1,
        high=_INT32_MAX,
        bad=(0, 1.5),
    ),
    Option(
        "enable_idempotence",
        "The broker drops duplicates of a retried batch and keeps each partition in "
        "order. None: on exactly when required_acks=-1; True needs required_acks=-1.",
        _every(None),
        "idempotence",
        bad=(1, "yes"),
    ),
    Option(
        "max_in_flight",
        "Produce requests awaiting an answer per broker: 1..5 with idempotence, 1..1000 without.",
        _every(5),
        "in_flight",
        bad=(0, 1001, 2.0),
    ),
    Option(
        "delivery_timeout_ms",
        "The longest a message may take from produce() to its outcome, retries and "
        "leader elections included.",
        _every(120_000),
        "number",
        low=1,
        bad=(0, math.nan, math.inf, False),
    ),
    Option(
        "linger_ms",
        "How long a batch that is not full waits for more messages before it is sent.",
        _threaded(5),
        "number",
        low=0,
        bad=(-1, "5"),
    ),
    Option(
        "max_batch_bytes",
        "The most bytes in one record batch.",
        _threaded(1 << 20),
        "int",
        low=1024,
        bad=(512, 2048.0),
    ),
    Option(
        "max_queued_messages",
        "The most messages produced and not yet reported (acknowledged, failed, or "
        "with delivery_reports read); past it produce() blocks or raises "
        "ProducerQueueFullError (block_on_queue_full).",
        _threaded(100_000),
        "int",
        low=1,
        bad=(0, None),
    ),
    Option(
        "max_buffer_bytes",
        "The most bytes of messages produced and not yet reported (as max_queued_messages).",
        _threaded(64 << 20),
        "int",
        low=1024,
        bad=(1000, "64MiB"),
    ),
    Option(
        "block_on_queue_full",
        "True: produce() waits (up to queue_full_timeout_ms) for room; False: it "
        "raises ProducerQueueFullError at once.",
        _threaded(True),
        "bool",
        bad=(1, None),
    ),
    Option(
        "queue_full_timeout_ms",
        "How long a blocked produce() waits for room before it raises ProducerQueueFullError.",
        _threaded(60_000),
        "number",
        low=0,
        bad=(-0.5, math.inf),
    ),
    Option(
        "delivery_reports",
        "Queue every outcome for get_delivery_report() (pykafka's delivery_reports).",
        {"BackgroundProducer": False},
        "bool",
        bad=(0, "no"),
    ),
    Option(
        "serializer",
        "serializer(value) -> bytes, applied to every value but None; None: values "
        "must be bytes or str.",
        _threaded(None),
        "callable",
        bad=(42, b"json"),
    ),
    Option(
        "key_serializer",
        "key_serializer(key) -> bytes, applied to every key but None; None: keys "
        "must be bytes or str.",
        _threaded(None),
        "callable",
        bad=(42,),
    ),
    Option(
        "metrics_log_interval_ms",
        "How often the sender thread logs metrics() at DEBUG to the "
        "grete.producer.metrics logger (and once more when it stops); 0: never.",
        _threaded(60_000),
        "number",
        low=0,
        bad=(-1, None),
    ),
    Option(
        "unknown_topic_timeout_ms",
        "How long messages for a topic the cluster does not list wait for it to "
        "appear (or be auto-created) before they fail with UnknownTopicOrPartition.",
        {"KafkaProducer": 10_000},
        "number",
        low=1,
        bad=(0, "10s"),
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True, slots=True)
class ProducerConfig:
    """One front end's options, checked and resolved by :func:`resolve`.

    One attribute per option of :data:`OPTIONS` (an option the front end does
    not take holds its :attr:`Option.fallback`: KafkaProducer's default, else
    BackgroundProducer's), with ``compression`` a
    :class:`~grete.CompressionType`, ``required_acks`` an int and
    ``enable_idempotence`` a bool; plus the durations in seconds.
    """

    partitioner: Callable[..., Any] | None
    compression: CompressionType
    compression_level: int | None
    max_retries: int
    retry_backoff_ms: int
    retry_backoff_max_ms: int
    required_acks: int
    ack_timeout_ms: int
    batch_size: int
    max_request_size: int
    transactional_id: str | None
    transaction_timeout_ms: int
    enable_idempotence: bool
    max_in_flight: int
    delivery_timeout_ms: float
    linger_ms: float
    max_batch_bytes: int
    max_queued_messages: int
    max_buffer_bytes: int
    block_on_queue_full: bool
    queue_full_timeout_ms: float
    delivery_reports: bool
    serializer: Callable[[Any], bytes] | None
    key_serializer: Callable[[Any], bytes] | None
    metrics_log_interval_ms: float
    unknown_topic_timeout_ms: float

    @property
    def linger_s(self) -> float:
        return self.linger_ms / 1000

    @property
    def delivery_timeout_s(self) -> float:
        return self.delivery_timeout_ms / 1000

    @property
    def retry_backoff_s(self) -> float:
        return self.retry_backoff_ms / 1000

    @property
    def retry_backoff_max_s(self) -> float:
        return self.retry_backoff_max_ms / 1000

    @property
    def queue_full_timeout_s(self) -> float:
        return self.queue_full_timeout_ms / 1000

    @property
    def metrics_log_interval_s(self) -> float:
        """``math.inf`` when the periodic log is off (0)."""
        return self.metrics_log_interval_ms / 1000 or math.inf

    @property
    def unknown_topic_timeout_s(self) -> float:
        return self.unknown_topic_timeout_ms / 1000


def _front_end(front_end: str) -> str:
    if front_end not in FRONT_ENDS:
        raise ValueError(f"unknown front end {front_end!r}: one of {FRONT_ENDS}")
    return front_end


def options_for(front_end: str) -> list[Option]:
    """The options ``front_end`` takes, in table order."""
    _front_end(front_end)
    return [option for option in OPTIONS if front_end in option.defaults]


def defaults(front_end: str) -> dict[str, Any]:
    """``{name: default}`` of every option ``front_end`` takes."""
    return {option.name: option.defaults[front_end] for option in options_for(front_end)}


def given(arguments: Mapping[str, Any], unknown: Mapping[str, Any]) -> dict[str, Any]:
    """The options a front end's ``__init__`` was called with: its named
    arguments (``locals()``) less the ones that are not options, plus any
    other keyword (``unknown``), which :func:`resolve` then refuses by name."""
    return {k: v for k, v in arguments.items() if k not in _NOT_OPTIONS} | dict(unknown)


# The parameters of the front ends' __init__ that are not options.
_NOT_OPTIONS = frozenset({"self", "cluster", "topic", "client", "unknown", "__class__"})


def resolve(front_end: str, options: Mapping[str, Any]) -> ProducerConfig:
    """Check ``options`` (those given to ``front_end``, by name) and return
    them resolved, with that front end's defaults for the others.

    Raises :class:`~grete.errors.ConfigurationError` naming the option and
    showing the value (the first refused, in table order), or naming an
    option ``front_end`` does not take.
    """
    taken = {option.name for option in options_for(front_end)}
    for name in options:
        if name not in taken:
            raise ConfigurationError(_unknown(front_end, name, sorted(taken)))
    got: dict[str, Any] = {}
    for option in OPTIONS:
        default = option.defaults.get(front_end, option.fallback)
        value = options.get(option.name, default)
        got[option.name] = _check(option, value, default is None, got)
    return ProducerConfig(**got)


def _unknown(front_end: str, name: str, taken: list[str]) -> str:
    message = f"{front_end} has no option {name!r}"
    option = _BY_NAME.get(name)
    if option is not None:
        takers = " and ".join(option.defaults)
        return f"{message}: only {takers} {'takes' if len(option.defaults) == 1 else 'take'} it"
    close = difflib.get_close_matches(name, taken, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _refused(name: str, expected: str, value: Any) -> ConfigurationError:
    return ConfigurationError(f"{name} must be {expected}, not {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _floor(option: Option, got: dict[str, Any]) -> tuple[float, str]:
    """The lowest value ``option`` accepts, and how its error shows that bound."""
    if isinstance(option.low, str):
        floor: float = got[option.low]
        return floor, f">= {option.low} ({floor})"
    floor = 0 if option.low is None else option.low
    return floor, f">= {floor}"


def _check(option: Option, value: Any, none_default: bool, got: dict[str, Any]) -> Any:
    """``value`` resolved, or the ConfigurationError for it; ``got`` holds the
    options before it, resolved; ``none_default``: None is this front end's default."""
    name = option.name
    match option.kind:
        case "int":
            floor, shown = _floor(option, got)
            if option.high is not None:
                shown = f"in {floor}..{option.high}"
            if _is_int(value) and floor <= value <= (option.high or math.inf):
                return value
            raise _refused(name, f"an integer {shown}", value)
        case "number":
            floor, shown = _floor(option, got)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value) and value >= floor:
                return value
            raise _refused(name, f"a finite number {shown}", value)
        case "bool":
            if isinstance(value, bool):
                return value
            raise _refused(name, "True or False", value)
        case "callable":
            if callable(value) or (value is None and none_default):
                return value
            raise _refused(name, "callable", value)
        case "compression":
            return _compression(value)
        case "level":
            codec: CompressionType = got["compression"]
            try:
                validate_level(codec, value)
            except (ValueError, TypeError):
                lo_hi = LEVEL_RANGES.get(codec)
                takes = "None" if lo_hi is None else "None or an integer in {}..{}".format(*lo_hi)
                raise _refused(name, f"{takes} when compression is {codec.name}", value) from None
            return value
        case "acks":
            if value in (0, 1, -1) and _is_int(value):
                return value
            if isinstance(value, str) and value.lower() == "all":
                return -1
            raise _refused(name, "0, 1, -1 or 'all'", value)
        case "txn_id":
            if value is None or (isinstance(value, str) and value):
                return value
            raise _refused(name, "None or a non-empty str", value)
        case "idempotence":
            acks = got["required_acks"]
            # A transactional producer is idempotent, with acks from every replica.
            if got["transactional_id"] is not None and (value is False or acks != -1):
                raise ConfigurationError(
                    "transactional_id needs enable_idempotence (True or None) and "
                    f"required_acks=-1, not enable_idempotence={value!r}, "
                    f"required_acks={acks!r}"
                )
            if value is None:
                return acks == -1
            if not isinstance(value, bool):
                raise _refused(name, "True, False or None", value)
            if value and acks != -1:
                raise ConfigurationError(
                    f"enable_idempotence=True needs required_acks=-1, not required_acks={acks!r}"
                )
            return value
        case "in_flight":
            idempotent = got["enable_idempotence"]
            if _is_int(value) and 1 <= value <= (5 if idempotent else 1000):
                return value
            shown = "in 1..5 with idempotence" if idempotent else "in 1..1000"
            raise _refused(name, f"an integer {shown}", value)


def _compression(value: Any) -> CompressionType:
    if isinstance(value, CompressionType):
        return value
    if _is_int(value) and value in {codec.value for codec in CompressionType}:
        return CompressionType(value)
    if isinstance(value, str) and value.upper() in CompressionType.__members__:
        return CompressionType[value.upper()]
    names = ", ".join(repr(c.name.lower()) for c in CompressionType)
    raise _refused("compression", f"a CompressionType, its int value or its name ({names})", value)
