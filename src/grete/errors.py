"""The exception hierarchy of grete, rooted at :class:`KafkaError`.

Each layer raises its own kind of error and the layer above translates it at
the boundary (as httpcore does): the protocol core raises :class:`ProtocolError`
for bytes it cannot trust, connections raise :class:`KafkaConnectionError` and
:class:`KafkaTimeoutError`, and brokers' error codes become subclasses of
:class:`BrokerResponseError` (one class per code, looked up through
:func:`error_for_code`).
"""

from __future__ import annotations


class KafkaError(Exception):
    """Root of every error grete raises on purpose."""

    #: True when trying the same operation again may succeed.
    retriable: bool = False


class ProtocolError(KafkaError):
    """Bytes from the network (or handed to a decoder) that break the Kafka protocol:
    truncated data, impossible lengths, over-long varints, bad CRCs, unexpected
    correlation ids."""


class ConfigurationError(KafkaError, ValueError):
    """An argument or a combination of arguments that cannot work."""


class KafkaConnectionError(KafkaError):
    """A broker could not be reached, or its connection broke."""

    retriable = True


class ClientClosedError(KafkaConnectionError):
    """The client was closed, or was made by the parent of this forked process:
    nothing can go through it, now or after a retry."""

    retriable = False


class StillConnecting(KafkaConnectionError):
    """A broker's connection handshake is still running; try again shortly.
    (Raised only where the caller asked not to wait for it.)"""


class KafkaTimeoutError(KafkaError, TimeoutError):
    """A bounded wait ran out."""

    retriable = True


class UnsupportedCodecError(KafkaError):
    """A compression codec whose library is not installed; the message names the extra."""


class CorruptRecordError(ProtocolError):
    """A record batch whose CRC-32C does not match its contents."""


class AuthenticationError(KafkaError):
    """The broker refused our credentials (SASL or TLS)."""


class BrokerResponseError(KafkaError):
    """A broker answered with a non-zero error code.

    Every known code has its own subclass (``NotLeaderOrFollower``,
    ``MessageTooLarge``, ...); :func:`error_for_code` builds the right one. The class
    attributes mirror :mod:`grete.protocol.errors`: ``retriable`` says the same
    request may succeed later, ``invalid_metadata`` that the client's metadata
    (leaders, topics) is stale and should be refreshed before retrying.
    """

    code: int = -1
    name: str = "UNKNOWN_SERVER_ERROR"
    retriable: bool = False
    invalid_metadata: bool = False

    def __init__(self, message: str | None = None, *, code: int | None = None) -> None:
        if code is not None and code != self.code:
            # An instance standing in for a code this version does not know.
            from grete.protocol.errors import error_info

            info = error_info(code)
            self.code = info.code
            self.name = info.name
            self.retriable = info.retriable
            self.invalid_metadata = info.invalid_metadata
        #: The broker's own error message when the response carried one.
        self.broker_message = message
        super().__init__(message)

    def __str__(self) -> str:
        # Imported here because grete.protocol imports this module.
        from grete.protocol.errors import error_info

        detail = self.broker_message or error_info(self.code).message
        return f"{self.name} (error code {self.code}): {detail}"


