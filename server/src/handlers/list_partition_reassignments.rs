//! ListPartitionReassignments (key 46): the reassignments in progress — each partition's
//! replicas and those being added and removed — from this broker's committed metadata
//! image (`kafka-reassign-partitions --verify`, `--list`).

use std::rc::Rc;

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::metadata::PartitionState;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

fn ongoing(p: i32, s: &PartitionState) -> OngoingPartitionReassignment {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect();
    OngoingPartitionReassignment::default()
        .with_partition_index(p)
        .with_replicas(ids(&s.replicas))
        .with_adding_replicas(ids(&s.adding))
        .with_removing_replicas(ids(&s.removing))
}

pub fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ListPartitionReassignmentsRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    let mut topics = Vec::new();
    match &body.topics {
        // Null: every reassignment in progress.
        None => {
            for t in image.topics.values() {
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.reassigning())
                    .map(|(p, s)| ongoing(p as i32, s))
                    .collect();
                if !partitions.is_empty() {
                    topics.push((t.name.clone(), partitions));
                }
            }
        }
        Some(asked) => {
            for t in asked {
                let Some(meta) = image.topic(t.name.0.as_str()) else {
                    continue;
                };
                let partitions: Vec<_> = t
                    .partition_indexes
                    .iter()
                    .filter_map(|p| meta.state(*p).map(|s| (*p, s)))
                    .filter(|(_, s)| s.reassigning())
                    .map(|(p, s)| ongoing(p, s))
                    .collect();
                if !partitions.is_empty() {
                    topics.push((meta.name.clone(), partitions));
                }
            }
        }
    }
    let resp = ListPartitionReassignmentsResponse::default().with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    );
    protocol::single(
        ApiKey::ListPartitionReassignments,
        v,
        req.correlation_id(),
        &resp,
    )
}
