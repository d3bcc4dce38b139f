//! CreatePartitions (key 37): grows a topic to `count` partitions (never shrinks, SPEC T3),
//! placing the new ones on the least-loaded shards.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::Request;
use crate::metadata::MetadataRecord;
use crate::protocol::{self, CloseConnection, Response};
use crate::shard::ShardCtx;
use crate::topics::{self, PARTITIONS_PER_TOPIC_MAX, TopicError};

pub async fn handle(ctx: &Rc<ShardCtx>, req: Request) -> Result<Response, CloseConnection> {
    let v = req.version();
    let body: CreatePartitionsRequest = protocol::decode_body(req.body.clone(), v)?;
    let mut results = Vec::new();
    for t in body.topics {
        let name = t.name.0.as_str().to_owned();
        let outcome = grow(
            ctx,
            &name,
            t.count,
            t.assignments.is_some(),
            body.validate_only,
        )
        .await;
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name);
        if let Err(e) = outcome {
            r = r
                .with_error_code(e.code.code())
                .with_error_message(Some(StrBytes::from_string(e.message)));
        }
        results.push(r);
    }
    let resp = CreatePartitionsResponse::default().with_results(results);
    protocol::single(ApiKey::CreatePartitions, v, req.correlation_id(), &resp)
}

async fn grow(
    ctx: &Rc<ShardCtx>,
    name: &str,
    count: i32,
    manual: bool,
    validate_only: bool,
) -> Result<(), TopicError> {
    let err = |code, message: String| TopicError { code, message };
    if manual {
        return Err(err(
            ResponseError::InvalidRequest,
            "manual replica assignment is not supported yet".into(),
        ));
    }
    let (meta, current) = {
        let mut store = topics::lock_store(ctx)?;
        let Some(meta) = store.image().topic(name).cloned() else {
            return Err(err(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            ));
        };
        let current = meta.placement.len() as i32;
        if count <= current {
            return Err(err(
                ResponseError::InvalidPartitions,
                format!("topic has {current} partitions; the count can only grow"),
            ));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(err(
                ResponseError::InvalidPartitions,
                format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"),
            ));
        }
        topics::check_partition_limit(ctx, store.image(), count - current)?;
        if validate_only {
            return Ok(());
        }
        let placement = store
            .image()
            .place((count - current) as usize, ctx.broker.shard_count());
        let image = store
            .commit(&[MetadataRecord::PartitionsAdded {
                name: name.to_owned(),
                placement,
            }])
            .map_err(|e| err(ResponseError::KafkaStorageError, format!("metadata: {e}")))?;
        let meta = image
            .topic(name)
            .cloned()
            .ok_or_else(|| err(ResponseError::UnknownServerError, "topic vanished".into()))?;
        (meta, current as usize)
    };
    topics::open_partitions(ctx, &meta, current).await
}
