//! Request handlers, one module per Kafka API, registered in [`HANDLERS`]: the single
//! table both dispatch and ApiVersions read, so ApiVersions advertises exactly what is
//! implemented. Version ranges are Apache Kafka 4.x's, cut to what kafka-protocol's
//! codec for the request and the response both handle ([`versions`]).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Message, VersionRange};

use crate::protocol::{CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod add_raft_voter;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_replica_log_dirs;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod authorized_ops;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leader_hint;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod remove_raft_voter;
pub mod sasl_authenticate;
pub mod sasl_handshake;
pub mod sync_group;
pub mod topics;
pub mod txn_offset_commit;
pub mod unregister_broker;
pub mod update_raft_voter;
pub mod write_txn_markers;

/// The table of served APIs: key, request type, response type. Each API is advertised
/// with the versions that Apache Kafka 4.x defines (`ApiKey::valid_versions`) *and* that
/// kafka-protocol can decode (request) and encode (response): the intersection, so a
/// client is never offered a version whose frames the broker cannot read.
macro_rules! served_apis {
    ($($key:ident => $req:ident, $resp:ident;)*) => {
        /// APIs ringmqd serves, in ApiVersions order.
        pub const HANDLERS: &[ApiKey] = &[$(ApiKey::$key),*];

        /// The versions of `api_key` this broker serves, or `None` if it serves none.
        pub fn versions(api_key: ApiKey) -> Option<VersionRange> {
            use kafka_protocol::messages::*;
            match api_key {
                $(ApiKey::$key => Some(intersect(&[
                    ApiKey::$key.valid_versions(),
                    <$req as Message>::VERSIONS,
                    <$resp as Message>::VERSIONS,
                ])),)*
                _ => None,
            }
        }

        /// Decodes a request body of `api_key` at `version` (the fuzz targets' entry).
        fn decode_only(api_key: ApiKey, version: i16, body: Bytes) -> Result<(), CloseConnection> {
            use kafka_protocol::messages::*;
            match api_key {
                $(ApiKey::$key => crate::protocol::decode_body::<$req>(body, version).map(|_| ()),)*
                other => Err(CloseConnection::Unsupported(format!("{other:?}"))),
            }
        }

        /// Encodes and decodes a default request and response of `api_key` at `version`
        /// (the codec check behind every advertised version; used by the tests).
        #[cfg(test)]
        pub fn codec_roundtrip(api_key: ApiKey, version: i16) -> Result<(), String> {
            use kafka_protocol::messages::*;
            use kafka_protocol::protocol::{Decodable, Encodable};
            fn both<T: Encodable + Decodable + Default>(version: i16) -> Result<(), String> {
                let mut buf = bytes::BytesMut::new();
                T::default().encode(&mut buf, version).map_err(|e| format!("encode: {e}"))?;
                let mut frozen = buf.freeze();
                T::decode(&mut frozen, version).map_err(|e| format!("decode: {e}"))?;
                Ok(())
            }
            match api_key {
                $(ApiKey::$key => {
                    both::<$req>(version).map_err(|e| format!("request {e}"))?;
                    both::<$resp>(version).map_err(|e| format!("response {e}"))
                })*
                other => Err(format!("{other:?} is not served")),
            }
        }
    };
}

served_apis! {
    Produce => ProduceRequest, ProduceResponse;
    Fetch => FetchRequest, FetchResponse;
    OffsetForLeaderEpoch => OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse;
    ListOffsets => ListOffsetsRequest, ListOffsetsResponse;
    Metadata => MetadataRequest, MetadataResponse;
    ApiVersions => ApiVersionsRequest, ApiVersionsResponse;
    CreateTopics => CreateTopicsRequest, CreateTopicsResponse;
    DeleteTopics => DeleteTopicsRequest, DeleteTopicsResponse;
    DeleteRecords => DeleteRecordsRequest, DeleteRecordsResponse;
    InitProducerId => InitProducerIdRequest, InitProducerIdResponse;
    DescribeConfigs => DescribeConfigsRequest, DescribeConfigsResponse;
    CreatePartitions => CreatePartitionsRequest, CreatePartitionsResponse;
    DescribeCluster => DescribeClusterRequest, DescribeClusterResponse;
    DescribeQuorum => DescribeQuorumRequest, DescribeQuorumResponse;
    AlterConfigs => AlterConfigsRequest, AlterConfigsResponse;
    IncrementalAlterConfigs => IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse;
    FindCoordinator => FindCoordinatorRequest, FindCoordinatorResponse;
    OffsetCommit => OffsetCommitRequest, OffsetCommitResponse;
    OffsetFetch => OffsetFetchRequest, OffsetFetchResponse;
    JoinGroup => JoinGroupRequest, JoinGroupResponse;
    SyncGroup => SyncGroupRequest, SyncGroupResponse;
    Heartbeat => HeartbeatRequest, HeartbeatResponse;
    LeaveGroup => LeaveGroupRequest, LeaveGroupResponse;
    ListGroups => ListGroupsRequest, ListGroupsResponse;
    DescribeGroups => DescribeGroupsRequest, DescribeGroupsResponse;
    DeleteGroups => DeleteGroupsRequest, DeleteGroupsResponse;
    OffsetDelete => OffsetDeleteRequest, OffsetDeleteResponse;
    DescribeLogDirs => DescribeLogDirsRequest, DescribeLogDirsResponse;
    DescribeTopicPartitions => DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse;
    ElectLeaders => ElectLeadersRequest, ElectLeadersResponse;
    AlterPartitionReassignments => AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse;
    ListPartitionReassignments => ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse;
    UnregisterBroker => UnregisterBrokerRequest, UnregisterBrokerResponse;
    AlterReplicaLogDirs => AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse;
    SaslHandshake => SaslHandshakeRequest, SaslHandshakeResponse;
    SaslAuthenticate => SaslAuthenticateRequest, SaslAuthenticateResponse;
    DescribeUserScramCredentials => DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse;
    AlterUserScramCredentials => AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse;
    DescribeAcls => DescribeAclsRequest, DescribeAclsResponse;
    CreateAcls => CreateAclsRequest, CreateAclsResponse;
    DeleteAcls => DeleteAclsRequest, DeleteAclsResponse;
    AddRaftVoter => AddRaftVoterRequest, AddRaftVoterResponse;
    RemoveRaftVoter => RemoveRaftVoterRequest, RemoveRaftVoterResponse;
    UpdateRaftVoter => UpdateRaftVoterRequest, UpdateRaftVoterResponse;
    AddPartitionsToTxn => AddPartitionsToTxnRequest, AddPartitionsToTxnResponse;
    AddOffsetsToTxn => AddOffsetsToTxnRequest, AddOffsetsToTxnResponse;
    EndTxn => EndTxnRequest, EndTxnResponse;
    WriteTxnMarkers => WriteTxnMarkersRequest, WriteTxnMarkersResponse;
    TxnOffsetCommit => TxnOffsetCommitRequest, TxnOffsetCommitResponse;
    DescribeProducers => DescribeProducersRequest, DescribeProducersResponse;
    DescribeTransactions => DescribeTransactionsRequest, DescribeTransactionsResponse;
    ListTransactions => ListTransactionsRequest, ListTransactionsResponse;
}

/// The served APIs a Kafka controller also serves on its listener (Apache Kafka 4.x's
/// controller answers ApiVersions with these among its own): what a client that came in
/// through `--bootstrap-controller` (KIP-919) may send. The rest (Produce, Fetch, groups,
/// Metadata, ...) is the brokers' business; Kafka closes the connection for them.
pub const CONTROLLER_APIS: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::CreatePartitions,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::ElectLeaders,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeCluster,
    ApiKey::UnregisterBroker,
    ApiKey::AddRaftVoter,
    ApiKey::RemoveRaftVoter,
    ApiKey::UpdateRaftVoter,
];

