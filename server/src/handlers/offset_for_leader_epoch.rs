//! OffsetForLeaderEpoch (key 23): for each partition and leader epoch, the largest epoch
//! this leader knows at or below it and where that epoch ends (the next epoch's start,
//! or the log end for the latest). Followers truncate to it after a leader change (no
//! divergent history survives); clients use it to detect log truncation (KIP-320).
//! `current_leader_epoch` fences callers with a stale or a future view of the leader.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{ApiKey, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

/// Kafka's UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET.
const UNDEFINED: i64 = -1;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: OffsetForLeaderEpochRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut topics = Vec::new();
    for t in body.topics {
        let name = t.topic.0.as_str().to_owned();
        // Followers need CLUSTER_ACTION, clients DESCRIBE on the topic.
        let denied = if body.replica_id.0 >= 0 {
            (!ctx
                .broker
                .authorize_cluster(&req.session, op::CLUSTER_ACTION))
            .then_some(ResponseError::ClusterAuthorizationFailed)
        } else {
            (!ctx
                .broker
                .authorize(&req.session, op::DESCRIBE, resource::TOPIC, &name))
            .then_some(ResponseError::TopicAuthorizationFailed)
        };
        let mut partitions = Vec::new();
        for p in t.partitions {
            let (current, wanted) = (p.current_leader_epoch, p.leader_epoch);
            let answer = ctx
                .with_partition(&name, p.partition, move |part| {
                    let epoch = part.leader_epoch();
                    if current >= 0 && current < epoch {
                        return Err(ResponseError::FencedLeaderEpoch);
                    }
                    if current > epoch {
                        return Err(ResponseError::UnknownLeaderEpoch);
                    }
                    let log = part.log.log();
                    Ok(log
                        .leader_epochs()
                        .end_offset_for(wanted, log.log_end_offset())
                        .map(|(e, end)| (e, end.0)))
                })
                .await;
            let answer = match denied {
                Some(code) => Err(code),
                None => answer,
            };
            let entry = EpochEndOffset::default().with_partition(p.partition);
            partitions.push(match answer {
                Ok(Some((epoch, end))) => entry.with_leader_epoch(epoch).with_end_offset(end),
                Ok(None) => entry
                    .with_leader_epoch(UNDEFINED as i32)
                    .with_end_offset(UNDEFINED),
                Err(e) => entry
                    .with_error_code(e.code())
                    .with_leader_epoch(UNDEFINED as i32)
                    .with_end_offset(UNDEFINED),
            });
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
    protocol::single(ApiKey::OffsetForLeaderEpoch, v, req.correlation_id(), &resp)
}
