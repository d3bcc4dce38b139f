//! ListOffsets (key 2): earliest (-2), latest (-1: the high watermark, or for
//! read_committed the last stable offset), max timestamp (-3), or the first offset whose
//! record timestamp is at or after a time (below that same bound).

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;
use crate::security::acl::{op, resource};
use crate::storage::partition::Partition;

pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;
pub const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: ListOffsetsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut topics = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let denied = !ctx
            .broker
            .authorize(&req.session, op::DESCRIBE, resource::TOPIC, &name);
        let read_committed = body.isolation_level == 1;
        let lookups = t.partitions.iter().map(|p| {
            let (index, ts) = (p.partition_index, p.timestamp);
            ctx.with_partition(&name, index, move |part| lookup(part, ts, read_committed))
        });
        let results = join_all(lookups).await;
        let partitions = t
            .partitions
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let base =
                    ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                let r = if denied {
                    Err(ResponseError::TopicAuthorizationFailed)
                } else {
                    r
                };
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

fn lookup(part: &Partition, ts: i64, read_committed: bool) -> Result<(i64, i64), ResponseError> {
    let end = if read_committed {
        part.last_stable_offset()
    } else {
        part.log.log().high_watermark()
    };
    let log = part.log.log();
    match ts {
        EARLIEST => Ok((log.log_start_offset().0, -1)),
        LATEST => Ok((end.0, -1)),
        MAX_TIMESTAMP => match log.max_timestamp_and_offset() {
            Ok(found) => Ok(found.map_or((-1, -1), |(o, t)| (o.0, t))),
            Err(_) => Err(ResponseError::KafkaStorageError),
        },
        ts if ts < 0 => Err(ResponseError::InvalidRequest),
        ts => match log.offset_for_timestamp(ts) {
            Ok(Some((o, t))) if o < end => Ok((o.0, t)),
            Ok(_) => Ok((-1, -1)),
            Err(_) => Err(ResponseError::KafkaStorageError),
        },
    }
}
