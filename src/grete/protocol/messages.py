"""The Kafka APIs grete speaks, declared by hand from the protocol guide
(https://kafka.apache.org/protocol) and Kafka's message specs.

Field order, types, version ranges, nullability, tags and defaults follow the
specs exactly; ``tests/unit/protocol/test_schema_vs_kafka_json.py`` compares
every claimed version against the JSON in the kafka-clients jar.  Names are the
JSON's CamelCase names in snake_case.

Where the claimed range is narrower than what the spec defines, the reason is
noted at the constant; fields of unclaimed versions are still declared so that
widening a range is a one-line change.
"""

from __future__ import annotations

from grete.protocol.schema import Api, Field

__all__ = [
    "ADD_OFFSETS_TO_TXN",
    "ADD_PARTITIONS_TO_TXN",
    "ALL_APIS",
    "APIS_BY_KEY",
    "API_VERSIONS",
    "CREATE_TOPICS",
    "DELETE_TOPICS",
    "END_TXN",
    "FIND_COORDINATOR",
    "INIT_PRODUCER_ID",
    "LIST_OFFSETS",
    "METADATA",
    "PRODUCE",
    "SASL_AUTHENTICATE",
    "SASL_HANDSHAKE",
    "TXN_OFFSET_COMMIT",
]

F = Field
_INT32_MIN = -(2**31)

# The declarations below mirror the JSON specs' nesting; the formatter's
# one-argument-per-line layout would triple their length and hide that shape.
# fmt: off

# -- Produce (key 0) ------------------------------------------------------------------
# v13 (KIP-516) addresses topics by id instead of name; grete resolves topics by
# name, so it is declared but not claimed.

PRODUCE = Api(
    0,
    "Produce",
    request_fields=[
        F("transactional_id", "string", "3+", nullable_versions="3+", default=None),
        F("acks", "int16"),
        F("timeout_ms", "int32"),
        F("topic_data", "[]TopicProduceData", fields=[
            F("name", "string", "0-12"),
            F("topic_id", "uuid", "13+"),
            F("partition_data", "[]PartitionProduceData", fields=[
                F("index", "int32"),
                F("records", "records", nullable_versions="0+"),
            ]),
        ]),
    ],
    response_fields=[
        F("responses", "[]TopicProduceResponse", fields=[
            F("name", "string", "0-12"),
            F("topic_id", "uuid", "13+"),
            F("partition_responses", "[]PartitionProduceResponse", fields=[
                F("index", "int32"),
                F("error_code", "int16"),
                F("base_offset", "int64"),
                F("log_append_time_ms", "int64", "2+", default=-1),
                F("log_start_offset", "int64", "5+", default=-1),
                F("record_errors", "[]BatchIndexAndErrorMessage", "8+", fields=[
                    F("batch_index", "int32", "8+"),
                    F("batch_index_error_message", "string", "8+",
                      nullable_versions="8+", default=None),
                ]),
                F("error_message", "string", "8+", nullable_versions="8+", default=None),
                F("current_leader", "LeaderIdAndEpoch", "10+", tag=0, tagged_versions="10+",
                  fields=[
                    F("leader_id", "int32", "10+", default=-1),
                    F("leader_epoch", "int32", "10+", default=-1),
                ]),
            ]),
        ]),
        F("throttle_time_ms", "int32", "1+", default=0),
        F("node_endpoints", "[]NodeEndpoint", "10+", tag=0, tagged_versions="10+", fields=[
            F("node_id", "int32", "10+"),
            F("host", "string", "10+"),
            F("port", "int32", "10+"),
            F("rack", "string", "10+", nullable_versions="10+", default=None),
        ]),
    ],
    valid_versions="3-12",
    flexible_from=9,
)

# -- ListOffsets (key 2) --------------------------------------------------------------