def error_for_code(code: int, message: str | None = None) -> BrokerResponseError:
    """The exception for a broker error ``code`` (never fails, even for unknown codes).

    ``message`` is the broker's error message when the response carried one.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        return BrokerResponseError(message, code=code)
    return cls(message)


# One class per Kafka error code (generated from grete.protocol.errors, then kept
# here explicitly so that type checkers and readers see every name).


class UnknownServerError(BrokerResponseError):
    """The server hit an unexpected error handling the request."""

    code = -1
    name = "UNKNOWN_SERVER_ERROR"


class OffsetOutOfRange(BrokerResponseError):
    """The offset is outside the range the server keeps."""

    code = 1
    name = "OFFSET_OUT_OF_RANGE"


class CorruptMessage(BrokerResponseError):
    """A record failed its CRC check, is too large, or is otherwise corrupt."""

    code = 2
    name = "CORRUPT_MESSAGE"
    retriable = True


class UnknownTopicOrPartition(BrokerResponseError):
    """This server does not host this topic-partition."""

    code = 3
    name = "UNKNOWN_TOPIC_OR_PARTITION"
    retriable = True
    invalid_metadata = True


class InvalidFetchSize(BrokerResponseError):
    """The requested fetch size is invalid."""

    code = 4
    name = "INVALID_FETCH_SIZE"


class LeaderNotAvailable(BrokerResponseError):
    """The partition has no leader: an election is in progress."""

    code = 5
    name = "LEADER_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class NotLeaderOrFollower(BrokerResponseError):
    """This broker is not the leader (or not a replica) of the partition."""

    code = 6
    name = "NOT_LEADER_OR_FOLLOWER"
    retriable = True
    invalid_metadata = True


class RequestTimedOut(BrokerResponseError):
    """The request timed out on the broker."""

    code = 7
    name = "REQUEST_TIMED_OUT"
    retriable = True


class BrokerNotAvailable(BrokerResponseError):
    """The broker is not available."""

    code = 8
    name = "BROKER_NOT_AVAILABLE"


class ReplicaNotAvailable(BrokerResponseError):
    """The replica is not available for this topic-partition."""

    code = 9
    name = "REPLICA_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class MessageTooLarge(BrokerResponseError):
    """A record batch is larger than the broker accepts."""

    code = 10
    name = "MESSAGE_TOO_LARGE"


class StaleControllerEpoch(BrokerResponseError):
    """The controller moved to another broker."""

    code = 11
    name = "STALE_CONTROLLER_EPOCH"


class OffsetMetadataTooLarge(BrokerResponseError):
    """The offset commit metadata is too large."""

    code = 12
    name = "OFFSET_METADATA_TOO_LARGE"


class NetworkException(BrokerResponseError):
    """The server disconnected before sending a response."""

    code = 13
    name = "NETWORK_EXCEPTION"
    retriable = True
    invalid_metadata = True


class CoordinatorLoadInProgress(BrokerResponseError):
    """The coordinator is still loading its state."""

    code = 14
    name = "COORDINATOR_LOAD_IN_PROGRESS"
    retriable = True


class CoordinatorNotAvailable(BrokerResponseError):
    """The coordinator is not available."""

    code = 15
    name = "COORDINATOR_NOT_AVAILABLE"
    retriable = True


class NotCoordinator(BrokerResponseError):
    """This broker is not the right coordinator."""

    code = 16
    name = "NOT_COORDINATOR"
    retriable = True


class InvalidTopicException(BrokerResponseError):
    """The topic name is invalid for this operation."""

    code = 17
    name = "INVALID_TOPIC_EXCEPTION"


class RecordListTooLarge(BrokerResponseError):
    """A record batch is larger than the broker's segment size."""

    code = 18
    name = "RECORD_LIST_TOO_LARGE"


class NotEnoughReplicas(BrokerResponseError):
    """Fewer in-sync replicas than required: records were rejected."""

    code = 19
    name = "NOT_ENOUGH_REPLICAS"
    retriable = True


class NotEnoughReplicasAfterAppend(BrokerResponseError):
    """Records were written, but to fewer in-sync replicas than required."""

    code = 20
    name = "NOT_ENOUGH_REPLICAS_AFTER_APPEND"
    retriable = True


class InvalidRequiredAcks(BrokerResponseError):
    """The produce request's acks value is invalid."""

    code = 21
    name = "INVALID_REQUIRED_ACKS"


class IllegalGeneration(BrokerResponseError):
    """The group generation id is not valid."""

    code = 22
    name = "ILLEGAL_GENERATION"


class InconsistentGroupProtocol(BrokerResponseError):
    """The member's group protocols are incompatible with the group's."""

    code = 23
    name = "INCONSISTENT_GROUP_PROTOCOL"


class InvalidGroupId(BrokerResponseError):
    """The group id is invalid."""

    code = 24
    name = "INVALID_GROUP_ID"


