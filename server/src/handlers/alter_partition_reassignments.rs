//! AlterPartitionReassignments (key 45): start or cancel moving partitions to new
//! replica sets (KIP-455), decided by the active controller — the API behind
//! `kafka-reassign-partitions --execute/--cancel`. The move itself is replication: the
//! added replicas fetch from the leader like any follower, and the controller switches
//! the replica set once they are in sync.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::cluster::controller::{Answer, ControllerRequest};
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AlterPartitionReassignmentsRequest = protocol::decode_body(req.body.clone(), v)?;
    let partitions: Vec<(String, i32, Option<Vec<i32>>)> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()),
                )
            })
        })
        .collect();
    // allow_replication_factor_change exists from v1 (v0 always allows it).
    let allow = v < 1 || body.allow_replication_factor_change;
    let request = ControllerRequest::Reassign {
        partitions: partitions.clone(),
        allow_replication_factor_change: allow,
    };
    let results = match ctx.broker.cluster.submit(request).await {
        Ok((_, Answer::PartitionResults(r))) => r,
        Ok(_) => Vec::new(),
        Err(e) => partitions
            .into_iter()
            .map(|(t, p, _)| (t, p, e.code.code(), Some(e.message.clone())))
            .collect(),
    };
    let mut by_topic: BTreeMap<String, Vec<ReassignablePartitionResponse>> = BTreeMap::new();
    for (topic, partition, code, message) in results {
        by_topic.entry(topic).or_default().push(
            ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(code)
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    let mut resp = AlterPartitionReassignmentsResponse::default().with_responses(
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    if v >= 1 {
        resp = resp.with_allow_replication_factor_change(allow);
    }
    protocol::single(
        ApiKey::AlterPartitionReassignments,
        v,
        req.correlation_id(),
        &resp,
    )
}
