//! DescribeLogDirs (key 35, SPEC O7): the broker's log directory with the size of each
//! partition in it, and (v4) the filesystem's total and usable bytes, so `kafka-log-dirs`
//! and the admin client's describeLogDirs show disk usage per broker, topic and
//! partition. One log directory per broker (`log.dirs` with one path); no future replicas.

use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: DescribeLogDirsRequest = protocol::decode_body(req.body.clone(), v)?;
    let image = ctx.broker.image();
    // (topic, partitions) asked for: all of them when `topics` is null.
    let wanted: Vec<(String, Vec<i32>)> = match &body.topics {
        None => image
            .topics
            .values()
            .map(|t| (t.name.clone(), (0..t.placement.len() as i32).collect()))
            .collect(),
        Some(list) => list
            .iter()
            .filter(|t| image.topic(t.topic.as_str()).is_some())
            .map(|t| (t.topic.0.as_str().to_owned(), t.partitions.clone()))
            .collect(),
    };
    let mut topics = Vec::new();
    for (name, partitions) in wanted {
        let sizes = join_all(partitions.iter().map(|&p| {
            ctx.with_replica(&name, p, |part| {
                let log = part.log.log();
                // Kafka's offset lag of a replica: how far its log end is behind
                // the high watermark it knows (a follower catching up).
                let lag = (log.high_watermark().0 - log.log_end_offset().0).max(0);
                Ok((log.size_bytes(), lag))
            })
        }))
        .await;
        let described: Vec<DescribeLogDirsPartition> = partitions
            .iter()
            .zip(sizes)
            // A partition not served here (unknown, not open) is left out, as Kafka does.
            .filter_map(|(&p, size)| {
                let (bytes, lag) = size.ok()?;
                Some(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(p)
                        .with_partition_size(i64::try_from(bytes).unwrap_or(i64::MAX))
                        .with_offset_lag(lag)
                        .with_is_future_key(false),
                )
            })
            .collect();
        if !described.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name)))
                    .with_partitions(described),
            );
        }
    }
    let dir = &ctx.broker.config.data_dir;
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics);
    // total_bytes and usable_bytes exist from v4 (-1 when unknown).
    if v >= 4 {
        let (total, usable) = ringmq_engine::capacity::disk_usage(dir).map_or((-1, -1), |u| {
            (
                i64::try_from(u.total_bytes).unwrap_or(i64::MAX),
                i64::try_from(u.available_bytes).unwrap_or(i64::MAX),
            )
        });
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    let resp = DescribeLogDirsResponse::default().with_results(vec![result]);
    protocol::single(ApiKey::DescribeLogDirs, v, req.correlation_id(), &resp)
}