class UnknownMemberId(BrokerResponseError):
    """The coordinator does not know this member."""

    code = 25
    name = "UNKNOWN_MEMBER_ID"


class InvalidSessionTimeout(BrokerResponseError):
    """The session timeout is outside the broker's allowed range."""

    code = 26
    name = "INVALID_SESSION_TIMEOUT"


class RebalanceInProgress(BrokerResponseError):
    """The group is rebalancing; the member must rejoin."""

    code = 27
    name = "REBALANCE_IN_PROGRESS"


class InvalidCommitOffsetSize(BrokerResponseError):
    """The committed offset data size is invalid."""

    code = 28
    name = "INVALID_COMMIT_OFFSET_SIZE"


class TopicAuthorizationFailed(BrokerResponseError):
    """Not authorized to access the topic."""

    code = 29
    name = "TOPIC_AUTHORIZATION_FAILED"


class GroupAuthorizationFailed(BrokerResponseError):
    """Not authorized to access the group."""

    code = 30
    name = "GROUP_AUTHORIZATION_FAILED"


class ClusterAuthorizationFailed(BrokerResponseError):
    """Not authorized for this cluster operation."""

    code = 31
    name = "CLUSTER_AUTHORIZATION_FAILED"


class InvalidTimestamp(BrokerResponseError):
    """A record timestamp is outside the accepted range."""

    code = 32
    name = "INVALID_TIMESTAMP"


class UnsupportedSaslMechanism(BrokerResponseError):
    """The broker does not support this SASL mechanism."""

    code = 33
    name = "UNSUPPORTED_SASL_MECHANISM"


class IllegalSaslState(BrokerResponseError):
    """The request is not valid in the current SASL state."""

    code = 34
    name = "ILLEGAL_SASL_STATE"


class UnsupportedVersion(BrokerResponseError):
    """The broker does not support this API version."""

    code = 35
    name = "UNSUPPORTED_VERSION"


class TopicAlreadyExists(BrokerResponseError):
    """A topic with this name already exists."""

    code = 36
    name = "TOPIC_ALREADY_EXISTS"


class InvalidPartitions(BrokerResponseError):
    """The number of partitions is invalid."""

    code = 37
    name = "INVALID_PARTITIONS"


class InvalidReplicationFactor(BrokerResponseError):
    """The replication factor is invalid."""

    code = 38
    name = "INVALID_REPLICATION_FACTOR"


class InvalidReplicaAssignment(BrokerResponseError):
    """The replica assignment is invalid."""

    code = 39
    name = "INVALID_REPLICA_ASSIGNMENT"


class InvalidConfig(BrokerResponseError):
    """The configuration is invalid."""

    code = 40
    name = "INVALID_CONFIG"


class NotController(BrokerResponseError):
    """This broker is not the active controller."""

    code = 41
    name = "NOT_CONTROLLER"
    retriable = True


class InvalidRequest(BrokerResponseError):
    """The request is malformed or not valid for this broker; see the broker logs."""

    code = 42
    name = "INVALID_REQUEST"


class UnsupportedForMessageFormat(BrokerResponseError):
    """The broker's message format does not support this request."""

    code = 43
    name = "UNSUPPORTED_FOR_MESSAGE_FORMAT"


class PolicyViolation(BrokerResponseError):
    """The request violates a configured policy."""

    code = 44
    name = "POLICY_VIOLATION"


class OutOfOrderSequenceNumber(BrokerResponseError):
    """The broker received an out-of-order sequence number."""

    code = 45
    name = "OUT_OF_ORDER_SEQUENCE_NUMBER"


class DuplicateSequenceNumber(BrokerResponseError):
    """The broker received a duplicate sequence number."""

    code = 46
    name = "DUPLICATE_SEQUENCE_NUMBER"


class InvalidProducerEpoch(BrokerResponseError):
    """The producer epoch is older than the broker's."""

    code = 47
    name = "INVALID_PRODUCER_EPOCH"


class InvalidTxnState(BrokerResponseError):
    """The transactional operation is invalid in the current state."""

    code = 48
    name = "INVALID_TXN_STATE"


