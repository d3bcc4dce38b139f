//! DeleteRecords (key 21): moves each partition's log start offset forward (offset -1 =
//! the high watermark) and deletes the segments wholly below it.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{ApiKey, DeleteRecordsRequest, DeleteRecordsResponse};
use ringmq_engine::{LogOpError, Offset};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DeleteRecordsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut topics = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let denied = !ctx
            .broker
            .authorize(&req.session, op::DELETE, resource::TOPIC, &name);
        let ops = t.partitions.iter().map(|p| {
            let (topic, index, offset) = (name.clone(), p.partition_index, p.offset);
            ctx.with_partition(&name, index, move |part| {
                if denied {
                    return Err(ResponseError::TopicAuthorizationFailed);
                }
                // As Kafka: a negative offset other than -1 is out of range; one below the
                // log start is not (the log start stays where it is).
                if offset < -1 {
                    return Err(ResponseError::OffsetOutOfRange);
                }
                let mut log = part.log.log_mut();
                let target = if offset == -1 { log.high_watermark() } else { Offset(offset) };
                match log.delete_records_before(target) {
                    Ok(start) => Ok(start.0),
                    Err(LogOpError::BeyondHighWatermark { .. }) => Err(ResponseError::OffsetOutOfRange),
                    Err(e) => {
                        tracing::warn!(%topic, partition = index, error = %e, "delete records failed");
                        Err(ResponseError::KafkaStorageError)
                    }
                }
            })
        });
        let results = join_all(ops).await;
        let partitions = t
            .partitions
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let base =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                let r = if denied {
                    Err(ResponseError::TopicAuthorizationFailed)
                } else {
                    r
                };
                match r {
                    Ok(low) => base.with_low_watermark(low),
                    Err(code) => base.with_error_code(code.code()).with_low_watermark(-1),
                }
            })
            .collect();
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let resp = DeleteRecordsResponse::default().with_topics(topics);
    protocol::single(ApiKey::DeleteRecords, v, req.correlation_id(), &resp)
}
