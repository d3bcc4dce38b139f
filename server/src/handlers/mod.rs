//! Request handlers, one module per Kafka API, registered in [`HANDLERS`]: the single
//! table both dispatch and ApiVersions read, so ApiVersions advertises exactly what is
//! implemented. Version ranges are Apache Kafka 4.x's (from kafka-protocol's schemas).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};

use crate::protocol::{CloseConnection, Response};
use crate::shard::ShardCtx;

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

/// APIs ringmqd serves; each uses kafka-protocol's full version range for the key.
pub const HANDLERS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::CreatePartitions,
    ApiKey::DescribeCluster,
    ApiKey::AlterConfigs,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::FindCoordinator,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::ListGroups,
    ApiKey::DescribeGroups,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
];

pub fn supported(api_key: ApiKey, version: i16) -> bool {
    let r = api_key.valid_versions();
    HANDLERS.contains(&api_key) && version >= r.min && version <= r.max
}

/// Everything a handler gets.
pub struct Request {
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address, `/ip` as Kafka shows it.
    pub client_host: String,
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
    client_host: String,
) -> Result<Option<Response>, CloseConnection> {
    let req = Request {
        header,
        body,
        client_host,
    };
    if api_key == ApiKey::ApiVersions {
        return api_versions::handle(&req).map(Some);
    }
    if !supported(api_key, req.version()) {
        // Kafka closes the connection for versions it did not advertise.
        return Err(CloseConnection::Unsupported(format!(
            "{api_key:?} v{}",
            req.version()
        )));
    }
    let _span =
        tracing::debug_span!("request", api = ?api_key, correlation_id = req.correlation_id())
            .entered();
    match api_key {
        ApiKey::Produce => produce::handle(ctx, req).await,
        ApiKey::Fetch => fetch::handle(ctx, req).await.map(Some),
        ApiKey::ListOffsets => list_offsets::handle(ctx, req).await.map(Some),
        ApiKey::Metadata => metadata::handle(ctx, req).await.map(Some),
        ApiKey::CreateTopics => create_topics::handle(ctx, req).await.map(Some),
        ApiKey::DeleteTopics => delete_topics::handle(ctx, req).await.map(Some),
        ApiKey::InitProducerId => init_producer_id::handle(ctx, req).map(Some),
        ApiKey::DeleteRecords => delete_records::handle(ctx, req).await.map(Some),
        ApiKey::DescribeConfigs => describe_configs::handle(ctx, req).map(Some),
        ApiKey::CreatePartitions => create_partitions::handle(ctx, req).await.map(Some),
        ApiKey::DescribeCluster => describe_cluster::handle(ctx, req).map(Some),
        ApiKey::AlterConfigs => alter_configs::handle(ctx, req).await.map(Some),
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, req).map(Some),
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
        ApiKey::IncrementalAlterConfigs => {
            alter_configs::handle_incremental(ctx, req).await.map(Some)
        }
        other => Err(CloseConnection::Unsupported(format!("{other:?}"))),
    }
}