class InvalidProducerIdMapping(BrokerResponseError):
    """The producer id is not assigned to this transactional id."""

    code = 49
    name = "INVALID_PRODUCER_ID_MAPPING"


class InvalidTransactionTimeout(BrokerResponseError):
    """The transaction timeout exceeds transaction.max.timeout.ms."""

    code = 50
    name = "INVALID_TRANSACTION_TIMEOUT"


class ConcurrentTransactions(BrokerResponseError):
    """Another operation on the same transaction is in progress."""

    code = 51
    name = "CONCURRENT_TRANSACTIONS"


class TransactionCoordinatorFenced(BrokerResponseError):
    """The transaction coordinator is no longer current for this producer."""

    code = 52
    name = "TRANSACTION_COORDINATOR_FENCED"


class TransactionalIdAuthorizationFailed(BrokerResponseError):
    """Not authorized for this transactional id."""

    code = 53
    name = "TRANSACTIONAL_ID_AUTHORIZATION_FAILED"


class SecurityDisabled(BrokerResponseError):
    """Security features are disabled."""

    code = 54
    name = "SECURITY_DISABLED"


class OperationNotAttempted(BrokerResponseError):
    """The broker did not attempt this operation (another in the batch failed)."""

    code = 55
    name = "OPERATION_NOT_ATTEMPTED"


class KafkaStorageError(BrokerResponseError):
    """A disk error on the broker while accessing the log."""

    code = 56
    name = "KAFKA_STORAGE_ERROR"
    retriable = True
    invalid_metadata = True


class LogDirNotFound(BrokerResponseError):
    """The log directory is not in the broker's configuration."""

    code = 57
    name = "LOG_DIR_NOT_FOUND"


class SaslAuthenticationFailed(BrokerResponseError, AuthenticationError):
    """SASL authentication failed."""

    code = 58
    name = "SASL_AUTHENTICATION_FAILED"


class UnknownProducerId(BrokerResponseError):
    """The broker has no state for this producer id (its records may have expired)."""

    code = 59
    name = "UNKNOWN_PRODUCER_ID"


class ReassignmentInProgress(BrokerResponseError):
    """A partition reassignment is in progress."""

    code = 60
    name = "REASSIGNMENT_IN_PROGRESS"


class DelegationTokenAuthDisabled(BrokerResponseError):
    """Delegation tokens are not enabled."""

    code = 61
    name = "DELEGATION_TOKEN_AUTH_DISABLED"


class DelegationTokenNotFound(BrokerResponseError):
    """The delegation token was not found."""

    code = 62
    name = "DELEGATION_TOKEN_NOT_FOUND"


class DelegationTokenOwnerMismatch(BrokerResponseError):
    """The principal is not the token's owner or renewer."""

    code = 63
    name = "DELEGATION_TOKEN_OWNER_MISMATCH"


class DelegationTokenRequestNotAllowed(BrokerResponseError):
    """Delegation token requests are not allowed on this channel."""

    code = 64
    name = "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED"


class DelegationTokenAuthorizationFailed(BrokerResponseError):
    """Not authorized for this delegation token."""

    code = 65
    name = "DELEGATION_TOKEN_AUTHORIZATION_FAILED"


class DelegationTokenExpired(BrokerResponseError):
    """The delegation token has expired."""

    code = 66
    name = "DELEGATION_TOKEN_EXPIRED"


class InvalidPrincipalType(BrokerResponseError):
    """The principal type is not supported."""

    code = 67
    name = "INVALID_PRINCIPAL_TYPE"


class NonEmptyGroup(BrokerResponseError):
    """The group is not empty."""

    code = 68
    name = "NON_EMPTY_GROUP"


class GroupIdNotFound(BrokerResponseError):
    """The group id does not exist."""

    code = 69
    name = "GROUP_ID_NOT_FOUND"


class FetchSessionIdNotFound(BrokerResponseError):
    """The fetch session id was not found."""

    code = 70
    name = "FETCH_SESSION_ID_NOT_FOUND"
    retriable = True


