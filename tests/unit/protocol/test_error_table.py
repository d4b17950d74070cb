"""The error-code table and the exception class per code agree and never fail."""

from __future__ import annotations

import pytest

import grete.errors as errors
from grete.errors import (
    AuthenticationError,
    BrokerResponseError,
    KafkaError,
    error_for_code,
)
from grete.protocol.errors import ERROR_CODES, ErrorCode, error_info

INVALID_METADATA = {
    "UNKNOWN_TOPIC_OR_PARTITION",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REPLICA_NOT_AVAILABLE",
    "NETWORK_EXCEPTION",
    "KAFKA_STORAGE_ERROR",
    "LISTENER_NOT_FOUND",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "UNKNOWN_TOPIC_ID",
    "INCONSISTENT_TOPIC_ID",
}


def test_table_is_contiguous_through_kafka_4_1() -> None:
    assert sorted(ERROR_CODES) == list(range(-1, 134))
    assert ERROR_CODES[133].name == "SHARE_SESSION_LIMIT_REACHED"
    names = [e.name for e in ERROR_CODES.values()]
    assert len(set(names)) == len(names)


def test_invalid_metadata_codes_are_retriable() -> None:
    assert {e.name for e in ERROR_CODES.values() if e.invalid_metadata} == INVALID_METADATA
    assert all(e.retriable for e in ERROR_CODES.values() if e.invalid_metadata)


@pytest.mark.parametrize(
    ("code", "retriable"),
    [
        (-1, False),
        (2, True),
        (7, True),
        (10, False),
        (19, True),
        (20, True),
        (29, False),
        (35, False),
        (45, False),
        (47, False),
        (51, False),
        (59, False),
        (89, True),
        (90, False),
    ],
)
def test_retriable_matches_java(code: int, retriable: bool) -> None:
    assert error_info(code).retriable is retriable


@pytest.mark.parametrize("code", [-2, 134, 999, 32767, -32768])
def test_unknown_code_is_synthetic_and_not_retriable(code: int) -> None:
    info = error_info(code)
    assert info == ErrorCode(code, info.name, False, False, info.message)
    exc = error_for_code(code, "broker says hi")
    assert type(exc) is BrokerResponseError
    assert exc.code == code and not exc.retriable
    assert "broker says hi" in str(exc) and str(code) in str(exc)


def test_every_code_has_a_matching_class() -> None:
    for code, info in ERROR_CODES.items():
        if code == 0:
            continue
        exc = error_for_code(code)
        cls = type(exc)
        assert cls is not BrokerResponseError, info.name
        assert cls.__name__ == "".join(w.capitalize() for w in info.name.split("_"))
        assert getattr(errors, cls.__name__) is cls
        assert (exc.code, exc.name) == (code, info.name)
        assert (exc.retriable, exc.invalid_metadata) == (info.retriable, info.invalid_metadata)
        assert isinstance(exc, KafkaError)
        assert info.name in str(exc) and info.message in str(exc)


def test_broker_message_wins_over_description() -> None:
    exc = error_for_code(10, "batch of 2000000 bytes")
    assert isinstance(exc, errors.MessageTooLarge)
    assert exc.broker_message == "batch of 2000000 bytes"
    assert str(exc) == "MESSAGE_TOO_LARGE (error code 10): batch of 2000000 bytes"


def test_familiar_aliases() -> None:
    assert errors.NotLeaderForPartition is errors.NotLeaderOrFollower
    assert errors.MessageSizeTooLarge is errors.MessageTooLarge
    for name in [
        "UnknownTopicOrPartition",
        "RequestTimedOut",
        "NotEnoughReplicas",
        "NotEnoughReplicasAfterAppend",
        "OutOfOrderSequenceNumber",
        "DuplicateSequenceNumber",
        "UnknownProducerId",
        "InvalidProducerEpoch",
        "ProducerFenced",
        "TopicAuthorizationFailed",
        "SaslAuthenticationFailed",
        "UnsupportedVersion",
        "CorruptMessage",
        "KafkaStorageError",
        "TransactionalIdAuthorizationFailed",
        "ClusterAuthorizationFailed",
    ]:
        assert issubclass(getattr(errors, name), BrokerResponseError), name


def test_sasl_failure_is_also_an_authentication_error() -> None:
    exc = error_for_code(58)
    assert isinstance(exc, AuthenticationError)
    assert isinstance(exc, BrokerResponseError)


def test_raising_and_catching_by_family() -> None:
    with pytest.raises(BrokerResponseError) as info:
        raise error_for_code(6)
    assert info.value.retriable and info.value.invalid_metadata
