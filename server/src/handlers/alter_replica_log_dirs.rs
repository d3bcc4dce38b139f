//! AlterReplicaLogDirs (key 34, SPEC O7): moves replicas of this broker to another of its
//! log directories (`log.dirs`), what `kafka-reassign-partitions` does for a plan with
//! `log_dirs`. Each move starts on the partition's owner shard and the answer comes at
//! once; DescribeLogDirs shows the future replica until it is swapped in
//! (`crate::storage::log_dirs`). A directory not in `log.dirs` is LOG_DIR_NOT_FOUND; a partition
//! this broker holds no replica of is REPLICA_NOT_AVAILABLE (Kafka's tool retries it, as
//! for a replica a reassignment has yet to create).

use std::path::PathBuf;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, ApiKey};

use super::Request;
use crate::protocol::{self, CloseConnection, Response};
use crate::runtime::shard::ShardCtx;

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: AlterReplicaLogDirsRequest = protocol::decode_body(req.body.clone(), v)?;
    let roots = ctx.broker.config.log_dirs();
    let mut results = Vec::new();
    for dir in &body.dirs {
        let root = roots
            .iter()
            .find(|r| r.as_path() == std::path::Path::new(dir.path.as_str()))
            .cloned();
        for t in &dir.topics {
            let outcomes = join_all(
                t.partitions
                    .iter()
                    .map(|&p| start_move(ctx, t.name.0.to_string(), p, root.clone())),
            )
            .await;
            results.push(
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(t.name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .zip(outcomes)
                            .map(|(&p, code)| {
                                AlterReplicaLogDirPartitionResult::default()
                                    .with_partition_index(p)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    ),
            );
        }
    }
    let resp = AlterReplicaLogDirsResponse::default().with_results(results);
    protocol::single(ApiKey::AlterReplicaLogDirs, v, req.correlation_id(), &resp)
}

/// Starts moving `topic`-`partition` to `root` on its owner shard.
async fn start_move(
    ctx: &Rc<ShardCtx>,
    topic: String,
    partition: i32,
    root: Option<PathBuf>,
) -> ResponseError {
    let Some(root) = root else {
        return ResponseError::LogDirNotFound;
    };
    let image = ctx.broker.image();
    let Some(owner) = image
        .topic(&topic)
        .and_then(|m| m.owner_shard(partition, ctx.shard_count()))
    else {
        return ResponseError::UnknownTopicOrPartition;
    };
    ctx.on_shard(owner, move |c| async move {
        let Some(part) = c.partition(&topic, partition) else {
            return ResponseError::ReplicaNotAvailable;
        };
        let here = part.log.log().dir().parent().map(|d| d.to_path_buf());
        if here.as_ref() == Some(&root) || part.moving_to.borrow().as_ref() == Some(&root) {
            return ResponseError::Unknown(0);
        }
        if part.moving_to.borrow().is_some() {
            // Kafka replaces the target of a move in progress; one move at a time here.
            return ResponseError::ReplicaNotAvailable;
        }
        *part.moving_to.borrow_mut() = Some(root.clone());
        compio::runtime::spawn(crate::storage::log_dirs::move_replica(part, root)).detach();
        ResponseError::Unknown(0)
    })
    .await
    .unwrap_or(ResponseError::UnknownServerError)
}