class InvalidFetchSessionEpoch(BrokerResponseError):
    """The fetch session epoch is invalid."""

    code = 71
    name = "INVALID_FETCH_SESSION_EPOCH"
    retriable = True


class ListenerNotFound(BrokerResponseError):
    """The leader has no listener matching the one the metadata came from."""

    code = 72
    name = "LISTENER_NOT_FOUND"
    retriable = True
    invalid_metadata = True


class TopicDeletionDisabled(BrokerResponseError):
    """Topic deletion is disabled."""

    code = 73
    name = "TOPIC_DELETION_DISABLED"


class FencedLeaderEpoch(BrokerResponseError):
    """The request's leader epoch is older than the broker's."""

    code = 74
    name = "FENCED_LEADER_EPOCH"
    retriable = True
    invalid_metadata = True


class UnknownLeaderEpoch(BrokerResponseError):
    """The request's leader epoch is newer than the broker's."""

    code = 75
    name = "UNKNOWN_LEADER_EPOCH"
    retriable = True
    invalid_metadata = True


class UnsupportedCompressionType(BrokerResponseError):
    """The client does not support the partition's compression type."""

    code = 76
    name = "UNSUPPORTED_COMPRESSION_TYPE"


class StaleBrokerEpoch(BrokerResponseError):
    """The broker epoch has changed."""

    code = 77
    name = "STALE_BROKER_EPOCH"


class OffsetNotAvailable(BrokerResponseError):
    """The leader's high watermark has not caught up after an election."""

    code = 78
    name = "OFFSET_NOT_AVAILABLE"
    retriable = True


class MemberIdRequired(BrokerResponseError):
    """The member needs a member id before joining the group."""

    code = 79
    name = "MEMBER_ID_REQUIRED"


class PreferredLeaderNotAvailable(BrokerResponseError):
    """The preferred leader is not available."""

    code = 80
    name = "PREFERRED_LEADER_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class GroupMaxSizeReached(BrokerResponseError):
    """The group has reached its maximum size."""

    code = 81
    name = "GROUP_MAX_SIZE_REACHED"


class FencedInstanceId(BrokerResponseError):
    """Another member registered with this group.instance.id."""

    code = 82
    name = "FENCED_INSTANCE_ID"


class EligibleLeadersNotAvailable(BrokerResponseError):
    """No eligible leaders are available for the partition."""

    code = 83
    name = "ELIGIBLE_LEADERS_NOT_AVAILABLE"
    retriable = True
    invalid_metadata = True


class ElectionNotNeeded(BrokerResponseError):
    """A leader election is not needed for the partition."""

    code = 84
    name = "ELECTION_NOT_NEEDED"
    retriable = True
    invalid_metadata = True


class NoReassignmentInProgress(BrokerResponseError):
    """No partition reassignment is in progress."""

    code = 85
    name = "NO_REASSIGNMENT_IN_PROGRESS"


class GroupSubscribedToTopic(BrokerResponseError):
    """The group is subscribed to the topic whose offsets would be deleted."""

    code = 86
    name = "GROUP_SUBSCRIBED_TO_TOPIC"


class InvalidRecord(BrokerResponseError):
    """A record failed the broker's validation."""

    code = 87
    name = "INVALID_RECORD"


class UnstableOffsetCommit(BrokerResponseError):
    """Unstable offsets must be cleared first."""

    code = 88
    name = "UNSTABLE_OFFSET_COMMIT"
    retriable = True


class ThrottlingQuotaExceeded(BrokerResponseError):
    """The throttling quota was exceeded."""

    code = 89
    name = "THROTTLING_QUOTA_EXCEEDED"
    retriable = True


class ProducerFenced(BrokerResponseError):
    """A newer producer with the same transactional id fenced this one."""

    code = 90
    name = "PRODUCER_FENCED"


class ResourceNotFound(BrokerResponseError):
    """The request refers to a resource that does not exist."""

    code = 91
    name = "RESOURCE_NOT_FOUND"


