//! DescribeLogDirs (key 35, SPEC O7): each of the broker's log directories (`log.dirs`)
//! with the size of every partition in it, and (v4) the filesystem's total and usable
//! bytes, so `kafka-log-dirs` and the admin client's describeLogDirs show disk usage per
//! broker, directory, topic and partition. A replica moving to another directory
//! (AlterReplicaLogDirs) is also listed there as the future replica (`is_future_key`),
//! with what has been copied so far.

use std::collections::BTreeMap;
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
use crate::runtime::shard::ShardCtx;

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
    // (log dir, topic) -> partitions described there; a moving replica also appears in
    // its target directory as the future replica.
    let roots = ctx.broker.config.log_dirs();
    let mut by_dir: BTreeMap<(usize, String), Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (name, partitions) in wanted {
        let found = join_all(partitions.iter().map(|&p| {
            ctx.with_replica(&name, p, |part| {
                let log = part.log.log();
                // Kafka's offset lag of a replica: how far its log end is behind the high
                // watermark it knows (a follower catching up).
                let lag = (log.high_watermark().0 - log.log_end_offset().0).max(0);
                let dir = log.dir().parent().map(|d| d.to_path_buf());
                let future = part.moving_to.borrow().clone().map(|root| {
                    let size = crate::storage::log_dirs::dir_size(
                        &crate::storage::log_dirs::future_dir(&root, part),
                    );
                    (root, size, (log.log_end_offset().0).max(0))
                });
                Ok((dir, log.size_bytes(), lag, future))
            })
        }))
        .await;
        for (&p, found) in partitions.iter().zip(found) {
            // A partition not served here (unknown, not open) is left out, as Kafka does.
            let Ok((dir, bytes, lag, future)) = found else {
                continue;
            };
            let entry = |size: u64, lag: i64, is_future: bool| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                    .with_offset_lag(lag)
                    .with_is_future_key(is_future)
            };
            if let Some(i) = dir.and_then(|d| roots.iter().position(|r| *r == d)) {
                by_dir
                    .entry((i, name.clone()))
                    .or_default()
                    .push(entry(bytes, lag, false));
            }
            if let Some((root, size, end)) = future
                && let Some(i) = roots.iter().position(|r| *r == root)
            {
                // The future replica's lag is unknown until it is swapped in: its whole log.
                by_dir
                    .entry((i, name.clone()))
                    .or_default()
                    .push(entry(size, end, true));
            }
        }
    }
    let mut results = Vec::new();
    for (i, dir) in roots.iter().enumerate() {
        let topics = by_dir
            .iter()
            .filter(|((d, _), _)| *d == i)
            .map(|((_, name), parts)| {
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_partitions(parts.clone())
            })
            .collect();
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
        results.push(result);
    }
    let resp = DescribeLogDirsResponse::default().with_results(results);
    protocol::single(ApiKey::DescribeLogDirs, v, req.correlation_id(), &resp)
}