/// The versions of `api_key` served on a listener (the controller listener serves
/// [`CONTROLLER_APIS`] only).
pub fn versions_on(api_key: ApiKey, controller: bool) -> Option<VersionRange> {
    if controller && !CONTROLLER_APIS.contains(&api_key) {
        return None;
    }
    versions(api_key)
}

fn intersect(ranges: &[VersionRange]) -> VersionRange {
    ranges.iter().fold(
        VersionRange {
            min: i16::MIN,
            max: i16::MAX,
        },
        |acc, r| VersionRange {
            min: acc.min.max(r.min),
            max: acc.max.min(r.max),
        },
    )
}

/// What the broker does with a request before touching any state: refuses versions it
/// does not serve, decodes the body and, for Produce, validates each partition's record
/// batches as the append path would (framing, CRC, client batch rules, the topic record
/// policies: keys for compacted topics, recompression) and decodes their records. The
/// fuzz targets (fuzz/) drive this; any panic here is a bug.
pub fn decode_and_validate(
    api_key: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<(), CloseConnection> {
    if !supported(api_key, version) {
        return Err(CloseConnection::Unsupported(format!(
            "{api_key:?} v{version}"
        )));
    }
    if api_key != ApiKey::Produce {
        return decode_only(api_key, version, body);
    }
    let req: kafka_protocol::messages::ProduceRequest =
        crate::protocol::decode_body(body, version)?;
    let policy = crate::storage::record_policy::RecordPolicy {
        require_keys: true,
        codec: Some(ringmq_engine::Compression::Gzip),
    };
    for topic in &req.topic_data {
        for p in &topic.partition_data {
            let Some(records) = &p.records else { continue };
            for item in ringmq_engine::batch::BatchIter::new(records) {
                let Ok((_, header, batch)) = item else { break };
                if ringmq_engine::batch::validate_batch(batch).is_ok() {
                    let _ = ringmq_engine::batch::validate_client_batch(&header);
                    let _ = ringmq_engine::batch::record_timestamps(&header, batch);
                }
            }
            let _ = policy.apply(records.clone(), "fuzz", p.index);
        }
    }
    Ok(())
}

/// APIs authorized against the cluster resource as a whole (Kafka's KafkaApis), and the
/// operation each needs. The others check their topics and groups in their handler;
/// DescribeCluster answers everyone (only its cluster operations depend on the ACLs).
fn cluster_operation(api_key: ApiKey) -> Option<i8> {
    use crate::security::acl::op;
    match api_key {
        ApiKey::DescribeLogDirs
        | ApiKey::DescribeQuorum
        | ApiKey::ListPartitionReassignments
        | ApiKey::DescribeUserScramCredentials => Some(op::DESCRIBE),
        ApiKey::ElectLeaders
        | ApiKey::AlterPartitionReassignments
        | ApiKey::UnregisterBroker
        | ApiKey::AddRaftVoter
        | ApiKey::RemoveRaftVoter
        | ApiKey::AlterReplicaLogDirs => Some(op::ALTER),
        // Sent by controllers to each other, as Kafka authorizes it.
        ApiKey::UpdateRaftVoter => Some(op::CLUSTER_ACTION),
        _ => None,
    }
}

/// The CLUSTER_AUTHORIZATION_FAILED answer of a [`cluster_operation`] API.
fn cluster_denied(api_key: ApiKey, req: &Request) -> Result<Response, CloseConnection> {
    use kafka_protocol::messages::*;
    let code = kafka_protocol::ResponseError::ClusterAuthorizationFailed.code();
    let (v, id) = (req.version(), req.correlation_id());
    macro_rules! denied {
        ($resp:ty) => {
            crate::protocol::single(api_key, v, id, &<$resp>::default().with_error_code(code))
        };
    }
    match api_key {
        ApiKey::DescribeLogDirs => denied!(DescribeLogDirsResponse),
        ApiKey::DescribeQuorum => denied!(DescribeQuorumResponse),
        ApiKey::ListPartitionReassignments => denied!(ListPartitionReassignmentsResponse),
        ApiKey::DescribeUserScramCredentials => denied!(DescribeUserScramCredentialsResponse),
        ApiKey::ElectLeaders => denied!(ElectLeadersResponse),
        ApiKey::AlterPartitionReassignments => denied!(AlterPartitionReassignmentsResponse),
        ApiKey::UnregisterBroker => denied!(UnregisterBrokerResponse),
        ApiKey::AddRaftVoter => denied!(AddRaftVoterResponse),
        ApiKey::RemoveRaftVoter => denied!(RemoveRaftVoterResponse),
        ApiKey::UpdateRaftVoter => denied!(UpdateRaftVoterResponse),
        // No top-level error: nothing is moved, nothing is answered per partition.
        _ => crate::protocol::single(api_key, v, id, &AlterReplicaLogDirsResponse::default()),
    }
}

pub fn supported(api_key: ApiKey, version: i16) -> bool {
    versions(api_key).is_some_and(|r| version >= r.min && version <= r.max)
}

/// Everything a handler gets.
pub struct Request {
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address, `/ip` as Kafka shows it.
    pub client_host: String,
    /// The connection: its listener and principal.
    pub session: Rc<crate::security::Session>,
}

impl Request {
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

pub async fn dispatch(
    ctx: &Rc<ShardCtx>,
    header: RequestHeader,
    api_key: ApiKey,
    body: Bytes,
    session: Rc<crate::security::Session>,
) -> Result<Option<Response>, CloseConnection> {
    let req = Request {
        header,
        body,
        client_host: format!("/{}", session.peer.ip()),
        session,
    };
    if api_key == ApiKey::ApiVersions {
        return api_versions::handle(&req).map(Some);
    }
    let controller = req.session.listener.controller;
    if !versions_on(api_key, controller).is_some_and(|r| (r.min..=r.max).contains(&req.version())) {
        // Kafka closes the connection for APIs and versions it did not advertise.
        let on = if controller {
            " on the controller listener"
        } else {
            ""
        };
        return Err(CloseConnection::Unsupported(format!(
            "{api_key:?} v{}{on}",
            req.version()
        )));
    }
    let _span =
        tracing::debug_span!("request", api = ?api_key, correlation_id = req.correlation_id())
            .entered();
    if let Some(operation) = cluster_operation(api_key)
        && !ctx.broker.authorize_cluster(&req.session, operation)
    {
        return cluster_denied(api_key, &req).map(Some);
    }
    match api_key {
        ApiKey::Produce => produce::handle(ctx, req).await,
        ApiKey::Fetch => fetch::handle(ctx, req).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(ctx, req).await.map(Some),
        ApiKey::OffsetForLeaderEpoch => offset_for_leader_epoch::handle(ctx, req).await.map(Some),
        ApiKey::Metadata => metadata::handle(ctx, req).await.map(Some),
        ApiKey::CreateTopics => create_topics::handle(ctx, req).await.map(Some),
        ApiKey::DeleteTopics => delete_topics::handle(ctx, req).await.map(Some),
        ApiKey::InitProducerId => init_producer_id::handle(ctx, req).await.map(Some),
        ApiKey::DeleteRecords => delete_records::handle(ctx, req).await.map(Some),
        ApiKey::DescribeConfigs => describe_configs::handle(ctx, req).map(Some),
        ApiKey::CreatePartitions => create_partitions::handle(ctx, req).await.map(Some),
        ApiKey::DescribeCluster => describe_cluster::handle(ctx, req).map(Some),
        ApiKey::DescribeQuorum => describe_quorum::handle(ctx, req).await.map(Some),
        ApiKey::AlterConfigs => alter_configs::handle(ctx, req).await.map(Some),
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, req).await.map(Some),
        ApiKey::OffsetCommit => offset_commit::handle(ctx, req).await.map(Some),
        ApiKey::OffsetFetch => offset_fetch::handle(ctx, req).await.map(Some),
        ApiKey::JoinGroup => join_group::handle(ctx, req).await.map(Some),
        ApiKey::SyncGroup => sync_group::handle(ctx, req).await.map(Some),
        ApiKey::Heartbeat => heartbeat::handle(ctx, req).await.map(Some),
        ApiKey::LeaveGroup => leave_group::handle(ctx, req).await.map(Some),
        ApiKey::ListGroups => list_groups::handle(ctx, req).await.map(Some),
        ApiKey::DescribeGroups => list_groups::describe(ctx, req).await.map(Some),
        ApiKey::DeleteGroups => list_groups::delete(ctx, req).await.map(Some),
        ApiKey::OffsetDelete => offset_delete::handle(ctx, req).await.map(Some),
        ApiKey::DescribeLogDirs => describe_log_dirs::handle(ctx, req).await.map(Some),
        ApiKey::DescribeTopicPartitions => describe_topic_partitions::handle(ctx, req).map(Some),
        ApiKey::ElectLeaders => elect_leaders::handle(ctx, req).await.map(Some),
        ApiKey::UnregisterBroker => unregister_broker::handle(ctx, req).await.map(Some),
        ApiKey::AddRaftVoter => add_raft_voter::handle(ctx, req).await.map(Some),
        ApiKey::RemoveRaftVoter => remove_raft_voter::handle(ctx, req).await.map(Some),
        ApiKey::UpdateRaftVoter => update_raft_voter::handle(ctx, req).await.map(Some),
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(ctx, req).await.map(Some),
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(ctx, req).await.map(Some),
        ApiKey::EndTxn => end_txn::handle(ctx, req).await.map(Some),
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(ctx, req).await.map(Some),
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(ctx, req).await.map(Some),
        ApiKey::DescribeProducers => describe_producers::handle(ctx, req).await.map(Some),
        ApiKey::DescribeTransactions => describe_transactions::handle(ctx, req).await.map(Some),
        ApiKey::ListTransactions => list_transactions::handle(ctx, req).await.map(Some),
        ApiKey::AlterReplicaLogDirs => alter_replica_log_dirs::handle(ctx, req).await.map(Some),
        ApiKey::SaslHandshake => sasl_handshake::handle(req).map(Some),
        ApiKey::DescribeAcls => describe_acls::handle(ctx, req).map(Some),
        ApiKey::CreateAcls => create_acls::handle(ctx, req).await.map(Some),
        ApiKey::DeleteAcls => delete_acls::handle(ctx, req).await.map(Some),
        ApiKey::SaslAuthenticate => sasl_authenticate::handle(ctx, req).await.map(Some),
        ApiKey::DescribeUserScramCredentials => {
            describe_user_scram_credentials::handle(ctx, req).map(Some)
        }
        ApiKey::AlterUserScramCredentials => alter_user_scram_credentials::handle(ctx, req)
            .await
            .map(Some),
        ApiKey::AlterPartitionReassignments => alter_partition_reassignments::handle(ctx, req)
            .await
            .map(Some),
        ApiKey::ListPartitionReassignments => {
            list_partition_reassignments::handle(ctx, req).map(Some)
        }
        ApiKey::IncrementalAlterConfigs => {
            alter_configs::handle_incremental(ctx, req).await.map(Some)
        }
        other => Err(CloseConnection::Unsupported(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (API, version) ApiVersions advertises can be decoded and answered.
    #[test]
    fn every_advertised_version_decodes_and_encodes() {
        for &key in HANDLERS {
            let r = versions(key).expect("served");
            assert!(r.min <= r.max, "{key:?}: empty range");
            for v in r.min..=r.max {
                codec_roundtrip(key, v).unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
            }
        }
    }

    /// Versions Kafka defines but the codec cannot decode are not advertised.
    #[test]
    fn versions_the_codec_lacks_are_not_advertised() {
        assert_eq!(versions(ApiKey::OffsetCommit).map(|r| r.max), Some(9));
        assert_eq!(versions(ApiKey::OffsetFetch).map(|r| r.max), Some(9));
        assert!(!supported(ApiKey::OffsetCommit, 10));
        assert_eq!(versions(ApiKey::SaslHandshake).map(|r| r.max), Some(1));
        assert_eq!(versions(ApiKey::SaslAuthenticate).map(|r| r.max), Some(2));
        assert_eq!(versions(ApiKey::CreateDelegationToken), None);
    }

    /// The controller listener serves the controller's APIs, each at the versions the
    /// brokers' listeners serve it, and none of the data path's.
    #[test]
    fn the_controller_listener_serves_controller_apis_only() {
        for &key in CONTROLLER_APIS {
            assert!(HANDLERS.contains(&key), "{key:?} is not served at all");
            assert_eq!(versions_on(key, true), versions(key));
        }
        for key in [
            ApiKey::Produce,
            ApiKey::Fetch,
            ApiKey::Metadata,
            ApiKey::JoinGroup,
        ] {
            assert_eq!(versions_on(key, true), None, "{key:?}");
            assert!(versions_on(key, false).is_some(), "{key:?}");
        }
    }
}