class DuplicateResource(BrokerResponseError):
    """The request refers to the same resource twice."""

    code = 92
    name = "DUPLICATE_RESOURCE"


class UnacceptableCredential(BrokerResponseError):
    """The credential does not meet the acceptability criteria."""

    code = 93
    name = "UNACCEPTABLE_CREDENTIAL"


class InconsistentVoterSet(BrokerResponseError):
    """The sender or recipient is not one of the expected voters."""

    code = 94
    name = "INCONSISTENT_VOTER_SET"


class InvalidUpdateVersion(BrokerResponseError):
    """The update version is invalid."""

    code = 95
    name = "INVALID_UPDATE_VERSION"


class FeatureUpdateFailed(BrokerResponseError):
    """Finalized features could not be updated."""

    code = 96
    name = "FEATURE_UPDATE_FAILED"


class PrincipalDeserializationFailure(BrokerResponseError):
    """A forwarded request's principal could not be deserialized."""

    code = 97
    name = "PRINCIPAL_DESERIALIZATION_FAILURE"


class SnapshotNotFound(BrokerResponseError):
    """The snapshot was not found."""

    code = 98
    name = "SNAPSHOT_NOT_FOUND"


class PositionOutOfRange(BrokerResponseError):
    """The position is outside the snapshot."""

    code = 99
    name = "POSITION_OUT_OF_RANGE"


class UnknownTopicId(BrokerResponseError):
    """This server does not host this topic id."""

    code = 100
    name = "UNKNOWN_TOPIC_ID"
    retriable = True
    invalid_metadata = True


class DuplicateBrokerRegistration(BrokerResponseError):
    """This broker id is already registered."""

    code = 101
    name = "DUPLICATE_BROKER_REGISTRATION"


class BrokerIdNotRegistered(BrokerResponseError):
    """This broker id is not registered."""

    code = 102
    name = "BROKER_ID_NOT_REGISTERED"


class InconsistentTopicId(BrokerResponseError):
    """The log's topic id does not match the request's."""

    code = 103
    name = "INCONSISTENT_TOPIC_ID"
    retriable = True
    invalid_metadata = True


class InconsistentClusterId(BrokerResponseError):
    """The cluster id does not match the server's."""

    code = 104
    name = "INCONSISTENT_CLUSTER_ID"


class TransactionalIdNotFound(BrokerResponseError):
    """The transactional id was not found."""

    code = 105
    name = "TRANSACTIONAL_ID_NOT_FOUND"


class FetchSessionTopicIdError(BrokerResponseError):
    """The fetch session used topic ids inconsistently."""

    code = 106
    name = "FETCH_SESSION_TOPIC_ID_ERROR"
    retriable = True


class IneligibleReplica(BrokerResponseError):
    """The new ISR contains an ineligible replica."""

    code = 107
    name = "INELIGIBLE_REPLICA"


class NewLeaderElected(BrokerResponseError):
    """The partition state was updated but the leader changed."""

    code = 108
    name = "NEW_LEADER_ELECTED"


class OffsetMovedToTieredStorage(BrokerResponseError):
    """The offset has moved to tiered storage."""

    code = 109
    name = "OFFSET_MOVED_TO_TIERED_STORAGE"


class FencedMemberEpoch(BrokerResponseError):
    """The member epoch is fenced; the member must rejoin."""

    code = 110
    name = "FENCED_MEMBER_EPOCH"


class UnreleasedInstanceId(BrokerResponseError):
    """The instance id is still used by another member."""

    code = 111
    name = "UNRELEASED_INSTANCE_ID"


class UnsupportedAssignor(BrokerResponseError):
    """The group does not support this assignor or version."""

    code = 112
    name = "UNSUPPORTED_ASSIGNOR"


class StaleMemberEpoch(BrokerResponseError):
    """The member epoch is stale."""

    code = 113
    name = "STALE_MEMBER_EPOCH"


class MismatchedEndpointType(BrokerResponseError):
    """The request was sent to the wrong type of endpoint."""

    code = 114
    name = "MISMATCHED_ENDPOINT_TYPE"


