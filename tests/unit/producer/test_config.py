"""The option table (grete.producer.config) and docs/options.rst, with no broker."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from grete.errors import ConfigurationError
from grete.partitioners import hashing_partitioner, random_partitioner
from grete.producer.config import (
    FRONT_ENDS,
    OPTIONS,
    Option,
    ProducerConfig,
    defaults,
    options_for,
    resolve,
)
from grete.protocol.compression import CompressionType

DOCS = Path(__file__).resolve().parents[3] / "docs" / "options.rst"

BAD = [
    pytest.param(option, bad, id=f"{option.name}={bad!r}")
    for option in OPTIONS
    for bad in option.bad
]


def _refusal(front_end: str, options: dict[str, Any]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        resolve(front_end, options)
    return str(caught.value)


def _resolved(option: Option, front_end: str) -> Any:
    """What resolve() makes of ``option``'s default for ``front_end``."""
    default = option.defaults.get(front_end, option.fallback)
    if option.name == "enable_idempotence" and default is None:
        return defaults(front_end)["required_acks"] == -1
    return default


def test_table_and_config_have_the_same_options() -> None:
    names = [option.name for option in OPTIONS]
    assert len(set(names)) == len(names)
    assert names == [field.name for field in dataclasses.fields(ProducerConfig)]
    for option in OPTIONS:
        assert option.doc and option.bad, option.name
        assert set(option.defaults) <= set(FRONT_ENDS), option.name


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_defaults_are_the_table(front_end: str) -> None:
    config = resolve(front_end, {})
    taken = options_for(front_end)
    assert defaults(front_end) == {option.name: option.defaults[front_end] for option in taken}
    for option in OPTIONS:  # those not taken hold KafkaProducer's or BackgroundProducer's
        assert getattr(config, option.name) == _resolved(option, front_end), option.name
    # The documented defaults themselves pass the checks unchanged.
    assert resolve(front_end, defaults(front_end)) == config


def test_public_defaults() -> None:
    """The defaults that are public API (pykafka's for Producer, Java's for the others)."""
    producer, background = resolve("Producer", {}), resolve("BackgroundProducer", {})
    assert producer.partitioner is random_partitioner and background.partitioner is None
    assert (producer.max_retries, producer.required_acks, producer.ack_timeout_ms) == (
        3,
        1,
        10_000,
    )
    assert (producer.batch_size, producer.enable_idempotence) == (200, False)
    assert (background.required_acks, background.enable_idempotence) == (-1, True)
    assert (background.batch_size, background.max_retries) == (10_000, 2**31 - 1)
    assert resolve("KafkaProducer", {}).unknown_topic_timeout_ms == 10_000
    assert "delivery_reports" in defaults("BackgroundProducer")
    assert "delivery_reports" not in defaults("KafkaProducer")
    assert "linger_ms" not in defaults("Producer")


@pytest.mark.parametrize(("option", "bad"), BAD)
def test_bad_value_refused_alike_everywhere(option: Option, bad: Any) -> None:
    messages = set()
    for front_end in option.defaults:
        # Refused with each front end's own defaults...
        message = _refusal(front_end, {option.name: bad})
        assert option.name in message and repr(bad) in message, message
        # ...and, with the options it depends on alike, in the same words.
        messages.add(_refusal(front_end, {"required_acks": -1, option.name: bad}))
    assert len(messages) == 1, messages


def test_error_message_shape() -> None:
    assert _refusal("Producer", {"batch_size": 0}) == "batch_size must be an integer >= 1, not 0"
    assert _refusal("KafkaProducer", {"linger_ms": -1}) == (
        "linger_ms must be a finite number >= 0, not -1"
    )


@pytest.mark.parametrize(
    ("front_end", "name", "hint"),
    [
        ("BackgroundProducer", "lingr_ms", "; did you mean 'linger_ms'?"),
        ("Producer", "batchsize", "; did you mean 'batch_size'?"),
        ("KafkaProducer", "acks_required", "; did you mean 'required_acks'?"),
        ("Producer", "xyz", ""),
        ("Producer", "linger_ms", ": only BackgroundProducer and KafkaProducer take it"),
        ("KafkaProducer", "delivery_reports", ": only BackgroundProducer takes it"),
        ("BackgroundProducer", "unknown_topic_timeout_ms", ": only KafkaProducer takes it"),
    ],
)
def test_unknown_option_refused(front_end: str, name: str, hint: str) -> None:
    message = _refusal(front_end, {name: 1})
    assert message == f"{front_end} has no option {name!r}{hint}"


def test_unknown_front_end() -> None:
    with pytest.raises(ValueError, match="unknown front end 'Consumer'"):
        resolve("Consumer", {})


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_idempotence_follows_acks(front_end: str) -> None:
    assert resolve(front_end, {"required_acks": -1}).enable_idempotence is True
    assert resolve(front_end, {"required_acks": "all"}).enable_idempotence is True
    assert resolve(front_end, {"required_acks": 1}).enable_idempotence is False
    assert resolve(front_end, {"enable_idempotence": False}).enable_idempotence is False
    for acks in (0, 1):
        assert _refusal(front_end, {"required_acks": acks, "enable_idempotence": True}) == (
            f"enable_idempotence=True needs required_acks=-1, not required_acks={acks}"
        )


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_max_in_flight_with_and_without_idempotence(front_end: str) -> None:
    on = {"required_acks": -1}
    off = {"required_acks": -1, "enable_idempotence": False}
    assert resolve(front_end, {**on, "max_in_flight": 5}).max_in_flight == 5
    assert resolve(front_end, {**off, "max_in_flight": 1000}).max_in_flight == 1000
    assert resolve(front_end, {"required_acks": 0, "max_in_flight": 6}).max_in_flight == 6
    refused_on = _refusal(front_end, {**on, "max_in_flight": 6})
    assert refused_on == "max_in_flight must be an integer in 1..5 with idempotence, not 6"
    refused_off = _refusal(front_end, {**off, "max_in_flight": 1001})
    assert refused_off == "max_in_flight must be an integer in 1..1000, not 1001"
    assert "idempotence" not in _refusal(front_end, {"required_acks": 1, "max_in_flight": 0})