LIST_OFFSETS = Api(
    2,
    "ListOffsets",
    request_fields=[
        F("replica_id", "int32"),
        F("isolation_level", "int8", "2+"),
        F("topics", "[]ListOffsetsTopic", fields=[
            F("name", "string"),
            F("partitions", "[]ListOffsetsPartition", fields=[
                F("partition_index", "int32"),
                F("current_leader_epoch", "int32", "4+", default=-1),
                F("timestamp", "int64"),
            ]),
        ]),
        F("timeout_ms", "int32", "10+"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32", "2+"),
        F("topics", "[]ListOffsetsTopicResponse", fields=[
            F("name", "string"),
            F("partitions", "[]ListOffsetsPartitionResponse", fields=[
                F("partition_index", "int32"),
                F("error_code", "int16"),
                F("timestamp", "int64", "1+", default=-1),
                F("offset", "int64", "1+", default=-1),
                F("leader_epoch", "int32", "4+", default=-1),
            ]),
        ]),
    ],
    valid_versions="1-10",
    flexible_from=6,
)

# -- Metadata (key 3) -----------------------------------------------------------------
# v0 is not claimed: there an empty topic list means "all topics".

METADATA = Api(
    3,
    "Metadata",
    request_fields=[
        F("topics", "[]MetadataRequestTopic", nullable_versions="1+", fields=[
            F("topic_id", "uuid", "10+"),
            F("name", "string", nullable_versions="10+"),
        ]),
        F("allow_auto_topic_creation", "bool", "4+", default=True),
        F("include_cluster_authorized_operations", "bool", "8-10"),
        F("include_topic_authorized_operations", "bool", "8+"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32", "3+"),
        F("brokers", "[]MetadataResponseBroker", fields=[
            F("node_id", "int32"),
            F("host", "string"),
            F("port", "int32"),
            F("rack", "string", "1+", nullable_versions="1+", default=None),
        ]),
        F("cluster_id", "string", "2+", nullable_versions="2+", default=None),
        F("controller_id", "int32", "1+", default=-1),
        F("topics", "[]MetadataResponseTopic", fields=[
            F("error_code", "int16"),
            F("name", "string", nullable_versions="12+"),
            F("topic_id", "uuid", "10+"),
            F("is_internal", "bool", "1+", default=False),
            F("partitions", "[]MetadataResponsePartition", fields=[
                F("error_code", "int16"),
                F("partition_index", "int32"),
                F("leader_id", "int32"),
                F("leader_epoch", "int32", "7+", default=-1),
                F("replica_nodes", "[]int32"),
                F("isr_nodes", "[]int32"),
                F("offline_replicas", "[]int32", "5+"),
            ]),
            F("topic_authorized_operations", "int32", "8+", default=_INT32_MIN),
        ]),
        F("cluster_authorized_operations", "int32", "8-10", default=_INT32_MIN),
        F("error_code", "int16", "13+"),
    ],
    valid_versions="1-13",
    flexible_from=9,
)

# -- FindCoordinator (key 10) ---------------------------------------------------------

FIND_COORDINATOR = Api(
    10,
    "FindCoordinator",
    request_fields=[
        F("key", "string", "0-3"),
        F("key_type", "int8", "1+", default=0),
        F("coordinator_keys", "[]string", "4+"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32", "1+"),
        F("error_code", "int16", "0-3"),
        F("error_message", "string", "1-3", nullable_versions="1-3"),
        F("node_id", "int32", "0-3"),
        F("host", "string", "0-3"),
        F("port", "int32", "0-3"),
        F("coordinators", "[]Coordinator", "4+", fields=[
            F("key", "string", "4+"),
            F("node_id", "int32", "4+"),
            F("host", "string", "4+"),
            F("port", "int32", "4+"),
            F("error_code", "int16", "4+"),
            F("error_message", "string", "4+", nullable_versions="4+"),
        ]),
    ],
    valid_versions="0-6",
    flexible_from=3,
)

# -- SaslHandshake (key 17) -----------------------------------------------------------

SASL_HANDSHAKE = Api(
    17,
    "SaslHandshake",
    request_fields=[F("mechanism", "string")],
    response_fields=[
        F("error_code", "int16"),
        F("mechanisms", "[]string"),
    ],
    valid_versions="0-1",
    flexible_from=None,
)

# -- ApiVersions (key 18) -------------------------------------------------------------

API_VERSIONS = Api(
    18,
    "ApiVersions",
    request_fields=[
        F("client_software_name", "string", "3+"),
        F("client_software_version", "string", "3+"),
    ],
    response_fields=[
        F("error_code", "int16"),
        F("api_keys", "[]ApiVersion", fields=[
            F("api_key", "int16"),
            F("min_version", "int16"),
            F("max_version", "int16"),
        ]),
        F("throttle_time_ms", "int32", "1+"),
        F("supported_features", "[]SupportedFeatureKey", "3+", tag=0, tagged_versions="3+",
          fields=[
            F("name", "string", "3+"),
            F("min_version", "int16", "3+"),
            F("max_version", "int16", "3+"),
        ]),
        F("finalized_features_epoch", "int64", "3+", tag=1, tagged_versions="3+", default=-1),
        F("finalized_features", "[]FinalizedFeatureKey", "3+", tag=2, tagged_versions="3+",
          fields=[
            F("name", "string", "3+"),
            F("max_version_level", "int16", "3+"),
            F("min_version_level", "int16", "3+"),
        ]),
        F("zk_migration_ready", "bool", "3+", tag=3, tagged_versions="3+", default=False),
    ],
    valid_versions="0-4",
    flexible_from=3,
)

# -- CreateTopics (key 19) ------------------------------------------------------------

CREATE_TOPICS = Api(
    19,
    "CreateTopics",
    request_fields=[
        F("topics", "[]CreatableTopic", fields=[
            F("name", "string"),
            F("num_partitions", "int32"),
            F("replication_factor", "int16"),
            F("assignments", "[]CreatableReplicaAssignment", fields=[
                F("partition_index", "int32"),
                F("broker_ids", "[]int32"),
            ]),
            F("configs", "[]CreatableTopicConfig", fields=[
                F("name", "string"),
                F("value", "string", nullable_versions="0+"),
            ]),
        ]),
        F("timeout_ms", "int32", default=60000),
        F("validate_only", "bool", "1+", default=False),
    ],
    response_fields=[
        F("throttle_time_ms", "int32", "2+"),
        F("topics", "[]CreatableTopicResult", fields=[
            F("name", "string"),
            F("topic_id", "uuid", "7+"),
            F("error_code", "int16"),
            F("error_message", "string", "1+", nullable_versions="0+"),
            F("topic_config_error_code", "int16", "5+", tag=0, tagged_versions="5+"),
            F("num_partitions", "int32", "5+", default=-1),
            F("replication_factor", "int16", "5+", default=-1),
            F("configs", "[]CreatableTopicConfigs", "5+", nullable_versions="5+", fields=[
                F("name", "string", "5+"),
                F("value", "string", "5+", nullable_versions="5+"),
                F("read_only", "bool", "5+"),
                F("config_source", "int8", "5+", default=-1),
                F("is_sensitive", "bool", "5+"),
            ]),
        ]),
    ],
    valid_versions="2-7",
    flexible_from=5,
)

# -- DeleteTopics (key 20) ------------------------------------------------------------

DELETE_TOPICS = Api(
    20,
    "DeleteTopics",
    request_fields=[
        F("topics", "[]DeleteTopicState", "6+", fields=[
            F("name", "string", "6+", nullable_versions="6+", default=None),
            F("topic_id", "uuid", "6+"),
        ]),
        F("topic_names", "[]string", "0-5"),
        F("timeout_ms", "int32"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32", "1+"),
        F("responses", "[]DeletableTopicResult", fields=[
            F("name", "string", nullable_versions="6+"),
            F("topic_id", "uuid", "6+"),
            F("error_code", "int16"),
            F("error_message", "string", "5+", nullable_versions="5+", default=None),
        ]),
    ],
    valid_versions="1-6",
    flexible_from=4,
)

# -- InitProducerId (key 22) ----------------------------------------------------------
# v6 (KIP-939, two-phase commit) is marked unstable in Kafka 4.1: not claimed.

INIT_PRODUCER_ID = Api(
    22,
    "InitProducerId",
    request_fields=[
        F("transactional_id", "string", nullable_versions="0+"),
        F("transaction_timeout_ms", "int32"),
        F("producer_id", "int64", "3+", default=-1),
        F("producer_epoch", "int16", "3+", default=-1),
        F("enable2_pc", "bool", "6+", default=False),
        F("keep_prepared_txn", "bool", "6+", default=False),
    ],
    response_fields=[
        F("throttle_time_ms", "int32"),
        F("error_code", "int16"),
        F("producer_id", "int64", default=-1),
        F("producer_epoch", "int16"),
        F("ongoing_txn_producer_id", "int64", "6+", default=-1),
        F("ongoing_txn_producer_epoch", "int16", "6+", default=-1),
    ],
    valid_versions="0-5",
    flexible_from=2,
)

# -- AddPartitionsToTxn (key 24) ------------------------------------------------------
# v4+ batch several transactions and are meant for brokers verifying on behalf of
# producers (KIP-890); clients send v0-v3.

_ADD_PARTITIONS_TO_TXN_TOPIC = [
    F("name", "string"),
    F("partitions", "[]int32"),
]
_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT = [
    F("name", "string"),
    F("results_by_partition", "[]AddPartitionsToTxnPartitionResult", fields=[
        F("partition_index", "int32"),
        F("partition_error_code", "int16"),
    ]),
]

ADD_PARTITIONS_TO_TXN = Api(
    24,
    "AddPartitionsToTxn",
    request_fields=[
        F("transactions", "[]AddPartitionsToTxnTransaction", "4+", fields=[
            F("transactional_id", "string", "4+"),
            F("producer_id", "int64", "4+"),
            F("producer_epoch", "int16", "4+"),
            F("verify_only", "bool", "4+", default=False),
            F("topics", "[]AddPartitionsToTxnTopic", "4+", fields=_ADD_PARTITIONS_TO_TXN_TOPIC),
        ]),
        F("v3_and_below_transactional_id", "string", "0-3"),
        F("v3_and_below_producer_id", "int64", "0-3"),
        F("v3_and_below_producer_epoch", "int16", "0-3"),
        F("v3_and_below_topics", "[]AddPartitionsToTxnTopic", "0-3",
          fields=_ADD_PARTITIONS_TO_TXN_TOPIC),
    ],
    response_fields=[
        F("throttle_time_ms", "int32"),
        F("error_code", "int16", "4+"),
        F("results_by_transaction", "[]AddPartitionsToTxnResult", "4+", fields=[
            F("transactional_id", "string", "4+"),
            F("topic_results", "[]AddPartitionsToTxnTopicResult", "4+",
              fields=_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT),
        ]),
        F("results_by_topic_v3_and_below", "[]AddPartitionsToTxnTopicResult", "0-3",
          fields=_ADD_PARTITIONS_TO_TXN_TOPIC_RESULT),
    ],
    valid_versions="0-3",
    flexible_from=3,
)

# -- AddOffsetsToTxn (key 25) ---------------------------------------------------------

ADD_OFFSETS_TO_TXN = Api(
    25,
    "AddOffsetsToTxn",
    request_fields=[
        F("transactional_id", "string"),
        F("producer_id", "int64"),
        F("producer_epoch", "int16"),
        F("group_id", "string"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32"),
        F("error_code", "int16"),
    ],
    valid_versions="0-4",
    flexible_from=3,
)

# -- EndTxn (key 26) ------------------------------------------------------------------

END_TXN = Api(
    26,
    "EndTxn",
    request_fields=[
        F("transactional_id", "string"),
        F("producer_id", "int64"),
        F("producer_epoch", "int16"),
        F("committed", "bool"),
    ],
    response_fields=[
        F("throttle_time_ms", "int32"),
        F("error_code", "int16"),
        F("producer_id", "int64", "5+", default=-1),
        F("producer_epoch", "int16", "5+", default=-1),
    ],
    valid_versions="0-5",
    flexible_from=3,
)

# -- TxnOffsetCommit (key 28) ---------------------------------------------------------

TXN_OFFSET_COMMIT = Api(
    28,
    "TxnOffsetCommit",
    request_fields=[
        F("transactional_id", "string"),
        F("group_id", "string"),
        F("producer_id", "int64"),
        F("producer_epoch", "int16"),
        F("generation_id", "int32", "3+", default=-1),
        F("member_id", "string", "3+", default=""),
        F("group_instance_id", "string", "3+", nullable_versions="3+", default=None),
        F("topics", "[]TxnOffsetCommitRequestTopic", fields=[
            F("name", "string"),
            F("partitions", "[]TxnOffsetCommitRequestPartition", fields=[
                F("partition_index", "int32"),
                F("committed_offset", "int64"),
                F("committed_leader_epoch", "int32", "2+", default=-1),
                F("committed_metadata", "string", nullable_versions="0+"),
            ]),
        ]),
    ],
    response_fields=[
        F("throttle_time_ms", "int32"),
        F("topics", "[]TxnOffsetCommitResponseTopic", fields=[
            F("name", "string"),
            F("partitions", "[]TxnOffsetCommitResponsePartition", fields=[
                F("partition_index", "int32"),
                F("error_code", "int16"),
            ]),
        ]),
    ],
    valid_versions="0-5",
    flexible_from=3,
)

# -- SaslAuthenticate (key 36) --------------------------------------------------------

SASL_AUTHENTICATE = Api(
    36,
    "SaslAuthenticate",
    request_fields=[F("auth_bytes", "bytes")],
    response_fields=[
        F("error_code", "int16"),
        F("error_message", "string", nullable_versions="0+"),
        F("auth_bytes", "bytes"),
        F("session_lifetime_ms", "int64", "1+", default=0),
    ],
    valid_versions="0-2",
    flexible_from=2,
)

# fmt: on

ALL_APIS: tuple[Api, ...] = (
    PRODUCE,
    LIST_OFFSETS,
    METADATA,
    FIND_COORDINATOR,
    SASL_HANDSHAKE,
    API_VERSIONS,
    CREATE_TOPICS,
    DELETE_TOPICS,
    INIT_PRODUCER_ID,
    ADD_PARTITIONS_TO_TXN,
    ADD_OFFSETS_TO_TXN,
    END_TXN,
    TXN_OFFSET_COMMIT,
    SASL_AUTHENTICATE,
)

APIS_BY_KEY: dict[int, Api] = {api.key: api for api in ALL_APIS}