class UnsupportedEndpointType(BrokerResponseError):
    """This endpoint type is not supported yet."""

    code = 115
    name = "UNSUPPORTED_ENDPOINT_TYPE"


class UnknownControllerId(BrokerResponseError):
    """This controller id is not known."""

    code = 116
    name = "UNKNOWN_CONTROLLER_ID"


class UnknownSubscriptionId(BrokerResponseError):
    """The telemetry subscription id is invalid or outdated."""

    code = 117
    name = "UNKNOWN_SUBSCRIPTION_ID"


class TelemetryTooLarge(BrokerResponseError):
    """The telemetry push is larger than the broker accepts."""

    code = 118
    name = "TELEMETRY_TOO_LARGE"


class InvalidRegistration(BrokerResponseError):
    """The controller considers this broker registration invalid."""

    code = 119
    name = "INVALID_REGISTRATION"


class TransactionAbortable(BrokerResponseError):
    """The transaction failed; abort it to keep using this transactional id."""

    code = 120
    name = "TRANSACTION_ABORTABLE"


class InvalidRecordState(BrokerResponseError):
    """The record state is invalid for this acknowledgement."""

    code = 121
    name = "INVALID_RECORD_STATE"


class ShareSessionNotFound(BrokerResponseError):
    """The share session was not found."""

    code = 122
    name = "SHARE_SESSION_NOT_FOUND"
    retriable = True


class InvalidShareSessionEpoch(BrokerResponseError):
    """The share session epoch is invalid."""

    code = 123
    name = "INVALID_SHARE_SESSION_EPOCH"
    retriable = True


class FencedStateEpoch(BrokerResponseError):
    """The share-group state epoch does not match."""

    code = 124
    name = "FENCED_STATE_EPOCH"


class InvalidVoterKey(BrokerResponseError):
    """The voter key does not match the replica's."""

    code = 125
    name = "INVALID_VOTER_KEY"


class DuplicateVoter(BrokerResponseError):
    """The voter is already in the voter set."""

    code = 126
    name = "DUPLICATE_VOTER"


class VoterNotFound(BrokerResponseError):
    """The voter is not in the voter set."""

    code = 127
    name = "VOTER_NOT_FOUND"


class InvalidRegularExpression(BrokerResponseError):
    """The regular expression is invalid."""

    code = 128
    name = "INVALID_REGULAR_EXPRESSION"


class RebootstrapRequired(BrokerResponseError):
    """Client metadata is stale; the client must rebootstrap."""

    code = 129
    name = "REBOOTSTRAP_REQUIRED"


class StreamsInvalidTopology(BrokerResponseError):
    """The streams topology is invalid."""

    code = 130
    name = "STREAMS_INVALID_TOPOLOGY"


class StreamsInvalidTopologyEpoch(BrokerResponseError):
    """The streams topology epoch is invalid."""

    code = 131
    name = "STREAMS_INVALID_TOPOLOGY_EPOCH"


class StreamsTopologyFenced(BrokerResponseError):
    """The streams topology epoch is outdated."""

    code = 132
    name = "STREAMS_TOPOLOGY_FENCED"


class ShareSessionLimitReached(BrokerResponseError):
    """The limit of share sessions has been reached."""

    code = 133
    name = "SHARE_SESSION_LIMIT_REACHED"
    retriable = True


# Names other Python clients (kafka-python, pykafka) and Kafka's older protocol docs use.
NotLeaderForPartition = NotLeaderOrFollower
MessageSizeTooLarge = MessageTooLarge
InvalidTopic = InvalidTopicException
GroupLoadInProgress = CoordinatorLoadInProgress
GroupCoordinatorNotAvailable = CoordinatorNotAvailable
NotCoordinatorForGroup = NotCoordinator
UnknownError = UnknownServerError


def _index_by_code() -> dict[int, type[BrokerResponseError]]:
    found: dict[int, type[BrokerResponseError]] = {}
    pending = list(BrokerResponseError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        found[cls.code] = cls
    return found


_BY_CODE: dict[int, type[BrokerResponseError]] = _index_by_code()
