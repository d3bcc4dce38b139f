//! WriteTxnMarkers (key 27): a transaction coordinator on another broker ends a
//! transaction in partitions this broker leads — each gets the commit or abort marker
//! (and in `__consumer_offsets` the transaction's offsets are decided with it). Brokers
//! only: CLUSTER_ACTION on the cluster.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use ringmq_engine::control::ControlType;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::op;
use crate::transactions::markers::{self, Marker};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: WriteTxnMarkersRequest = protocol::decode_body(req.body.clone(), v)?;
    let allowed = ctx
        .broker
        .authorize_cluster(&req.session, op::CLUSTER_ACTION);
    let mut results = Vec::new();
    for m in &body.markers {
        let marker = Marker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            kind: if m.transaction_result {
                ControlType::Commit
            } else {
                ControlType::Abort
            },
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::new();
        for t in &m.topics {
            let name = t.name.0.as_str();
            let writes = t.partition_indexes.iter().map(|p| async move {
                let r = if allowed {
                    markers::apply(ctx, name, *p, marker).await
                } else {
                    Err(ResponseError::ClusterAuthorizationFailed)
                };
                WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(*p)
                    .with_error_code(r.err().map_or(0, |e| e.code()))
            });
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(join_all(writes).await),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    let resp = WriteTxnMarkersResponse::default().with_markers(results);
    protocol::single(ApiKey::WriteTxnMarkers, v, req.correlation_id(), &resp)
}