@pytest.mark.parametrize("front_end", FRONT_ENDS)
def test_retry_backoff_max_not_below_retry_backoff(front_end: str) -> None:
    assert _refusal(front_end, {"retry_backoff_ms": 500, "retry_backoff_max_ms": 499}) == (
        "retry_backoff_max_ms must be an integer >= retry_backoff_ms (500), not 499"
    )
    config = resolve(front_end, {"retry_backoff_ms": 500, "retry_backoff_max_ms": 500})
    assert (config.retry_backoff_s, config.retry_backoff_max_s) == (0.5, 0.5)


@pytest.mark.parametrize(
    ("given", "codec"),
    [
        (CompressionType.LZ4, CompressionType.LZ4),
        (4, CompressionType.ZSTD),
        ("gzip", CompressionType.GZIP),
        ("SNAPPY", CompressionType.SNAPPY),
        ("None", CompressionType.NONE),
    ],
)
def test_compression_accepted(given: Any, codec: CompressionType) -> None:
    for front_end in FRONT_ENDS:
        assert resolve(front_end, {"compression": given}).compression is codec


def test_compression_level_suits_the_codec() -> None:
    config = resolve("Producer", {"compression": "zstd", "compression_level": -5})
    assert config.compression_level == -5
    assert resolve("Producer", {"compression": "gzip"}).compression_level is None
    assert _refusal("Producer", {"compression": "gzip", "compression_level": 10}) == (
        "compression_level must be None or an integer in 1..9 when compression is GZIP, not 10"
    )
    assert _refusal("Producer", {"compression": "snappy", "compression_level": 1}) == (
        "compression_level must be None when compression is SNAPPY, not 1"
    )
    refused = _refusal("Producer", {"compression": "lz4", "compression_level": True})
    assert refused.endswith("when compression is LZ4, not True")


def test_partitioner_none_only_where_it_is_the_default() -> None:
    assert _refusal("Producer", {"partitioner": None}) == "partitioner must be callable, not None"
    assert resolve("BackgroundProducer", {"partitioner": None}).partitioner is None
    custom = resolve("KafkaProducer", {"partitioner": hashing_partitioner})
    assert custom.partitioner is hashing_partitioner


def test_numbers_and_durations() -> None:
    config = resolve(
        "KafkaProducer",
        {
            "linger_ms": 0.25,
            "delivery_timeout_ms": 1.5,
            "queue_full_timeout_ms": 0,
            "metrics_log_interval_ms": 0,
            "unknown_topic_timeout_ms": 2500,
        },
    )
    assert config.linger_s == 0.25 / 1000
    assert config.delivery_timeout_s == 1.5 / 1000
    assert config.queue_full_timeout_s == 0
    assert config.metrics_log_interval_s == math.inf
    assert config.unknown_topic_timeout_s == 2.5
    assert resolve("BackgroundProducer", {}).metrics_log_interval_s == 60


def test_first_refused_in_table_order() -> None:
    message = _refusal("BackgroundProducer", {"linger_ms": -1, "batch_size": 0})
    assert message.startswith("batch_size ")


def test_config_is_frozen() -> None:
    config = resolve("Producer", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 1  # type: ignore[misc]


# -- docs/options.rst cannot drift from the table ------------------------------


def _rst_rows() -> dict[str, list[str]]:
    """The options table of docs/options.rst: ``{option: [cells after its name]}``
    (a list-table: ``* -`` starts a row, ``-`` a cell, deeper lines continue it)."""
    rows: list[list[str]] = []
    for line in DOCS.read_text().splitlines():
        if line.startswith("   * - "):
            rows.append([line[7:]])
        elif rows and line.startswith("     - "):
            rows[-1].append(line[7:])
        elif rows and line.startswith("       ") and line.strip():
            rows[-1][-1] += " " + line.strip()
        elif rows and line.strip() and not line.startswith(" "):
            break  # the table is over
    header, *body = rows
    assert header[1:4] == [f"``{front_end}``" for front_end in FRONT_ENDS]
    return {row[0].strip("`"): row[1:] for row in body}


def _documented(default: Any) -> str:
    """How the page shows a default."""
    if isinstance(default, CompressionType):
        return f"``CompressionType.{default.name}``"
    if callable(default):
        return f"``{default.__name__}``"
    return f"``{default!r}``"


def test_docs_table_matches_the_options() -> None:
    rows = _rst_rows()
    assert list(rows) == [option.name for option in OPTIONS]
    for option in OPTIONS:
        cells = rows[option.name]
        assert len(cells) == 5, option.name
        for front_end, cell in zip(FRONT_ENDS, cells, strict=False):
            if front_end in option.defaults:
                assert cell.startswith(_documented(option.defaults[front_end])), (option, cell)
            else:
                assert cell == "—", (option.name, front_end, cell)
        assert cells[4] == " ".join(option.doc.split()), option.name


def test_docs_page_is_in_the_toctree() -> None:
    index = (DOCS.parent / "index.rst").read_text()
    assert re.search(r"^   options$", index, re.MULTILINE)
