//! DescribeProducers (key 61): the producers a partition's leader knows — id, epoch,
//! last sequence, last batch's timestamp and the first offset of each one's open
//! transaction (the coordinator epoch of its last marker is not kept: -1)
//! (`kafka-transactions describe-producers`, `find-hanging`). READ on the topic.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeProducersRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut topics = Vec::new();
    for t in &body.topics {
        let name = t.name.0.as_str().to_owned();
        let allowed = ctx
            .broker
            .authorize(&req.session, op::READ, resource::TOPIC, &name);
        let mut partitions = Vec::new();
        for p in &t.partition_indexes {
            let found = if allowed {
                ctx.with_partition(&name, *p, |part| Ok(part.producer_states()))
                    .await
            } else {
                Err(ResponseError::TopicAuthorizationFailed)
            };
            let r = PartitionResponse::default().with_partition_index(*p);
            partitions.push(match found {
                Ok(producers) => r.with_active_producers(
                    producers
                        .into_iter()
                        .map(|(pid, epoch, last_seq, last_timestamp, open)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(pid))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_seq)
                                .with_last_timestamp(last_timestamp)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(open.map_or(-1, |o| o.0))
                        })
                        .collect(),
                ),
                Err(e) => r
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_static_str(""))),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions),
        );
    }
    let resp = DescribeProducersResponse::default().with_topics(topics);
    protocol::single(ApiKey::DescribeProducers, v, req.correlation_id(), &resp)
}
