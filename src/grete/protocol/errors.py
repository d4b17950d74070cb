# ruff: noqa: E501  (one table row per line reads better than wrapped rows)
"""Every Kafka protocol error code, as data.

``retriable`` mirrors the Java client (the code's exception subclasses
``RetriableException``); ``invalid_metadata`` marks the codes whose exception
subclasses ``InvalidMetadataException``: the client's view of leaders or topics is
stale and must be refreshed before retrying. Codes through Kafka 4.1 are listed;
:func:`error_info` never fails, so codes from newer brokers still get an entry.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ERROR_CODES", "ErrorCode", "error_info"]


class ErrorCode(NamedTuple):
    code: int
    name: str
    retriable: bool
    invalid_metadata: bool
    message: str


# Flags: R = retriable, M = invalid metadata (always also retriable).
_R, _M = 1, 2

# (code, name, flags, message). Messages are short paraphrases of what each code means.
# fmt: off
_TABLE: tuple[tuple[int, str, int, str], ...] = (
    (-1, "UNKNOWN_SERVER_ERROR", 0, "The server hit an unexpected error handling the request."),
    (0, "NONE", 0, "No error."),
    (1, "OFFSET_OUT_OF_RANGE", 0, "The offset is outside the range the server keeps."),
    (2, "CORRUPT_MESSAGE", _R, "A record failed its CRC check, is too large, or is otherwise corrupt."),
    (3, "UNKNOWN_TOPIC_OR_PARTITION", _R | _M, "This server does not host this topic-partition."),
    (4, "INVALID_FETCH_SIZE", 0, "The requested fetch size is invalid."),
    (5, "LEADER_NOT_AVAILABLE", _R | _M, "The partition has no leader: an election is in progress."),
    (6, "NOT_LEADER_OR_FOLLOWER", _R | _M, "This broker is not the leader (or not a replica) of the partition."),
    (7, "REQUEST_TIMED_OUT", _R, "The request timed out on the broker."),
    (8, "BROKER_NOT_AVAILABLE", 0, "The broker is not available."),
    (9, "REPLICA_NOT_AVAILABLE", _R | _M, "The replica is not available for this topic-partition."),
    (10, "MESSAGE_TOO_LARGE", 0, "A record batch is larger than the broker accepts."),
    (11, "STALE_CONTROLLER_EPOCH", 0, "The controller moved to another broker."),
    (12, "OFFSET_METADATA_TOO_LARGE", 0, "The offset commit metadata is too large."),
    (13, "NETWORK_EXCEPTION", _R | _M, "The server disconnected before sending a response."),
    (14, "COORDINATOR_LOAD_IN_PROGRESS", _R, "The coordinator is still loading its state."),
    (15, "COORDINATOR_NOT_AVAILABLE", _R, "The coordinator is not available."),
    (16, "NOT_COORDINATOR", _R, "This broker is not the right coordinator."),
    (17, "INVALID_TOPIC_EXCEPTION", 0, "The topic name is invalid for this operation."),
    (18, "RECORD_LIST_TOO_LARGE", 0, "A record batch is larger than the broker's segment size."),
    (19, "NOT_ENOUGH_REPLICAS", _R, "Fewer in-sync replicas than required: records were rejected."),
    (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", _R, "Records were written, but to fewer in-sync replicas than required."),
    (21, "INVALID_REQUIRED_ACKS", 0, "The produce request's acks value is invalid."),
    (22, "ILLEGAL_GENERATION", 0, "The group generation id is not valid."),
    (23, "INCONSISTENT_GROUP_PROTOCOL", 0, "The member's group protocols are incompatible with the group's."),
    (24, "INVALID_GROUP_ID", 0, "The group id is invalid."),
    (25, "UNKNOWN_MEMBER_ID", 0, "The coordinator does not know this member."),
    (26, "INVALID_SESSION_TIMEOUT", 0, "The session timeout is outside the broker's allowed range."),
    (27, "REBALANCE_IN_PROGRESS", 0, "The group is rebalancing; the member must rejoin."),
    (28, "INVALID_COMMIT_OFFSET_SIZE", 0, "The committed offset data size is invalid."),
    (29, "TOPIC_AUTHORIZATION_FAILED", 0, "Not authorized to access the topic."),
    (30, "GROUP_AUTHORIZATION_FAILED", 0, "Not authorized to access the group."),
    (31, "CLUSTER_AUTHORIZATION_FAILED", 0, "Not authorized for this cluster operation."),
    (32, "INVALID_TIMESTAMP", 0, "A record timestamp is outside the accepted range."),
    (33, "UNSUPPORTED_SASL_MECHANISM", 0, "The broker does not support this SASL mechanism."),
    (34, "ILLEGAL_SASL_STATE", 0, "The request is not valid in the current SASL state."),
    (35, "UNSUPPORTED_VERSION", 0, "The broker does not support this API version."),
    (36, "TOPIC_ALREADY_EXISTS", 0, "A topic with this name already exists."),
    (37, "INVALID_PARTITIONS", 0, "The number of partitions is invalid."),
    (38, "INVALID_REPLICATION_FACTOR", 0, "The replication factor is invalid."),
    (39, "INVALID_REPLICA_ASSIGNMENT", 0, "The replica assignment is invalid."),
    (40, "INVALID_CONFIG", 0, "The configuration is invalid."),
    (41, "NOT_CONTROLLER", _R, "This broker is not the active controller."),
    (42, "INVALID_REQUEST", 0, "The request is malformed or not valid for this broker; see the broker logs."),
    (43, "UNSUPPORTED_FOR_MESSAGE_FORMAT", 0, "The broker's message format does not support this request."),
    (44, "POLICY_VIOLATION", 0, "The request violates a configured policy."),
    (45, "OUT_OF_ORDER_SEQUENCE_NUMBER", 0, "The broker received an out-of-order sequence number."),
    (46, "DUPLICATE_SEQUENCE_NUMBER", 0, "The broker received a duplicate sequence number."),
    (47, "INVALID_PRODUCER_EPOCH", 0, "The producer epoch is older than the broker's."),
    (48, "INVALID_TXN_STATE", 0, "The transactional operation is invalid in the current state."),
    (49, "INVALID_PRODUCER_ID_MAPPING", 0, "The producer id is not assigned to this transactional id."),
    (50, "INVALID_TRANSACTION_TIMEOUT", 0, "The transaction timeout exceeds transaction.max.timeout.ms."),
    (51, "CONCURRENT_TRANSACTIONS", 0, "Another operation on the same transaction is in progress."),
    (52, "TRANSACTION_COORDINATOR_FENCED", 0, "The transaction coordinator is no longer current for this producer."),
    (53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", 0, "Not authorized for this transactional id."),
    (54, "SECURITY_DISABLED", 0, "Security features are disabled."),
    (55, "OPERATION_NOT_ATTEMPTED", 0, "The broker did not attempt this operation (another in the batch failed)."),
    (56, "KAFKA_STORAGE_ERROR", _R | _M, "A disk error on the broker while accessing the log."),
    (57, "LOG_DIR_NOT_FOUND", 0, "The log directory is not in the broker's configuration."),
    (58, "SASL_AUTHENTICATION_FAILED", 0, "SASL authentication failed."),
    (59, "UNKNOWN_PRODUCER_ID", 0, "The broker has no state for this producer id (its records may have expired)."),
    (60, "REASSIGNMENT_IN_PROGRESS", 0, "A partition reassignment is in progress."),
    (61, "DELEGATION_TOKEN_AUTH_DISABLED", 0, "Delegation tokens are not enabled."),
    (62, "DELEGATION_TOKEN_NOT_FOUND", 0, "The delegation token was not found."),
    (63, "DELEGATION_TOKEN_OWNER_MISMATCH", 0, "The principal is not the token's owner or renewer."),
    (64, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", 0, "Delegation token requests are not allowed on this channel."),
    (65, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", 0, "Not authorized for this delegation token."),
    (66, "DELEGATION_TOKEN_EXPIRED", 0, "The delegation token has expired."),
    (67, "INVALID_PRINCIPAL_TYPE", 0, "The principal type is not supported."),
    (68, "NON_EMPTY_GROUP", 0, "The group is not empty."),
    (69, "GROUP_ID_NOT_FOUND", 0, "The group id does not exist."),
    (70, "FETCH_SESSION_ID_NOT_FOUND", _R, "The fetch session id was not found."),
    (71, "INVALID_FETCH_SESSION_EPOCH", _R, "The fetch session epoch is invalid."),
    (72, "LISTENER_NOT_FOUND", _R | _M, "The leader has no listener matching the one the metadata came from."),
    (73, "TOPIC_DELETION_DISABLED", 0, "Topic deletion is disabled."),
    (74, "FENCED_LEADER_EPOCH", _R | _M, "The request's leader epoch is older than the broker's."),
    (75, "UNKNOWN_LEADER_EPOCH", _R | _M, "The request's leader epoch is newer than the broker's."),
    (76, "UNSUPPORTED_COMPRESSION_TYPE", 0, "The client does not support the partition's compression type."),
    (77, "STALE_BROKER_EPOCH", 0, "The broker epoch has changed."),
    (78, "OFFSET_NOT_AVAILABLE", _R, "The leader's high watermark has not caught up after an election."),
    (79, "MEMBER_ID_REQUIRED", 0, "The member needs a member id before joining the group."),
    (80, "PREFERRED_LEADER_NOT_AVAILABLE", _R | _M, "The preferred leader is not available."),
    (81, "GROUP_MAX_SIZE_REACHED", 0, "The group has reached its maximum size."),
    (82, "FENCED_INSTANCE_ID", 0, "Another member registered with this group.instance.id."),
    (83, "ELIGIBLE_LEADERS_NOT_AVAILABLE", _R | _M, "No eligible leaders are available for the partition."),
    (84, "ELECTION_NOT_NEEDED", _R | _M, "A leader election is not needed for the partition."),
    (85, "NO_REASSIGNMENT_IN_PROGRESS", 0, "No partition reassignment is in progress."),
    (86, "GROUP_SUBSCRIBED_TO_TOPIC", 0, "The group is subscribed to the topic whose offsets would be deleted."),
    (87, "INVALID_RECORD", 0, "A record failed the broker's validation."),
    (88, "UNSTABLE_OFFSET_COMMIT", _R, "Unstable offsets must be cleared first."),
    (89, "THROTTLING_QUOTA_EXCEEDED", _R, "The throttling quota was exceeded."),
    (90, "PRODUCER_FENCED", 0, "A newer producer with the same transactional id fenced this one."),
    (91, "RESOURCE_NOT_FOUND", 0, "The request refers to a resource that does not exist."),
    (92, "DUPLICATE_RESOURCE", 0, "The request refers to the same resource twice."),
    (93, "UNACCEPTABLE_CREDENTIAL", 0, "The credential does not meet the acceptability criteria."),
    (94, "INCONSISTENT_VOTER_SET", 0, "The sender or recipient is not one of the expected voters."),
    (95, "INVALID_UPDATE_VERSION", 0, "The update version is invalid."),
    (96, "FEATURE_UPDATE_FAILED", 0, "Finalized features could not be updated."),
    (97, "PRINCIPAL_DESERIALIZATION_FAILURE", 0, "A forwarded request's principal could not be deserialized."),
    (98, "SNAPSHOT_NOT_FOUND", 0, "The snapshot was not found."),
    (99, "POSITION_OUT_OF_RANGE", 0, "The position is outside the snapshot."),
    (100, "UNKNOWN_TOPIC_ID", _R | _M, "This server does not host this topic id."),
    (101, "DUPLICATE_BROKER_REGISTRATION", 0, "This broker id is already registered."),
    (102, "BROKER_ID_NOT_REGISTERED", 0, "This broker id is not registered."),
    (103, "INCONSISTENT_TOPIC_ID", _R | _M, "The log's topic id does not match the request's."),
    (104, "INCONSISTENT_CLUSTER_ID", 0, "The cluster id does not match the server's."),
    (105, "TRANSACTIONAL_ID_NOT_FOUND", 0, "The transactional id was not found."),
    (106, "FETCH_SESSION_TOPIC_ID_ERROR", _R, "The fetch session used topic ids inconsistently."),
    (107, "INELIGIBLE_REPLICA", 0, "The new ISR contains an ineligible replica."),
    (108, "NEW_LEADER_ELECTED", 0, "The partition state was updated but the leader changed."),
    (109, "OFFSET_MOVED_TO_TIERED_STORAGE", 0, "The offset has moved to tiered storage."),
    (110, "FENCED_MEMBER_EPOCH", 0, "The member epoch is fenced; the member must rejoin."),
    (111, "UNRELEASED_INSTANCE_ID", 0, "The instance id is still used by another member."),
    (112, "UNSUPPORTED_ASSIGNOR", 0, "The group does not support this assignor or version."),
    (113, "STALE_MEMBER_EPOCH", 0, "The member epoch is stale."),
    (114, "MISMATCHED_ENDPOINT_TYPE", 0, "The request was sent to the wrong type of endpoint."),
    (115, "UNSUPPORTED_ENDPOINT_TYPE", 0, "This endpoint type is not supported yet."),
    (116, "UNKNOWN_CONTROLLER_ID", 0, "This controller id is not known."),
    (117, "UNKNOWN_SUBSCRIPTION_ID", 0, "The telemetry subscription id is invalid or outdated."),
    (118, "TELEMETRY_TOO_LARGE", 0, "The telemetry push is larger than the broker accepts."),
    (119, "INVALID_REGISTRATION", 0, "The controller considers this broker registration invalid."),
    (120, "TRANSACTION_ABORTABLE", 0, "The transaction failed; abort it to keep using this transactional id."),
    (121, "INVALID_RECORD_STATE", 0, "The record state is invalid for this acknowledgement."),
    (122, "SHARE_SESSION_NOT_FOUND", _R, "The share session was not found."),
    (123, "INVALID_SHARE_SESSION_EPOCH", _R, "The share session epoch is invalid."),
    (124, "FENCED_STATE_EPOCH", 0, "The share-group state epoch does not match."),
    (125, "INVALID_VOTER_KEY", 0, "The voter key does not match the replica's."),
    (126, "DUPLICATE_VOTER", 0, "The voter is already in the voter set."),
    (127, "VOTER_NOT_FOUND", 0, "The voter is not in the voter set."),
    (128, "INVALID_REGULAR_EXPRESSION", 0, "The regular expression is invalid."),
    (129, "REBOOTSTRAP_REQUIRED", 0, "Client metadata is stale; the client must rebootstrap."),
    (130, "STREAMS_INVALID_TOPOLOGY", 0, "The streams topology is invalid."),
    (131, "STREAMS_INVALID_TOPOLOGY_EPOCH", 0, "The streams topology epoch is invalid."),
    (132, "STREAMS_TOPOLOGY_FENCED", 0, "The streams topology epoch is outdated."),
    (133, "SHARE_SESSION_LIMIT_REACHED", _R, "The limit of share sessions has been reached."),
)
# fmt: on

#: Every known code, keyed by its number.
ERROR_CODES: dict[int, ErrorCode] = {
    code: ErrorCode(code, name, bool(flags & (_R | _M)), bool(flags & _M), message)
    for code, name, flags, message in _TABLE
}


def error_info(code: int) -> ErrorCode:
    """The entry for ``code``; an unknown code gets a synthetic non-retriable entry."""
    info = ERROR_CODES.get(code)
    if info is None:
        return ErrorCode(
            code,
            f"UNKNOWN_ERROR_CODE_{code}",
            False,
            False,
            f"Error code {code} is not known to this version of grete.",
        )
    return info
