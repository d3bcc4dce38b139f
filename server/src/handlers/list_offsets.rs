//! ListOffsets (key 2): earliest (-2), latest (-1: the high watermark, which is also the
//! last stable offset without transactions), max timestamp (-3), or the first offset
//! whose record timestamp is at or after a time.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ListOffsetsRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    let mut topics = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let meta = image.topic(&name);
        let lookups = t.partitions.iter().map(|p| {
            let owner = meta.and_then(|m| {
                usize::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| m.placement.get(i).copied())
            });
            let (name, index, ts) = (name.clone(), p.partition_index, p.timestamp);
            async move {
                let Some(owner) = owner else {
                    return Err(ResponseError::UnknownTopicOrPartition);
                };
                ctx.on_shard(owner, move |c| async move { lookup(&c, &name, index, ts) })
                    .await
                    .unwrap_or(Err(ResponseError::UnknownServerError))
            }
        });
        let results = join_all(lookups).await;
        let partitions = t
            .partitions
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let base =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                match r {
                    // leader_epoch exists from v4.
                    Ok((offset, timestamp)) => {
                        let base = base.with_offset(offset).with_timestamp(timestamp);
                        if v >= 4 {
                            base.with_leader_epoch(0)
                        } else {
                            base
                        }
                    }
                    Err(code) => base
                        .with_error_code(code.code())
                        .with_offset(-1)
                        .with_timestamp(-1),
                }
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    let resp = ListOffsetsResponse::default().with_topics(topics);
    protocol::single(ApiKey::ListOffsets, v, req.correlation_id(), &resp)
}

fn lookup(ctx: &ShardCtx, topic: &str, index: i32, ts: i64) -> Result<(i64, i64), ResponseError> {
    let part = ctx
        .partition(topic, index)
        .ok_or(ResponseError::NotLeaderOrFollower)?;
    let log = part.log.log();
    match ts {
        EARLIEST => Ok((log.log_start_offset().0, -1)),
        LATEST => Ok((log.high_watermark().0, -1)),
        MAX_TIMESTAMP => Ok(log
            .max_timestamp_and_offset()
            .map_or((-1, -1), |(o, t)| (o.0, t))),
        ts if ts < 0 => Err(ResponseError::InvalidRequest),
        ts => match log.offset_for_timestamp(ts) {
            Ok(Some((o, t))) if o < log.high_watermark() => Ok((o.0, t)),
            Ok(_) => Ok((-1, -1)),
            Err(_) => Err(ResponseError::KafkaStorageError),
        },
    }
}
